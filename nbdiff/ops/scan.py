"""Loops: ``nd.scan`` and the ``Scan`` op, a step function traced once into an inner graph and run ``length`` times.

``scan(step, init, xs)`` follows ``jax.lax.scan``: ``step(carry, x) -> (new_carry, y)`` is called once on symbolic
placeholders; what it builds becomes the op's *body*, a ``Graph`` whose inputs are the carries, one slice of each
sequence, and the loop invariants the step read from the enclosing graph (found by the trace, so ``W`` in
``tanh(W @ h + x)`` needs no declaring). The op's outputs are the final carries and the per-step outputs stacked
along a new axis 0. Its ``pullback`` is a reverse scan of the body's own ``Lop`` (the per-step carries are stored
by a forward scan that also stacks them); its ``pushforward`` a forward scan of the body's ``Rop``. Both are
``Scan`` nodes, so every order of derivative works the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from nbdiff.errors import DTypeError, GraphError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable, constant
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.traversal import paused_gc, toposort
from nbdiff.graph.types import TensorType, numpy_dtype


@dataclass(frozen=True, eq=False)
class Scan(Op):
    """Run ``body`` once per step. Inputs: ``[length]`` (an int64 scalar, when ``explicit_length``), the initial
    carries, the sequences (iterated along axis 0), the invariants. Outputs: the final carries, the stacked ys.

    ``body.inputs`` are ``n_carry`` carries, ``n_seq`` per-step slices, then the invariants; ``body.outputs`` are
    ``n_carry`` new carries (each of its carry's type), then the per-step outputs. ``reverse`` walks the sequences
    from their end (the ys are still stacked in sequence order), as a pullback needs.
    """

    body: Graph
    n_carry: int
    n_seq: int
    reverse: bool = False
    explicit_length: bool = False

    @property
    def nout(self) -> int:  # type: ignore[override]
        return len(self.body.outputs)

    @property
    def n_ys(self) -> int:
        return len(self.body.outputs) - self.n_carry

    def describe(self) -> str:
        direction = ", reverse" if self.reverse else ""
        return (
            f"scan{{carries={self.n_carry}, sequences={self.n_seq}, ys={self.n_ys}, "
            f"body={len(self.body.nodes)} nodes{direction}}}"
        )

    def __getstate__(self) -> dict:
        """The op without its caches (the body's plan): they are rebuilt where it lands."""
        return {name: value for name, value in self.__dict__.items() if not name.startswith("_")}

    # -- inputs ------------------------------------------------------------------------------------------------
    def split(self, inputs: Sequence[Any]) -> tuple[Any, list, list, list]:
        """``(length or None, carries, sequences, invariants)`` of a node's inputs (variables or arrays)."""
        start = 1 if self.explicit_length else 0
        length = inputs[0] if self.explicit_length else None
        carries = list(inputs[start : start + self.n_carry])
        seqs = list(inputs[start + self.n_carry : start + self.n_carry + self.n_seq])
        invariants = list(inputs[start + self.n_carry + self.n_seq :])
        return length, carries, seqs, invariants

    def infer(self, *inputs: Variable) -> list[TensorType]:
        length, carries, seqs, invariants = self.split(inputs)
        if self.explicit_length and (length.ndim != 0 or length.dtype != "int64"):
            raise self.error(DTypeError, f"the length must be an int64 scalar, got {length.type}", inputs)
        if not self.explicit_length and not seqs:
            raise self.error(GraphError, "a scan without sequences needs a length", inputs)
        expected = [v.type for v in self.body.inputs]
        given = carries + [_slice_type(s) for s in seqs] + invariants
        for position, (want, var) in enumerate(zip(expected, given)):
            got = var if isinstance(var, TensorType) else var.type
            if got.dtype != want.dtype or not _compatible(got.shape, want.shape):
                raise self.error(ShapeError, f"input {position} is {got}, the body expects {want}", inputs)
        steps = _static_length(length, seqs)
        return [v.type for v in carries] + [
            TensorType(y.dtype, (steps, *y.type.shape)) for y in self.body.outputs[self.n_carry :]
        ]

    # -- evaluation --------------------------------------------------------------------------------------------
    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """Each final carry has its initial carry's dims (``loop`` checks every step); the ys lead with the number
        of steps (the sequences' first dim, which ``run_length`` checks they share), then the body's static dims."""
        from nbdiff.graph.dims import fresh_dim

        _, carries, seqs, _ = self.split(list(input_dims))
        steps = seqs[0][0] if seqs else fresh_dim()
        ys = [
            (steps, *(d if d is not None else fresh_dim() for d in y.type.shape))
            for y in self.body.outputs[self.n_carry :]
        ]
        return [*carries, *ys]

    def plan(self) -> Any:
        """The interpreter plan of the body, rewritten by the default pipeline except fusion; built once per op.

        Fusion only pays compiled: the interpreter runs a fused kernel member by member, which costs twice the
        per-step time of the plain ops on a small body (23 against 12 us for the Euler step on 10 elements, equal
        on 10,000). A compiled target rewrites the body with the whole pipeline (``backends/cpu_scan.py``).
        """
        try:
            return self.__dict__["_plan"]
        except KeyError:
            from nbdiff.config import options
            from nbdiff.rewrite.pipeline import DEFAULT_ORDER, run_pipeline, select_passes
            from nbdiff.runtime.interpreter import Plan

            graph, _ = run_pipeline(self.body, select_passes([p for p in DEFAULT_ORDER if p != "fusion"]))
            plan = Plan(graph, check_types=options().debug)
            self.__dict__["_plan"] = plan
            return plan

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.loop(self.plan().run, arrays)

    def loop(self, run: Callable[[list], Sequence[np.ndarray]], arrays: Sequence[np.ndarray]) -> tuple:
        """The scan on ``arrays`` (the node's inputs), calling ``run(body_inputs) -> body_outputs`` once per step."""
        length, carries, seqs, invariants = self.split(arrays)
        steps = run_length(length, seqs)
        ys: list[np.ndarray] = [_empty_stack(steps, y.type) for y in self.body.outputs[self.n_carry :]]
        order = range(steps - 1, -1, -1) if self.reverse else range(steps)
        for i in order:
            outs = run([*carries, *(s[i] for s in seqs), *invariants])
            new = outs[: self.n_carry]
            for k, (old, value) in enumerate(zip(carries, new)):
                if value.shape != np.shape(old):
                    raise ValueError(f"step {i}: carry {k} changed shape from {np.shape(old)} to {value.shape}")
            carries = new
            for k, (stack, value) in enumerate(zip(ys, outs[self.n_carry :])):
                if stack.shape[1:] != value.shape:
                    if i != order[0]:
                        raise ValueError(f"step {i}: output {k} has shape {value.shape}, before {stack.shape[1:]}")
                    ys[k] = stack = np.empty((steps, *value.shape), stack.dtype)
                stack[i] = value
        return (*[np.asarray(c) for c in carries], *ys)

    # -- vmap --------------------------------------------------------------------------------------------------
    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """A scan of batched carries, sequences or invariants is one scan whose body is the vmapped body: every carry
        batched, the batched sequences iterated on their axis 1 (moved to 0), the ys' batch axis moved to the front.
        A batched length (a different number of steps per batch element) is declined."""
        from nbdiff.ops.batching import BatchSize
        from nbdiff.ops.shape import transpose
        from nbdiff.vmap import batch_graph, ruler_of

        length, carries, seqs, invariants = self.split(inputs)
        length_b, carries_b, seqs_b, invariants_b = self.split(batched)
        if length_b:
            raise NotImplementedError("a scan with a batched length has no batching rule")
        swap = lambda v: transpose(v, (1, 0, *range(2, v.ndim)))  # noqa: E731
        outer_carries = [c if b else size.materialise(c) for c, b in zip(carries, carries_b)]
        outer_seqs = [swap(s) if b else s for s, b in zip(seqs, seqs_b)]
        inner_batched = [True] * self.n_carry + list(seqs_b) + list(invariants_b)
        placeholders: dict[Variable, Variable] = {}
        body_inputs = []
        for old, is_batched in zip(self.body.inputs, inner_batched):
            new = Variable(TensorType(old.dtype, (size.static, *old.type.shape)), name=old.name) if is_batched else old
            if is_batched:
                placeholders[old] = new
            body_inputs.append(new)
        with paused_gc():
            outs = batch_graph(list(self.body.outputs), placeholders, BatchSize(ruler_of(body_inputs[0])))
        op = Scan(Graph(body_inputs, outs), self.n_carry, self.n_seq, self.reverse, self.explicit_length)
        prefix = [length] if self.explicit_length else []
        new = op.make_node(*prefix, *outer_carries, *outer_seqs, *invariants).outputs
        return [*new[: self.n_carry], *(swap(y) for y in new[self.n_carry :])]

    # -- derivatives -------------------------------------------------------------------------------------------
    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list:
        from nbdiff.ops.scan_grad import scan_pullback

        return scan_pullback(node, output_grads)

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list:  # type: ignore[override]
        from nbdiff.ops.scan_grad import scan_pushforward

        return scan_pushforward(node, tangents)


def _slice_type(seq: Variable) -> TensorType:
    return TensorType(seq.dtype, seq.type.shape[1:])


def _compatible(a: tuple, b: tuple) -> bool:
    """Same rank, and no two known dims that differ."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _static_length(length: Variable | None, seqs: Sequence[Variable]) -> int | None:
    """The number of steps when the graph already knows it (a constant length, or a sequence's static length)."""
    if isinstance(length, Constant):
        return int(length.data)
    known = [s.type.shape[0] for s in seqs if s.type.shape[0] is not None]
    return known[0] if known else None


def run_length(length: np.ndarray | None, seqs: Sequence[np.ndarray]) -> int:
    """The number of steps at run time; every sequence must be that long (ValueError otherwise)."""
    steps = int(length) if length is not None else seqs[0].shape[0]
    if steps < 0:
        raise ValueError(f"the length must be non-negative, got {steps}")
    for k, seq in enumerate(seqs):
        if seq.shape[0] != steps:
            raise ValueError(f"sequence {k} has length {seq.shape[0]}, the scan runs {steps} steps")
    return steps


def _empty_stack(steps: int, y: TensorType) -> np.ndarray:
    """The array the per-step outputs are written into (its shape fixed by the first step when not static)."""
    shape = tuple(0 if d is None else d for d in y.shape)
    return np.empty((steps, *shape), numpy_dtype(y.dtype))


# -- construction ----------------------------------------------------------------------------------------------


def scan(
    step: Callable[..., Any],
    init: Any,
    xs: Any = None,
    length: int | Variable | None = None,
    *,
    reverse: bool = False,
) -> tuple[Any, Any]:
    """Loop ``step(carry, x) -> (new_carry, y)`` over ``xs`` (along axis 0); return ``(final_carry, ys)``.

    ``init`` is one variable or a tuple/list of them (the carry keeps that structure and each carry's dtype and
    shape); ``xs`` is None, one variable or a tuple/list (each step sees one slice of each); ``y`` may be a variable,
    a tuple/list, or None, and ``ys`` stacks it along a new axis 0. ``length`` is a Python int or an integer scalar
    variable (a run-time length), needed only without ``xs``. ``step`` is traced once into the op's body; the
    variables it reads from the enclosing graph become the loop's invariants (and are differentiated).
    """
    carries, carry_is_single = _structure(init, "init")
    sequences, seq_is_single = _structure(xs, "xs") if xs is not None else ([], False)
    length_var = _length_input(length, sequences)
    carry_phs = [Variable(c.type, name=f"carry{k}") for k, c in enumerate(carries)]
    seq_phs = [Variable(_slice_type(s), name=f"x{k}") for k, s in enumerate(sequences)]
    carry_arg = carry_phs[0] if carry_is_single else tuple(carry_phs)
    seq_arg = None if xs is None else seq_phs[0] if seq_is_single else tuple(seq_phs)
    with paused_gc():
        result = step(carry_arg, seq_arg)
        new_carries, ys, ys_structure = _step_result(result, carries, carry_is_single)
        _check_carries(carries, new_carries)
        body, invariants = _trace_body(carry_phs + seq_phs, new_carries + ys)
        op = Scan(body, len(carries), len(sequences), reverse, length_var is not None)
        prefix = [length_var] if length_var is not None else []
        node = op.make_node(*prefix, *carries, *sequences, *invariants)
    final = node.outputs[: len(carries)]
    stacked = list(node.outputs[len(carries) :])
    final_out = final[0] if carry_is_single else tuple(final)
    if ys_structure == "none":
        return final_out, None
    return final_out, stacked[0] if ys_structure == "single" else tuple(stacked)


def _structure(value: Any, what: str) -> tuple[list[Variable], bool]:
    """Variables of ``value`` (one, or a tuple/list) and whether it was a single one."""
    single = not isinstance(value, (tuple, list))
    items = [value] if single else list(value)
    if not items:
        raise node_error(GraphError, "scan", f"{what} is empty; give at least one variable")
    variables = [as_variable(v) for v in items]
    if what == "xs":
        for k, seq in enumerate(variables):
            if seq.ndim == 0:
                raise node_error(
                    ShapeError, "scan", f"sequence {k} is a scalar; sequences are iterated on axis 0", [seq]
                )
    return variables, single


def _length_input(length: int | Variable | None, sequences: list[Variable]) -> Variable | None:
    """The explicit length input (None when the sequences give it); static lengths must agree."""
    known = [(k, s.type.shape[0]) for k, s in enumerate(sequences) if s.type.shape[0] is not None]
    for (k1, n1), (k2, n2) in zip(known, known[1:]):
        if n1 != n2:
            raise node_error(
                ShapeError, "scan", f"sequence {k1} has length {n1} but sequence {k2} has length {n2}", sequences
            )
    if length is None:
        if not sequences:
            raise node_error(GraphError, "scan", "without xs, give length= (an int or an integer scalar variable)")
        return None
    if isinstance(length, Variable):
        if length.ndim != 0 or not length.dtype.startswith(("int", "uint")):
            raise node_error(DTypeError, "scan", f"length must be an integer scalar, got {length.type}", [length])
        return length if length.dtype == "int64" else length.astype("int64")
    if isinstance(length, (bool, np.bool_)) or not isinstance(length, (int, np.integer)) or length < 0:
        raise node_error(GraphError, "scan", f"length must be a non-negative int or an integer scalar, got {length!r}")
    if known and known[0][1] != length:
        raise node_error(
            ShapeError, "scan", f"length={length} but sequence {known[0][0]} has length {known[0][1]}", sequences
        )
    return constant(int(length), "int64")


def _step_result(result: Any, carries: list[Variable], single: bool) -> tuple[list[Variable], list[Variable], str]:
    """``(new carries, ys, structure of ys)`` from what ``step`` returned, checked against ``init``'s structure."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise node_error(GraphError, "scan", "step must return a pair (new_carry, y); y may be None")
    new_carry, y = result
    if single:
        if isinstance(new_carry, (tuple, list)):
            raise node_error(
                GraphError, "scan", f"step returned {len(new_carry)} carries, but init is a single variable"
            )
        new_list = [new_carry]
    else:
        if not isinstance(new_carry, (tuple, list)) or len(new_carry) != len(carries):
            got = len(new_carry) if isinstance(new_carry, (tuple, list)) else "a single variable as"
            raise node_error(GraphError, "scan", f"step returned {got} carries, but init has {len(carries)}")
        new_list = list(new_carry)
    new_vars = [as_variable(v, c) for v, c in zip(new_list, carries)]
    if y is None:
        return new_vars, [], "none"
    if isinstance(y, (tuple, list)):
        return new_vars, [as_variable(v) for v in y], "tuple"
    return new_vars, [as_variable(y)], "single"


def _check_carries(carries: list[Variable], new_carries: list[Variable]) -> None:
    """Each new carry keeps its initial dtype and rank, and no known dim changes."""
    for k, (old, new) in enumerate(zip(carries, new_carries)):
        if new.dtype != old.dtype:
            raise node_error(
                DTypeError,
                "scan",
                f"carry {k} changes dtype in one step, from {old.dtype} to {new.dtype}; cast it with .astype",
                [old, new],
            )
        if not _compatible(old.type.shape, new.type.shape):
            raise node_error(
                ShapeError,
                "scan",
                f"carry {k} changes shape in one step, from {old.type.shape} to {new.type.shape}",
                [old, new],
            )


def _trace_body(placeholders: list[Variable], outputs: list[Variable]) -> tuple[Graph, list[Variable]]:
    """The body graph over ``placeholders`` + fresh invariant placeholders, and the outer variables they stand for.

    A variable the step used that does not depend on a placeholder (and is not a constant) is an invariant: the
    body gets its own root input for it (so the body's rewrites never see the enclosing graph), the op an input.
    """
    nodes = toposort(outputs, stop_at=placeholders)
    varying = {id(p) for p in placeholders}
    for node in nodes:
        if any(id(v) in varying for v in node.inputs):
            varying.update(id(o) for o in node.outputs)
    invariants: list[Variable] = []
    mapping: dict[int, Variable] = {}

    def inner(var: Variable) -> Variable:
        if id(var) in varying or isinstance(var, Constant):
            return mapping.get(id(var), var)
        if id(var) not in mapping:
            mapping[id(var)] = Variable(var.type, name=var.name or f"invariant{len(invariants)}")
            invariants.append(var)
        return mapping[id(var)]

    from nbdiff.rewrite.engine import rebuild

    for node in nodes:
        if not any(id(o) in varying for o in node.outputs):
            continue
        rebuilt = rebuild(node, [inner(v) for v in node.inputs])
        for old, new in zip(node.outputs, rebuilt.outputs):
            mapping[id(old)] = new
    body_outputs = [inner(v) for v in outputs]
    body_inputs = placeholders + [mapping[id(v)] for v in invariants]
    return Graph(body_inputs, body_outputs), invariants


__all__ = ["scan"]

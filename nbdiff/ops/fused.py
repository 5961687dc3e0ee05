"""``FusedElemwise``: several elementwise nodes sharing one loop (plus the reductions they feed) as one node.

The fusion pass (``nbdiff/rewrite/fusion.py``) replaces a connected group of elementwise nodes by one fused node
holding an inner *scalar program*:

- ``program``: instructions ``(op, args)`` in execution order. An argument is a *reference*: ``r < n_inputs``
  names the fused node's input ``r``; ``r >= n_inputs`` names the result of instruction ``r - n_inputs``.
  Graph inputs and constants are node inputs (kernel arguments), so editing a constant's value does not change
  the kernel's structure.
- ``results``: one reference per output, each optionally reduced by a trailing ``Sum`` (``reductions``).

The node's identity (``identity_key``: hash-consing, and the compile cache's structural hash) is the program's
structure only. Where each member came from (``member_provenance``) and the kernel's printed name are carried
on the op for errors and printers, but excluded from equality.

The interpreter evaluates the program with NumPy, writing results into dead temporaries; code generators walk
the same program (``member_kind`` says how: an elementwise op's ``scalar_code``, a pass-through, or a fill).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from nbdiff.errors import DTypeError, NbdiffError, node_error, run_time_error_class
from nbdiff.graph.basic import Apply, Constant, Op, Variable, apply
from nbdiff.graph.provenance import Derivative, Provenance, differentiating, inherit
from nbdiff.graph.traversal import paused_gc
from nbdiff.graph.types import TensorType, broadcast_array_shapes, is_float
from nbdiff.ops.broadcast import AssertShapeLike, BroadcastLike, FillLike, SumToLike
from nbdiff.ops.elemwise import Elemwise
from nbdiff.ops.reduce import Sum

INFINITY = float("inf")
TYPES_CACHE_SIZE = 4  # input-type signatures whose member types a fused op remembers
# The most dimensions a fused kernel's values may have: NumPy's broadcasting helpers (np.broadcast_shapes, which the
# interpreter and the kernel layouts use) stop at 32 even in NumPy 2, where arrays and ufuncs reach 64. Wider
# values are never fused: their ops run one by one in the interpreter.
MAX_FUSED_NDIM = 32


class Instruction(NamedTuple):
    """One member of a fused kernel: ``op`` applied to the values named by ``args`` (references)."""

    op: Op
    args: tuple[int, ...]


def member_kind(op: Op) -> str | None:
    """How a kernel computes ``op`` per element: "elemwise" (its ``scalar_code``), "pass" (the value of its first
    argument: a broadcast, an un-broadcast proven to be a no-op, a shape assertion), "fill" (the constant
    ``op.value``); None when ``op`` cannot be a member of a fused loop."""
    if isinstance(op, Elemwise):
        return "elemwise"
    if isinstance(op, (BroadcastLike, SumToLike, AssertShapeLike)):
        return "pass"
    if isinstance(op, FillLike):
        return "fill"
    return None


def _placeholder(type_: TensorType) -> Variable:
    """A bare variable of ``type_`` for replaying members' type inference (no provenance walk: it is thrown away)."""
    var = Variable.__new__(Variable)
    var.type, var.owner, var.index, var.name, var._provenance = type_, None, 0, None, None
    return var


@dataclass(frozen=True, eq=False)
class FusedElemwise(Op):
    """A fused elementwise kernel: an inner scalar program over the node's inputs, with optional trailing sums.

    ``input_kinds`` is ``(dtype, ndim)`` per input: with the program it fixes every member's dtype, so the
    structure (and ``structural_hash``) is complete without the inputs' values or run-time sizes.
    """

    input_kinds: tuple[tuple[str, int], ...]
    program: tuple[Instruction, ...]
    results: tuple[int, ...]
    reductions: tuple[Sum | None, ...]
    # Not part of the identity: where each member came from (instructions, then the reductions), and the name
    # the pass gave the kernel (its position among the graph's kernels: "k0", "k1", ...).
    member_provenance: tuple[Provenance | None, ...] = field(default=(), compare=False)
    kernel_name: str = field(default="fused", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "program", tuple(Instruction(op, tuple(args)) for op, args in self.program))

    # -- identity ------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return "fused"

    @property
    def nout(self) -> int:  # type: ignore[override]
        return len(self.results)

    def params(self) -> dict[str, Any]:
        """The structure only: provenance and the kernel's name are left out, so they do not affect equality."""
        return {
            "input_kinds": self.input_kinds,
            "program": self.program,
            "results": self.results,
            "reductions": self.reductions,
        }

    def __hash__(self) -> int:  # the structure can be long: hash it once
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = self.__dict__["_hash"] = hash(self.identity_key())
            return value

    def describe(self) -> str:
        """``fused k0{tanh, exp, mul, ..., sum}``: the kernel's name and its members' ops in program order."""
        return f"{self.name} {self.kernel_name}{{{self.summary()}}}"

    def summary(self, keep: int = 6) -> str:
        """The members' op names, the middle elided when there are more than ``keep``: ``tanh, exp, ..., sum``."""
        names = self.member_names()
        if len(names) <= keep:
            return ", ".join(names)
        return ", ".join(names[: keep - 2] + ["..."] + names[-1:])

    def member_names(self) -> list[str]:
        """The members' op names: the instructions in order, then the trailing reductions."""
        names: dict[int, str] = {}  # an op's name is computed once per distinct op object
        result = []
        for op, _ in self.members():
            name = names.get(id(op))
            if name is None:
                name = names[id(op)] = op.name
            result.append(name)
        return result

    def members(self) -> list[tuple[Op, Provenance | None]]:
        """Every member op with its provenance: the instructions in order, then the trailing reductions."""
        try:
            return self.__dict__["_members"]
        except KeyError:
            with paused_gc():
                ops: list[Op] = [instruction.op for instruction in self.program]
                ops += [r for r in self.reductions if r is not None]
                provenance = list(self.member_provenance) + [None] * (len(ops) - len(self.member_provenance))
                members = list(zip(ops, provenance))
            self.__dict__["_members"] = members
            return members

    @property
    def n_inputs(self) -> int:
        return len(self.input_kinds)

    def canonical_text(self) -> str:
        """The kernel's structure as text: inputs' dtypes, each instruction with its references, the outputs."""
        n = self.n_inputs
        dtypes = self.value_dtypes()
        lines = [f"in{i}: {dtype}[{ndim}]" for i, (dtype, ndim) in enumerate(self.input_kinds)]
        for k, instruction in enumerate(self.program):
            args = ", ".join(_ref_text(r, n) for r in instruction.args)
            lines.append(f"t{k} = {instruction.op.describe()}({args}): {dtypes[n + k]}")
        for ref, reduction in zip(self.results, self.reductions):
            lines.append(f"out {_ref_text(ref, n)}" + (f" -> {reduction.describe()}" if reduction else ""))
        return "\n".join(lines)

    def structural_hash(self) -> str:
        """A stable hex digest of the structure (no ids, no constant values): names compiled kernel modules."""
        try:
            return self.__dict__["_structural_hash"]
        except KeyError:
            with paused_gc():
                digest = hashlib.sha1(self.canonical_text().encode()).hexdigest()
            self.__dict__["_structural_hash"] = digest
            return digest

    # -- types ---------------------------------------------------------------------------------------------------
    def infer(self, *inputs: Variable) -> list[TensorType]:
        kinds = tuple((v.dtype, v.ndim) for v in inputs)
        if kinds != self.input_kinds:
            expected = ", ".join(f"{d}[{n}d]" for d, n in self.input_kinds)
            raise self.error(DTypeError, f"kernel {self.kernel_name} expects inputs {expected}", inputs)
        types = self._value_types([v.type for v in inputs])
        outputs = []
        for ref, reduction in zip(self.results, self.reductions):
            out = types[ref]
            if reduction is not None:
                (out,) = reduction.infer(_placeholder(out))
            outputs.append(out)
        return outputs

    def _value_types(self, input_types: Sequence[TensorType]) -> list[TensorType]:
        """The type of every reference (inputs, then each instruction's result), by replaying members' inference.

        Remembered for the last few input types: the verifier re-infers every node after every pass."""
        key = tuple(input_types)
        cache = self.__dict__.setdefault("_types_cache", {})
        if key in cache:
            return cache[key]
        types = list(input_types)
        with paused_gc():
            for instruction in self.program:
                (out,) = instruction.op.infer(*(_placeholder(types[r]) for r in instruction.args))
                types.append(out)
        if len(cache) >= TYPES_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = types
        self.__dict__.setdefault("_value_dtypes", [t.dtype for t in types])  # dtypes depend on input dtypes only
        return types

    def value_dtypes(self) -> list[str]:
        """The dtype of every reference: fixed by ``input_kinds`` (kernel code generators type their loops with it)."""
        if "_value_dtypes" not in self.__dict__:
            self._value_types([TensorType(d, (None,) * n) for d, n in self.input_kinds])
        return self.__dict__["_value_dtypes"]

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple] | None:
        """Members' symbolic shapes replayed in order (elementwise broadcasting), then the reductions'."""
        dims = list(input_dims)
        for instruction in self.program:
            rule = getattr(instruction.op, "symbolic_shape", None)
            if rule is None:
                return None
            dims.append(rule([dims[r] for r in instruction.args])[0])
        return [
            dims[ref] if reduction is None else reduction.symbolic_shape([dims[ref]])[0]
            for ref, reduction in zip(self.results, self.reductions)
        ]

    # -- evaluation ----------------------------------------------------------------------------------------------
    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run the program with NumPy, reusing dead temporaries as ``out=`` buffers, then the trailing sums."""
        schedule = self._schedule()
        values: list[Any] = list(arrays) + [None] * len(self.program)
        owned = [False] * len(values)  # arrays this call allocated (never the caller's inputs or views)
        pool: list[np.ndarray] = []  # dead owned buffers, free for reuse
        n = self.n_inputs
        for k, step in enumerate(schedule.steps):
            ref = n + k
            args = [values[r] for r in step.args]
            for dead in step.dying:  # released first: the step may write into its own last-used input
                if owned[dead]:
                    pool.append(values[dead])
            try:
                result, fresh = self._evaluate(step, args, pool)
            except NbdiffError:
                raise
            except Exception as exc:
                raise self._member_error(k, args, exc) from exc
            values[ref] = result
            owned[ref] = fresh
            for dead in step.dying:
                values[dead] = None
            del args
        outputs = []
        member = len(self.program)  # the position of the next reduction in ``members()``
        for ref, reduction in zip(self.results, self.reductions):
            value = values[ref]
            if reduction is not None:
                try:
                    (value,) = reduction.perform(value)
                except Exception as exc:
                    raise self._member_error(member, [value], exc) from exc
                member += 1
            outputs.append(value)
        return tuple(outputs)

    def rounding_scales(self, *arrays: np.ndarray) -> list[float]:
        """Each output's rounding-error scale for the agreement check: the largest magnitude any value in its
        dependency cone takes (an output that cancels, ``s - s * sum(s)``, carries the rounding of its terms, not
        its own tiny size); for a trailing sum, the sum of those magnitudes over its terms."""
        schedule = self._schedule()
        values: list[Any] = list(arrays) + [None] * len(self.program)
        with np.errstate(all="ignore"):
            magnitudes: list[Any] = [np.abs(a) if a.dtype.kind in "fc" else None for a in values[: self.n_inputs]]
            magnitudes += [None] * len(self.program)
            for k, step in enumerate(schedule.steps):
                ref = self.n_inputs + k
                values[ref], _ = self._evaluate(step, [values[r] for r in step.args], [])
                cone = np.abs(values[ref]) if values[ref].dtype.kind in "fc" else None
                for arg in step.args:
                    if cone is not None and magnitudes[arg] is not None:
                        cone = np.fmax(cone, magnitudes[arg])
                magnitudes[ref] = cone
            scales = []
            for ref, reduction in zip(self.results, self.reductions):
                cone = magnitudes[ref]
                if cone is None:
                    scales.append(0.0)
                    continue
                finite = cone[np.isfinite(cone)]
                total = np.sum(finite, dtype=np.float64) if reduction is not None else finite.max(initial=0)
                scales.append(float(total))
        return scales

    def _evaluate(self, step: _Step, args: list, pool: list[np.ndarray]) -> tuple[np.ndarray, bool]:
        """One instruction: a ufunc into a pooled buffer when one fits, else the member's ``perform``."""
        if step.ufunc is not None:
            if pool:
                shape = args[0].shape
                if any(a.shape != shape for a in args):
                    shape = broadcast_array_shapes(*(a.shape for a in args))
                for position in range(len(pool) - 1, -1, -1):  # the most recently freed first: warm in cache
                    buffer = pool[position]
                    if buffer.shape == shape and buffer.dtype == step.numpy_dtype:
                        del pool[position]
                        return step.ufunc(*args, out=buffer), True
            return np.asarray(step.ufunc(*args)), True  # a new array (a 0-d result becomes a 0-d array)
        (result,) = step.op.perform(*args)
        result = np.asarray(result)
        if step.kind == "pass":
            return result, False  # the argument itself or a view of it: its buffer belongs to the argument
        if result.base is not None or not result.flags.writeable or any(result is a for a in args):
            result = np.array(result)  # a member that returned (a view of) an input: own a copy, never alias
        return result, True

    def _schedule(self) -> _Schedule:
        """Per instruction: how to run it and which references die there (computed once per op)."""
        try:
            return self.__dict__["_schedule_cache"]
        except KeyError:
            with paused_gc():
                schedule = _Schedule.build(self)
            self.__dict__["_schedule_cache"] = schedule
            return schedule

    def _member_error(self, position: int, args: Sequence[object], exc: Exception) -> NbdiffError:
        """An error naming the member op (position in ``members()``), its user line and this kernel."""
        op, provenance = self.members()[position]  # instructions first, then the reductions
        cls = run_time_error_class(op, args, exc)
        detail = f"failed at run time inside fused kernel {self.kernel_name} ({self.summary()}): {exc}"
        return node_error(cls, op.name, detail, [a for a in args if a is not None], provenance)

    # -- derivatives ---------------------------------------------------------------------------------------------
    def inline(self, inputs: Sequence[Variable]) -> tuple[list[Apply], list[Variable]]:
        """The program as ordinary graph nodes on ``inputs`` (each with its member's provenance): the instruction
        nodes in order, and the outputs (after the trailing sums)."""
        values = list(inputs)
        nodes = []
        members = self.members()
        for k, instruction in enumerate(self.program):
            node = _build(instruction.op, [values[r] for r in instruction.args], members[k][1], self.kernel_name)
            nodes.append(node)
            values.append(node.outputs[0])
        outputs = []
        extra = len(self.program)
        for ref, reduction in zip(self.results, self.reductions):
            out = values[ref]
            if reduction is not None:
                out = _build(reduction, [out], members[extra][1], self.kernel_name).outputs[0]
                extra += 1
            outputs.append(out)
        return nodes, outputs

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        """Differentiate the inlined program: a reverse sweep over the members' own pullbacks."""
        nodes, outputs = self.inline(node.inputs)
        grads = _GradSums(self.n_inputs + len(nodes))
        for ref, reduction, out, g in zip(self.results, self.reductions, outputs, output_grads):
            if g is None or not is_float(out.dtype):
                continue
            if reduction is not None:
                (g,) = _member_transform(out.owner, lambda owner, g=g: owner.op.pullback(owner, [g]))
            grads.add(ref, g)
        for k in reversed(range(len(nodes))):
            member = nodes[k]
            g = grads.total(self.n_inputs + k, member.outputs[0])
            if g is None:
                continue
            input_grads = _member_transform(member, lambda m, g=g: m.op.pullback(m, [g]))
            for r, var, grad in zip(self.program[k].args, member.inputs, input_grads):
                if grad is not None and is_float(var.dtype):
                    grads.add(r, grad)
        return [
            None if isinstance(v, Constant) or not is_float(v.dtype) else grads.total(i, v)
            for i, v in enumerate(node.inputs)
        ]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Variable | None]:
        """Push tangents through the inlined program, member by member, then through the trailing sums."""
        from nbdiff.gradient import pushforward_by_transposition

        nodes, outputs = self.inline(node.inputs)
        values: list[Variable | None] = [
            t if t is not None and is_float(v.dtype) else None for v, t in zip(node.inputs, tangents)
        ]
        for k, member in enumerate(nodes):
            args = [values[r] for r in self.program[k].args]
            if all(t is None for t in args):
                values.append(None)
                continue
            push = member.op.pushforward or (lambda m, ts: pushforward_by_transposition(m, ts))
            (out,) = _member_transform(member, lambda m, args=args, push=push: push(m, args), "pushforward")
            values.append(out if out is not None and is_float(member.outputs[0].dtype) else None)
        results: list[Variable | None] = []
        for ref, reduction, out in zip(self.results, self.reductions, outputs):
            tangent = values[ref]
            if tangent is not None and reduction is not None:
                (tangent,) = _member_transform(out.owner, lambda m, t=tangent: m.op.pushforward(m, [t]), "pushforward")
            results.append(tangent)
        return results


def _ref_text(ref: int, n_inputs: int) -> str:
    return f"in{ref}" if ref < n_inputs else f"t{ref - n_inputs}"


def _build(op: Op, inputs: Sequence[Variable], provenance: Provenance | None, kernel: str) -> Apply:
    """``op`` applied to ``inputs`` as an ordinary node, carrying the member's provenance when it is new."""
    if provenance is None:
        return apply(op, inputs, op.infer(*inputs))
    with inherit([provenance], f"inlined from fused kernel {kernel}"):
        return apply(op, inputs, op.infer(*inputs))


def _member_transform(member: Apply, compute, what: str = "pullback") -> list:
    """Run ``compute(member)`` marking what it builds as the ``what`` (pullback) of ``member``, as the walker does."""
    with differentiating(Derivative.of(what, member)):
        return list(compute(member))


class _GradSums:
    """Gradient contributions per reference, summed when read (cast back to the value's float dtype)."""

    def __init__(self, size: int):
        self.parts: list[list[Variable]] = [[] for _ in range(size)]

    def add(self, ref: int, grad: Variable) -> None:
        self.parts[ref].append(grad)

    def total(self, ref: int, like: Variable) -> Variable | None:
        parts = self.parts[ref]
        if not parts:
            return None
        result = parts[0]
        for part in parts[1:]:
            result = result + part
        if result.dtype != like.dtype and is_float(like.dtype):
            result = result.astype(like.dtype)
        return result


class _Step:
    """How the interpreter runs one instruction."""

    __slots__ = ("op", "args", "kind", "ufunc", "dtype", "numpy_dtype", "dying")

    def __init__(self, op: Op, args: tuple[int, ...], dtype: str):
        self.op = op
        self.args = args
        self.kind = member_kind(op)
        self.dtype = dtype
        self.numpy_dtype = np.dtype(dtype)
        numpy_fn = getattr(type(op), "numpy_fn", None)
        plain = type(op).perform is Elemwise.perform  # the op's perform is exactly its ufunc
        self.ufunc = numpy_fn if plain and isinstance(numpy_fn, np.ufunc) and numpy_fn.nout == 1 else None
        self.dying: list[int] = []


@dataclass
class _Schedule:
    """The instructions with liveness: a value's buffer is released after the last use of every reference that
    may alias it (a pass-through member may return its argument or a view of it); outputs are never released."""

    steps: list[_Step]

    @classmethod
    def build(cls, op: FusedElemwise) -> _Schedule:
        n = op.n_inputs
        dtypes = op.value_dtypes()
        steps = [_Step(ins.op, ins.args, dtypes[n + k]) for k, ins in enumerate(op.program)]
        owner = list(range(n + len(steps)))  # the reference whose buffer each reference may share
        for k, step in enumerate(steps):
            if step.kind == "pass":
                owner[n + k] = owner[step.args[0]]
        members: dict[int, list[int]] = {}
        for ref in range(n, len(owner)):
            members.setdefault(owner[ref], []).append(ref)
        last: dict[int, float] = {}
        for k, step in enumerate(steps):
            for r in step.args:
                last[owner[r]] = k
        for ref in op.results:
            last[owner[ref]] = INFINITY
        for ref, position in last.items():
            if ref >= n and position != INFINITY:
                steps[int(position)].dying.extend(members[ref])  # the buffer's owner first, then its aliases
        return cls(steps)

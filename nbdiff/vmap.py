"""Vectorisation: ``vmap`` adds a batch axis to a graph, each op batching by its own ``batch`` rule.

``batch_graph(outputs, {placeholder: batched_value})`` rebuilds the nodes that depend on the placeholders, the
batch axis in front; nodes that do not stay as they are. An op without a rule is unrolled over the batch when the
batch size is static (correct, slower), and refused precisely otherwise. ``nd.vmap`` is the user's entry, as JAX's.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from nbdiff.errors import AxisError, GraphError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Variable, as_variable
from nbdiff.graph.provenance import differentiating, transform
from nbdiff.graph.traversal import paused_gc, toposort
from nbdiff.ops.batching import Batched, BatchSize


def ruler_of(value: Variable) -> Variable:
    """A vector as long as ``value``'s leading axis (its first column), the ruler of a ``BatchSize``."""
    if value.ndim == 1:
        return value
    return value[(slice(None),) + (0,) * (value.ndim - 1)]


def _where(node: Apply) -> str:
    site = node.provenance.site
    return f"{node.op.name} at {site.label}" if site is not None else node.op.name


def _unrolled(node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: BatchSize) -> list[Variable]:
    """The fallback for an op without a rule: apply it to each batch element and stack (needs a static batch)."""
    from nbdiff.ops.shape import stack

    count = size.static
    if count is None:
        raise node_error(
            GraphError,
            node.op.name,
            "has no batching rule (vmap, jacobian or hessian of unknown size); with a batch of static size it "
            "is unrolled instead",
            node.inputs,
            node.provenance,
        )
    per_element = []
    for index in range(count):
        args = [v[index] if b else v for v, b in zip(inputs, batched)]
        per_element.append(node.op.make_node(*args).outputs)
    return [stack([outs[k] for outs in per_element]) for k in range(len(node.outputs))]


def _batch_node(
    node: Apply, inputs: list[Variable], batched: list[bool], size: BatchSize
) -> tuple[list[Variable], list[bool]]:
    """One node's new outputs and which are batched, by the op's rule (or unrolled), checked: a batched output has
    the batch axis in front, an unbatched one its old rank."""
    rule = node.op.batch
    outs = None
    if rule is not None:
        try:
            outs = rule(node, inputs, batched, size)
        except NotImplementedError:
            outs = None  # the rule declines this configuration (e.g. axis=None)
    if outs is None:
        outs = _unrolled(node, inputs, batched, size)
    if isinstance(outs, Batched):
        outs, flags = list(outs.outputs), list(outs.batched)
    else:
        outs, flags = list(outs), [True] * len(outs)
    for old, new, flag in zip(node.outputs, outs, flags):
        if new.ndim != old.ndim + flag or new.dtype != old.dtype:
            raise GraphError(
                f"{node.op.name}: the batching rule gave {new.type} for an output of type {old.type} "
                f"(a bug in the op's batch rule)"
            )
    return outs, flags


def batch_graph(
    outputs: Sequence[Variable], placeholders: Mapping[Variable, Variable], size: BatchSize
) -> list[Variable]:
    """``outputs`` rebuilt with each placeholder replaced by its batched value (batch axis in front).

    Outputs that depend on no placeholder are repeated along the batch axis.
    """
    env: dict[int, Variable] = {id(p): v for p, v in placeholders.items()}  # batched values
    same: dict[int, Variable] = {}  # unbatched values rebuilt on batched ones (x.shape[0] of a batched x)
    with paused_gc():
        for node in toposort(list(outputs)):
            batched = [id(v) in env for v in node.inputs]
            if not any(batched) and not any(id(v) in same for v in node.inputs):
                continue
            inputs = [env.get(id(v), same.get(id(v), v)) for v in node.inputs]
            with transform(f"vmap of {_where(node)}"), differentiating(node.provenance.derivative):
                if any(batched):
                    outs, flags = _batch_node(node, inputs, batched, size)
                else:
                    outs, flags = list(node.op.make_node(*inputs).outputs), [False] * len(node.outputs)
            for old, new, flag in zip(node.outputs, outs, flags):
                (env if flag else same)[id(old)] = new
    return [env[id(out)] if id(out) in env else size.materialise(same.get(id(out), out)) for out in outputs]


def _in_axes_list(in_axes: Any, count: int) -> list[int | None]:
    if isinstance(in_axes, (list, tuple)):
        if len(in_axes) != count:
            raise node_error(
                GraphError, "vmap", f"in_axes has {len(in_axes)} entries for {count} argument(s): {in_axes!r}"
            )
        return list(in_axes)
    return [in_axes] * count


def _move_to_front(arg: Variable, axis: int, position: int) -> Variable:
    from nbdiff.ops.shape import transpose

    if isinstance(axis, bool) or not isinstance(axis, int):
        raise node_error(GraphError, "vmap", f"in_axes[{position}] must be an int or None, got {axis!r}", [arg])
    if not -arg.ndim <= axis < arg.ndim:
        raise node_error(
            AxisError,
            "vmap",
            f"in_axes[{position}] = {axis} is out of range for argument {position} of shape {arg.type.shape}",
            [arg],
        )
    axis %= arg.ndim
    return transpose(arg, (axis, *(a for a in range(arg.ndim) if a != axis)))


def _check_same_size(fronts: list[tuple[int, Variable]]) -> list[tuple[int, Variable]]:
    """The batched arguments, each after the first asserted (statically, or at run time) to share its batch size."""
    first_position, first = fronts[0]
    ruler = ruler_of(first)
    checked = [(first_position, first)]
    for position, value in fronts[1:]:
        a, b = first.type.shape[0], value.type.shape[0]
        if a is not None and b is not None and a != b:
            raise node_error(
                ShapeError,
                "vmap",
                f"argument {position} has batch size {b} but argument {first_position} has {a}",
                [first, value],
            )
        if a is None or b is None:
            what = f"vmap: the batch axis of argument {position} (the batch size of argument {first_position})"
            value = _checked(value, ruler, what)
        checked.append((position, value))
    return checked


def _checked(value: Variable, ruler: Variable, what: str) -> Variable:
    """``value``, made to depend on a run-time check that its leading axis is as long as ``ruler``."""
    from nbdiff.ops.broadcast import assert_shape_like, broadcast_like
    from nbdiff.ops.shape import expand_dims

    sized = assert_shape_like(ruler_of(value), ruler, what)
    lead = sized if value.ndim == 1 else expand_dims(sized, tuple(range(1, value.ndim)))
    return broadcast_like(value, lead.astype(value.dtype) if lead.dtype != value.dtype else lead)


def _substituted(outputs: Sequence[Variable], mapping: Mapping[Variable, Variable]) -> list[Variable]:
    """``outputs`` rebuilt with each key of ``mapping`` replaced by its value (types must match)."""
    from nbdiff.rewrite.engine import rebuild

    env = {id(k): v for k, v in mapping.items()}
    for node in toposort(list(outputs)):
        if any(id(v) in env for v in node.inputs):
            new = rebuild(node, [env.get(id(v), v) for v in node.inputs])
            env.update({id(old): out for old, out in zip(node.outputs, new.outputs)})
    return [env.get(id(out), out) for out in outputs]


def _graph_as_function(graph: Any) -> Callable[..., Any]:
    """A graph (anything with ``inputs`` and ``outputs``, such as an ``nd.function``'s ``graph_as_written``) as a
    function of new variables, each taking the place of one input."""
    inputs, outputs = list(graph.inputs), list(graph.outputs)

    def call(*args: Variable) -> list[Variable]:
        if len(args) != len(inputs):
            raise node_error(GraphError, "vmap", f"the graph takes {len(inputs)} input(s), got {len(args)}")
        for position, (old, new) in enumerate(zip(inputs, args)):
            if old.ndim != new.ndim or old.dtype != new.dtype:
                raise node_error(
                    GraphError, "vmap", f"argument {position}: {new.type} does not fit input {old.label()}", [new]
                )
        return _substituted(outputs, dict(zip(inputs, args)))

    return call


def vmap(fn_or_graph: Any, in_axes: Any = 0, out_axes: int = 0) -> Callable[..., Any]:
    """A function of graph variables (or a graph: an ``nd.function``, or anything with ``inputs`` and
    ``outputs``) mapped over a batch axis of its arguments, as JAX's ``vmap``.

    ``in_axes`` gives, per argument (or one for all), the batch axis or ``None`` for an unbatched argument; every
    output gets the batch axis in front (``out_axes=0``). The batched graph has no loop: each op batches by rule.
    A graph is batched as written (before its rewrites), so a function gives a list of outputs.
    """
    if out_axes != 0:
        raise node_error(GraphError, "vmap", f"only out_axes=0 is supported, got {out_axes!r}")
    graph = getattr(fn_or_graph, "graph_as_written", fn_or_graph)
    fn = _graph_as_function(graph) if hasattr(graph, "inputs") and hasattr(graph, "outputs") else fn_or_graph
    if not callable(fn):
        raise node_error(GraphError, "vmap", f"expected a function of graph variables, got {type(fn).__name__}")

    def batched(*args: Any) -> Any:
        from nbdiff.variables import tensor

        variables = [as_variable(a) for a in args]
        axes = _in_axes_list(in_axes, len(variables))
        fronts = [(k, _move_to_front(v, ax, k)) for k, (v, ax) in enumerate(zip(variables, axes)) if ax is not None]
        if not fronts:
            raise node_error(GraphError, "vmap", "at least one argument needs a batch axis (in_axes all None)")
        fronts = _check_same_size(fronts)
        size = BatchSize(ruler_of(fronts[0][1]))
        call_args = list(variables)
        placeholders: dict[Variable, Variable] = {}
        for position, value in fronts:
            placeholder = tensor(f"vmap_arg{position}", dtype=value.dtype, shape=value.type.shape[1:])
            placeholders[placeholder] = value
            call_args[position] = placeholder
        result = fn(*call_args)
        many = isinstance(result, (list, tuple))
        outs = [as_variable(r) for r in (result if many else [result])]
        with transform("vmap"):
            mapped = batch_graph(outs, placeholders, size)
        return type(result)(mapped) if many else mapped[0]

    return batched

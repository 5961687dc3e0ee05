"""Simplification rules for the redundancy typical of gradient graphs, and the shape-keeping helpers all
simplification rules share.

Gradients are built without knowing run-time shapes, so they are full of steps that are no-ops once shapes are
known symbolically: ``broadcast_like(a, like)`` where ``a`` already has that shape, ``sum_to_like(g, like)`` where
nothing was broadcast, ``expand_dims`` of the seed ``1.0`` broadcast over the cost's input, fills of fills. Each rule
here removes one such step, and only when ``ShapeFacts`` proves the result keeps the replaced output's dtype, static
shape and symbolic shape.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nbdiff.errors import NbdiffError
from nbdiff.graph.basic import Apply, Constant, Variable, apply, constant
from nbdiff.graph.types import is_float
from nbdiff.ops.broadcast import BroadcastLike, FillLike, SumToLike
from nbdiff.ops.elemwise import Elemwise, mul
from nbdiff.ops.reduce import ReducedSize, Sum
from nbdiff.ops.shape import ExpandDims
from nbdiff.rewrite.engine import Rule, rule
from nbdiff.rewrite.shapes import ShapeFacts


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the simplification rules
# ---------------------------------------------------------------------------------------------------------------
def uniform_value(var: Variable) -> float | None:
    """The value every element of ``var`` provably has (uniform constants, fills, and broadcasts of those)."""
    while var.owner is not None and isinstance(var.owner.op, (BroadcastLike, ExpandDims)):
        var = var.owner.inputs[0]
    if var.owner is not None and isinstance(var.owner.op, FillLike):
        try:  # the value as the fill stores it (-1.0 filled as bool is True)
            data = np.full((), var.owner.op.value, dtype=var.dtype)
        except (OverflowError, ValueError):
            return None
    elif isinstance(var, Constant) and var.data.size:
        data = var.data
    else:
        return None
    first = data.flat[0]
    if data.size == 1 or np.all(data == first):
        return float(first) if first == first else None  # NaN is never an identity element
    return None


def same_shape(new: Variable, old: Variable, facts: ShapeFacts) -> bool:
    """True when ``new`` provably has ``old``'s run-time shape and at least its static shape."""
    if new.ndim != old.ndim:
        return False
    if any(o is not None and n != o for n, o in zip(new.type.shape, old.type.shape)):
        return False
    return facts.dims(new) == facts.dims(old)


def can_replace(new: Variable, old: Variable, facts: ShapeFacts) -> bool:
    """True when ``new`` can stand for ``old``: same dtype, same shape (static and symbolic)."""
    return new.dtype == old.dtype and same_shape(new, old, facts)


def shape_source(var: Variable, facts: ShapeFacts) -> Variable:
    """A variable with ``var``'s shape that ``var`` was only filled or broadcast from: the ``like`` of a fill or of
    a ``broadcast_like`` that has its shape, else ``var`` itself (so a dropped operand leaves no dead node behind)."""
    while var.owner is not None and isinstance(var.owner.op, (FillLike, BroadcastLike)):
        like = var.owner.inputs[-1]
        if not same_shape(like, var, facts):
            break
        var = like
    return var


def keep_shape(x: Variable, old: Variable, source: Variable, facts: ShapeFacts) -> Variable | None:
    """``x`` standing for ``old`` (``x`` broadcast like ``source`` where ``old`` was bigger), or None if it cannot."""
    if x.dtype != old.dtype:
        return None
    if same_shape(x, old, facts):
        return x
    return remake(BroadcastLike(), [x, shape_source(source, facts)], old, facts)


def remake(
    op: object, inputs: Sequence[Variable], old: Variable, facts: ShapeFacts, dims: bool = True
) -> Variable | None:
    """``op`` applied to ``inputs`` when the result provably has ``old``'s dtype and shape, else None (nothing built).

    ``dims=False`` skips the symbolic check, for rules whose result shape is equal by construction.
    """
    try:
        (result_type,) = op.infer(*inputs)  # type: ignore[attr-defined]
    except NbdiffError:
        return None
    if result_type.dtype != old.dtype or result_type.shape != old.type.shape:
        return None
    if dims:
        rule_fn = getattr(op, "symbolic_shape", None)
        if rule_fn is None or rule_fn([facts.dims(v) for v in inputs])[0] != facts.dims(old):
            return None
    return apply(op, inputs, [result_type]).outputs[0]  # type: ignore[arg-type]


def _unbroadcast_source(var: Variable) -> Variable | None:
    """What ``var`` broadcasts, when it only adds broadcast dimensions: the input of ``broadcast_like`` or of a
    leading ``expand_dims``, or the 0-d value of a one-element constant; else None."""
    node = var.owner
    if node is not None and isinstance(node.op, BroadcastLike):
        return node.inputs[0]
    if node is not None and isinstance(node.op, ExpandDims) and node.op.axes == tuple(range(len(node.op.axes))):
        return node.inputs[0]
    if isinstance(var, Constant) and var.ndim and var.data.size == 1:
        return constant(var.data.reshape(()))
    return None


# ---------------------------------------------------------------------------------------------------------------
# Broadcasting that the consumer does anyway
# ---------------------------------------------------------------------------------------------------------------
@rule(BroadcastLike)
def broadcast_like_noop(node: Apply, facts: ShapeFacts) -> Variable | None:
    """broadcast_like(a, like) -> a when a already has the broadcast shape"""
    a = node.inputs[0]
    return a if can_replace(a, node.out, facts) else None


@rule(Elemwise, BroadcastLike)
def implicit_broadcast(node: Apply, facts: ShapeFacts) -> Variable | None:
    """f(broadcast(a), b) -> f(a, b) when f's own broadcasting gives the same output shape
    (broadcast = broadcast_like, leading expand_dims, or a one-element constant of any ndim)"""
    sources = [_unbroadcast_source(v) for v in node.inputs]
    if all(s is None for s in sources):
        return None
    everything = [s if s is not None else v for s, v in zip(sources, node.inputs)]
    result = remake(node.op, everything, node.out, facts)
    if result is not None:
        return result
    for position, source in enumerate(sources):
        if source is None:
            continue
        inputs = list(node.inputs)
        inputs[position] = source
        result = remake(node.op, inputs, node.out, facts)
        if result is not None:
            return result
    return None


# ---------------------------------------------------------------------------------------------------------------
# Un-broadcasting: sum_to_like and sums of broadcasts
# ---------------------------------------------------------------------------------------------------------------
@rule(SumToLike)
def sum_to_like_noop(node: Apply, facts: ShapeFacts) -> Variable | None:
    """sum_to_like(g, like) -> g when g already has like's shape"""
    g = node.inputs[0]
    return g if can_replace(g, node.out, facts) else None


@rule(SumToLike)
def sum_to_like_as_sum(node: Apply, facts: ShapeFacts) -> Variable | None:
    """sum_to_like(g, like) -> sum(g, axes) when the axes that were broadcast are provable from the shapes"""
    g, like = node.inputs
    if not is_float(g.dtype):
        return None
    g_dims, like_dims = facts.dims(g), facts.dims(like)
    lead = g.ndim - like.ndim
    kept: list[int] = []
    for axis, dim in enumerate(like_dims):
        if g_dims[lead + axis] == dim:
            continue
        if dim != 1:
            return None  # cannot prove whether this axis was broadcast
        kept.append(lead + axis)
    result = Sum(tuple(kept), True)(g) if kept else g
    if lead:
        result = Sum(tuple(range(lead)), False)(result)
    return result if can_replace(result, node.out, facts) else None


@rule(Sum)
def sum_of_broadcast(node: Apply, facts: ShapeFacts) -> Variable | None:
    """sum(broadcast_like(a, like), axes) -> sum(a, axes') * n when a was broadcast exactly on the summed axes,
    n being the number of copies (a constant, or read from like's shape at run time)"""
    (b,) = node.inputs
    if b.owner is None or not isinstance(b.owner.op, BroadcastLike) or not is_float(b.dtype):
        return None
    a, like = b.owner.inputs
    axes, keepdims = node.op.axes, node.op.keepdims
    lead = b.ndim - a.ndim
    a_dims, b_dims = facts.dims(a), facts.dims(b)
    for axis in range(b.ndim):
        own = a_dims[axis - lead] if axis >= lead else None
        if axis in axes and own is not None and own != 1:
            return None  # a summed axis holds values of a, not copies
        if axis not in axes and (own is None or own != b_dims[axis]):
            return None  # a kept axis was broadcast
    core = a
    own_axes = tuple(axis - lead for axis in axes if axis >= lead)
    if own_axes:
        core = Sum(own_axes, keepdims)(core)
    if keepdims and lead:
        core = ExpandDims(tuple(range(lead)))(core)
    count = _copies(b, like, axes, facts)
    result = core if count is None else remake(mul, [core, count], node.out, facts, dims=False)
    return result if result is not None and can_replace(result, node.out, facts) else None


def _copies(b: Variable, like: Variable, axes: tuple[int, ...], facts: ShapeFacts) -> Variable | None:
    """The number of elements summed over ``axes`` of ``b`` (None when it is statically 1)."""
    sizes = [b.type.shape[a] for a in axes]
    if None not in sizes:
        total = int(np.prod(sizes))
        return None if total == 1 else constant(float(total), b.dtype)
    source = like if like.ndim == b.ndim and all(facts.dims(like)[a] == facts.dims(b)[a] for a in axes) else b
    return ReducedSize(axes, b.dtype)(source)


# ---------------------------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------------------------
@rule(FillLike)
def fill_of_same_shape(node: Apply, facts: ShapeFacts) -> Variable | None:
    """full_like(f(u, ...), v) -> full_like(u, v) when u has the shape of f's output (fills only read shapes)"""
    (y,) = node.inputs
    if y.owner is None:
        return None
    out = node.out
    for u in y.owner.inputs:
        if same_shape(u, y, facts):
            dtype = None if u.dtype == out.dtype else out.dtype
            return FillLike(node.op.value, dtype)(u)
    return None


GRADIENT_RULES: list[Rule] = [
    broadcast_like_noop,
    sum_to_like_noop,
    implicit_broadcast,
    sum_to_like_as_sum,
    sum_of_broadcast,
    fill_of_same_shape,
]

__all__ = ["GRADIENT_RULES", "can_replace", "keep_shape", "remake", "shape_source", "uniform_value"]

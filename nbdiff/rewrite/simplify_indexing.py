"""Simplification rules for indexing with constant integers, the redundancy typical of Jacobians and Hessians.

``nd.jacobian`` unrolls one gradient per element of ``y``: each row starts from a one-hot seed (the pullback of
``y[i]`` is ``index_add(like, 1.0, i)``), reads its entries back with ``index``, and ends, for a function of
``p[0], p[1], ...``, in a sum of ``index_add(like, g_k, k)`` that builds the gradient vector one scalar at a time.
With constant indices all of this is known when the function is built: reading entry ``j`` of a one-hot vector is
``1`` or ``0``, and a sum of one-hot vectors is the vector of its scalars (``stack``). Each rule below removes one
such step. Only basic integer indices are looked at (never slices, ``None``, ``...`` among the written entries, or
index arrays), so the identities hold for every run-time value.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nbdiff.graph.basic import Apply, Constant, Variable, constant
from nbdiff.ops.broadcast import full_like
from nbdiff.ops.elemwise import Add, astype
from nbdiff.ops.indexing import Index, IndexAdd
from nbdiff.ops.shape import Concatenate, Stack
from nbdiff.rewrite.engine import Rule, rule
from nbdiff.rewrite.fold import FOLD_MAX_ELEMENTS
from nbdiff.rewrite.shapes import ShapeFacts
from nbdiff.rewrite.simplify_gradient import can_replace, uniform_value

MAX_SCALAR_ENTRIES = 64  # vectors built from scalars are rewritten as stacks up to this length


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
def _is_int(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _int_items(node: Apply) -> tuple[int, ...] | None:
    """The items of an ``Index`` or ``IndexAdd`` node when they are all constant ints (no arrays), else None."""
    items = node.op.items
    if not items or len(node.inputs) != (1 if isinstance(node.op, Index) else 2):
        return None
    return items if all(_is_int(item) for item in items) else None


def _normalize(items: Sequence[int], shape: tuple) -> tuple[int, ...] | None:
    """``items`` as non-negative positions along the leading axes of ``shape`` (None where a negative index meets
    an axis of unknown length)."""
    positions = []
    for item, size in zip(items, shape):
        if item < 0:
            if size is None:
                return None
            item += size
        positions.append(item)
    return tuple(positions)


def _fits(new: Variable, old: Variable) -> bool:
    """True when ``new`` has ``old``'s dtype and rank and at least its static shape (equal run-time shapes being
    guaranteed by the identity the rule applies)."""
    if new.dtype != old.dtype or new.ndim != old.ndim:
        return False
    return all(o is None or n == o for n, o in zip(new.type.shape, old.type.shape))


def _as_dtype_of(x: Variable, old: Variable) -> Variable:
    """``x`` converted to ``old``'s dtype (joining ops such as ``stack`` promote their inputs' dtypes)."""
    return x if x.dtype == old.dtype else astype(x, old.dtype)


def _zeros_read_from(like: Variable, items: tuple, old: Variable) -> Variable:
    """Zeros standing for ``old = something_shaped_like(like)[items]``: a constant when ``old``'s shape is static
    and small, else a fill shaped like ``like[items]``."""
    if None not in old.type.shape and int(np.prod(old.type.shape)) <= FOLD_MAX_ELEMENTS:
        return constant(np.zeros(old.type.shape, dtype=old.dtype))
    return full_like(Index(items)(like), 0.0, old.dtype)


def _basic_rest(items: tuple) -> bool:
    """True when ``items`` hold only basic indices (ints, slices, None, Ellipsis): no index arrays."""
    return all(_is_int(item) or item is None or item is Ellipsis or isinstance(item, tuple) for item in items)


def _index_rest(piece: Variable, rest: tuple, old: Variable) -> Variable | None:
    """``piece[rest]`` standing for ``old`` (``piece`` itself when ``rest`` selects everything), or None."""
    if all(item is Ellipsis for item in rest):
        result = piece
    else:
        result = Index(rest)(piece)
    result = _as_dtype_of(result, old)
    return result if _fits(result, old) else None


# ---------------------------------------------------------------------------------------------------------------
# Reading an entry of a vector built from pieces
# ---------------------------------------------------------------------------------------------------------------
@rule(Index)
def index_of_stack(node: Apply, facts: ShapeFacts) -> Variable | None:
    """stack([x0, x1, ...])[k, rest] -> x_k[rest] for a constant int k and basic indices (stack on axis 0)"""
    source = node.inputs[0].owner
    items = node.op.items
    if source is None or not isinstance(source.op, Stack) or source.op.axis != 0 or len(node.inputs) != 1:
        return None
    if not items or not _is_int(items[0]) or not _basic_rest(items[1:]):
        return None
    count = len(source.inputs)
    k = items[0] + count if items[0] < 0 else items[0]
    if not 0 <= k < count:
        return None
    return _index_rest(source.inputs[k], items[1:], node.out)


@rule(Index)
def index_of_concatenate(node: Apply, facts: ShapeFacts) -> Variable | None:
    """concatenate([a, b, ...])[k, rest] -> piece[k - offset, rest] for a constant int k, the piece holding k and
    its offset known from static lengths (concatenate on axis 0, basic indices)"""
    source = node.inputs[0].owner
    items = node.op.items
    if source is None or not isinstance(source.op, Concatenate) or source.op.axis != 0 or len(node.inputs) != 1:
        return None
    if not items or not _is_int(items[0]) or not _basic_rest(items[1:]):
        return None
    (k,) = _normalize(items[:1], node.inputs[0].type.shape) or (None,)
    if k is None:
        return None
    offset = 0
    for position, piece in enumerate(source.inputs):
        length = piece.type.shape[0]
        last = position == len(source.inputs) - 1
        if length is None and not last:
            return None  # the offsets of the following pieces are known only at run time
        if offset <= k and (last or k < offset + length):
            return _index_rest(Index((k - offset, *items[1:]))(piece), (Ellipsis,), node.out)
        offset += length
    return None


@rule(Index)
def index_of_index_add(node: Apply, facts: ShapeFacts) -> Variable | None:
    """index_add(like, g, i)[j] -> g when i == j, and -> zeros when i and j differ (constant int indices)"""
    source = node.inputs[0].owner
    if source is None or not isinstance(source.op, IndexAdd) or _int_items(node) is None:
        return None
    if _int_items(source) is None:
        return None
    like, g = source.inputs
    read = _normalize(node.op.items, like.type.shape)
    written = _normalize(source.op.items, like.type.shape)
    if read is None or written is None:
        return None
    common = min(len(read), len(written))
    if read[:common] != written[:common]:
        return _zeros_read_from(like, node.op.items, node.out)  # the entry read was never written
    if len(read) == len(written) and can_replace(g, node.out, facts):
        return g
    return None


@rule(IndexAdd)
def index_add_of_constant(node: Apply, facts: ShapeFacts) -> Variable | None:
    """index_add(like, c, i) -> the constant zeros(like.shape) with c added at i, for a constant c, constant index
    arrays and a static shape of like (like is only read for its shape; small results only)"""
    like, g, *arrays = node.inputs
    if not isinstance(g, Constant) or not all(isinstance(a, Constant) for a in arrays) or None in like.type.shape:
        return None
    if int(np.prod(like.type.shape)) > FOLD_MAX_ELEMENTS:
        return None
    try:
        with np.errstate(all="ignore"):
            (result,) = node.op.perform(np.zeros(like.type.shape, dtype=like.dtype), g.data, *(a.data for a in arrays))
    except Exception:  # noqa: BLE001 - left for run time, where the error names the user's line
        return None
    return constant(np.array(result)) if result.dtype.name == node.out.dtype else None


# ---------------------------------------------------------------------------------------------------------------
# Vectors built from scalars
# ---------------------------------------------------------------------------------------------------------------
@rule(IndexAdd)
def index_add_as_stack(node: Apply, facts: ShapeFacts) -> Variable | None:
    """index_add(like, g, k) -> stack([0, ..., g, ..., 0]) with g at k, for a 0-d g, a constant int k and a static
    1-D like of at most MAX_SCALAR_ENTRIES entries (like is only read for its length, which is static)"""
    items = _int_items(node)
    like, g = node.inputs[:2]
    if items is None or len(items) != 1 or g.ndim != 0 or like.ndim != 1:
        return None
    length = like.type.shape[0]
    if length is None or length > MAX_SCALAR_ENTRIES:
        return None
    (k,) = _normalize(items, like.type.shape) or (0,)
    entries = [constant(np.zeros((), dtype=g.dtype))] * length
    entries[k] = g
    return Stack(0)(*entries)


def _scalar_entries(var: Variable) -> list[Variable | None] | None:
    """The 0-d entries of ``var`` when it is a vector built from scalars (``stack`` of 0-d values on axis 0, or a
    constant vector of at most ``MAX_SCALAR_ENTRIES`` entries), None standing for an entry known to be zero."""
    if var.ndim != 1 or var.type.shape[0] is None or var.type.shape[0] > MAX_SCALAR_ENTRIES:
        return None
    if isinstance(var, Constant):
        return [None if value == 0 else constant(value) for value in var.data]
    node = var.owner
    if node is not None and isinstance(node.op, Stack) and all(x.ndim == 0 for x in node.inputs):
        return [None if uniform_value(x) == 0.0 else x for x in node.inputs]
    return None


def _entry(value: Variable | None, dtype: str) -> Variable | None:
    """One entry of the joined vector with ``dtype``: zero for None, constants converted; None if it cannot be."""
    if value is None:
        return constant(np.zeros((), dtype=dtype))
    if isinstance(value, Constant):
        return constant(value.data, dtype)
    return value if value.dtype == dtype else None


@rule(Add)
def sum_of_scalar_vectors(node: Apply, facts: ShapeFacts) -> Variable | None:
    """stack([a0, 0, a2, ...]) + stack([0, b1, 0, ...]) -> stack([a0, b1, a2, ...]) when no position is nonzero in
    both (entries known to be zero are constants or fills; either side may be a constant vector)"""
    a, b = node.inputs
    if not any(v.owner is not None and isinstance(v.owner.op, Stack) for v in (a, b)):
        return None
    left, right = _scalar_entries(a), _scalar_entries(b)
    if left is None or right is None or len(left) != len(right) or node.out.type.shape != a.type.shape:
        return None
    if any(x is not None and y is not None for x, y in zip(left, right)):
        return None  # a sum at some position: the vector add stays one node
    elements = [_entry(x if y is None else y, node.out.dtype) for x, y in zip(left, right)]
    if any(e is None for e in elements):
        return None
    result = Stack(0)(*elements)
    return result if _fits(result, node.out) else None


INDEXING_RULES: list[Rule] = [
    index_of_stack,
    index_of_concatenate,
    index_of_index_add,
    index_add_of_constant,
    index_add_as_stack,
    sum_of_scalar_vectors,
]

__all__ = ["INDEXING_RULES"]

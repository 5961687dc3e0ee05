"""Batching rules shared by several op classes: how an op applies to inputs that carry an extra leading batch axis.

An op states how it batches with its ``batch(node, inputs, batched, size)`` method (``nbdiff.vmap`` calls it):
``inputs`` are the node's inputs, each batched one with the batch axis in front; ``batched`` says which; ``size``
is the ``BatchSize`` (materialises an unbatched value). The rule returns the node's outputs, each with the batch
axis in front, or a ``Batched(outputs, batched)`` saying which outputs carry the batch axis (a size of a batched
input, ``x.shape[0]``, is the same for every batch element and is not batched). Families share rules from here:
elementwise ops align ranks and broadcast, ops with axis parameters shift them by one, and a few ops keep their own
rule in their class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from nbdiff.graph.basic import Apply, Op, Variable


@dataclasses.dataclass
class Batched:
    """What a batching rule returns when some outputs are not batched: the outputs, and which carry the batch axis."""

    outputs: list[Variable]
    batched: list[bool]


class BatchSize:
    """The batch axis's length, as a ruler: a vector of length B taken from a batched value (and B when static)."""

    def __init__(self, ruler: Variable):
        self.ruler = ruler

    @property
    def static(self) -> int | None:
        return self.ruler.type.shape[0]

    def length(self) -> Variable:
        """The batch size as an int64 scalar (a constant when static), a size for the ``Sized*`` ops."""
        from nbdiff.graph.basic import constant
        from nbdiff.ops.sizes import SIZE_DTYPE, ShapeAt

        static = self.static
        return constant(static, SIZE_DTYPE) if static is not None else ShapeAt(0)(self.ruler)

    def materialise(self, value: Variable) -> Variable:
        """``value`` repeated along a new leading batch axis (a broadcast, no copy in NumPy)."""
        from nbdiff.ops.broadcast import broadcast_like
        from nbdiff.ops.shape import expand_dims

        lead = expand_dims(value, 0)
        ruler = self.ruler if value.ndim == 0 else expand_dims(self.ruler, tuple(range(1, value.ndim + 1)))
        return broadcast_like(lead, ruler)


def align(value: Variable, is_batched: bool, rank: int) -> Variable:
    """``value`` with ``rank + 1`` dimensions, the batch axis in front, for NumPy broadcasting against others.

    A batched value gets length-1 axes after its batch axis; an unbatched one gets them in front.
    """
    from nbdiff.ops.shape import expand_dims

    have = value.ndim - 1 if is_batched else value.ndim
    missing = rank - have
    if is_batched:
        return expand_dims(value, tuple(range(1, missing + 1))) if missing > 0 else value
    return expand_dims(value, tuple(range(missing + 1)))


def batch_broadcasting(op: Op, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: BatchSize):
    """Elementwise ops (and ``broadcast_like``): align every input to the output's rank plus the batch axis."""
    rank = max(v.ndim for v in node.inputs)
    aligned = [align(v, b, rank) for v, b in zip(inputs, batched)]
    return list(op.make_node(*aligned).outputs)


def shifted(op: Op) -> Op:
    """``op`` with its ``axis``/``axes`` parameters moved one place right (past the new batch axis).

    Negative axes count from the end and stay; ``axis=None`` (flatten) cannot batch this way and raises.
    """
    changes: dict[str, Any] = {}
    for name in ("axis", "axes"):
        if name not in getattr(op, "__dataclass_fields__", {}):
            continue
        value = getattr(op, name)
        if value is None:
            raise NotImplementedError(f"{op.name} with {name}=None has no batching rule")
        if isinstance(value, tuple):
            changes[name] = tuple(a + 1 if a >= 0 else a for a in value)
        else:
            changes[name] = value + 1 if value >= 0 else value
    return dataclasses.replace(op, **changes) if changes else op  # type: ignore[type-var]


def batch_shifting_axes(op: Op, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: BatchSize):
    """Ops that work per slice along axis parameters (reductions, softmax, concatenate, ...): every input batched,
    the axes shifted past the batch axis."""
    full = [v if b else size.materialise(v) for v, b in zip(inputs, batched)]
    return list(shifted(op).make_node(*full).outputs)


def batch_per_leading_axis(op: Op, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: BatchSize):
    """Ops that already treat leading axes as a stack (``matrix_transpose``, fills, shape assertions): every input
    batched, the op unchanged."""
    full = [v if b else size.materialise(v) for v, b in zip(inputs, batched)]
    return list(op.make_node(*full).outputs)

"""Shape ops: reshape, transpose, expand_dims, squeeze, broadcast_to, concatenate, stack, diag, ..."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.graph.basic import Apply, Op, Variable, as_variable
from nbdiff.graph.types import TensorType, normalize_axes


@dataclass(frozen=True, eq=False)
class ExpandDims(Op):
    """``expand_dims(x, axis)``: insert length-1 dimensions at ``axes`` (positions in the result)."""

    axes: tuple[int, ...]

    @property
    def name(self) -> str:
        return "expand_dims"

    def infer(self, x: Variable) -> list[TensorType]:
        shape = list(x.shape)
        for axis in self.axes:
            shape.insert(axis, 1)
        return [TensorType(x.dtype, tuple(shape))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.expand_dims(x, self.axes),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        if g is None:
            return [None]
        from nbdiff.ops.reduce import Sum

        return [Sum(self.axes, False)(g)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else ExpandDims(self.axes)(t)]


def expand_dims(x: Any, axis: Any) -> Variable:
    """Insert length-1 dimensions at ``axis`` (int or tuple), as NumPy does."""
    x = as_variable(x)
    count = len(axis) if isinstance(axis, (tuple, list)) else 1
    return ExpandDims(normalize_axes("expand_dims", axis, x.ndim + count))(x)

__all__ = ["expand_dims"]

"""Reductions with NumPy's ``axis=`` (int, tuple or None) and ``keepdims=``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.graph.basic import Apply, Op, Variable, as_variable
from nbdiff.graph.types import TensorType, normalize_axes, numpy_result_dtype
from nbdiff.ops import broadcast as bc


def reduced_shape(shape: tuple, axes: tuple[int, ...], keepdims: bool) -> tuple:
    """The static shape after reducing ``axes``."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def restore_axes(g: Variable, axes: tuple[int, ...], keepdims: bool) -> Variable:
    """Re-insert reduced axes as length-1 dimensions so ``g`` broadcasts against the reduction's input."""
    if keepdims or not axes:
        return g
    from nbdiff.ops.shape import expand_dims

    return expand_dims(g, axes)


@dataclass(frozen=True, eq=False)
class Reduce(Op):
    """Base class: a reduction over ``axes`` (normalised, sorted, non-negative) with ``keepdims``.

    Subclasses set ``numpy_reduce`` (the NumPy reduction) and ``reduce_dtype_fn`` (gives the result dtype).
    """

    abstract = True
    axes: tuple[int, ...]
    keepdims: bool = False

    def infer(self, x: Variable) -> list[TensorType]:
        dtype = numpy_result_dtype(type(self).reduce_dtype_fn, x.dtype)
        return [TensorType(dtype, reduced_shape(x.shape, self.axes, self.keepdims))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(type(self).numpy_reduce(x, axis=self.axes, keepdims=self.keepdims)),)


class Sum(Reduce):
    """``sum(x, axis, keepdims)``; integer and bool inputs sum to int64 as in NumPy."""

    numpy_reduce = staticmethod(np.sum)
    reduce_dtype_fn = staticmethod(np.sum)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        (x,) = node.inputs
        if g is None:
            return [None]
        return [bc.broadcast_like(restore_axes(g, self.axes, self.keepdims), x)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else Sum(self.axes, self.keepdims)(t)]


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001 - NumPy's name
    """Sum of elements over ``axis`` (None: all axes)."""
    x = as_variable(x)
    return Sum(normalize_axes("sum", axis, x.ndim), bool(keepdims))(x)

__all__ = ["sum"]

"""Shape-following ops used everywhere gradients meet broadcasting: broadcast to, and sum back to, another
variable's run-time shape, fills shaped like a variable (``zeros_like``, ``ones_like``, ``full_like``), and the
run-time assertion that a value has another variable's shape (``assert_shape_like``, for derivatives' seeds).

Static shapes may have unknown dimensions, so whether broadcasting happened is often only known at run time.
These ops take the variable whose shape they follow as an input and decide at run time; their static types are
exact whenever the shapes are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.errors import DTypeError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Op, Variable, as_variable
from nbdiff.graph.dims import broadcast_dims
from nbdiff.graph.types import TensorType, as_dtype, broadcast_array_shapes, broadcast_shapes, is_float
from nbdiff.ops import batching


def _reduced_axes(from_shape: tuple[int, ...], to_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Axes to sum (leading extra axes, and axes where ``to_shape`` has 1) to bring ``from_shape`` to ``to_shape``."""
    lead = len(from_shape) - len(to_shape)
    leading = tuple(range(lead))
    kept = tuple(lead + i for i, d in enumerate(to_shape) if d == 1 and from_shape[lead + i] != 1)
    return leading, kept


class SumToLike(Op):
    """``sum_to_like(g, x)``: sum ``g`` over the axes that broadcasting added to ``x``; the result has x's shape."""

    def infer(self, g: Variable, like: Variable) -> list[TensorType]:
        if g.ndim < like.ndim:
            raise self.error(ShapeError, "the gradient has fewer dimensions than the variable it sums to", [g, like])
        return [TensorType(g.dtype, like.type.shape)]

    def perform(self, g: np.ndarray, like: np.ndarray) -> tuple[np.ndarray]:
        if g.shape == like.shape:
            return (g,)
        leading, kept = _reduced_axes(g.shape, like.shape)
        result = g.sum(axis=leading) if leading else g
        if kept:
            result = result.sum(axis=tuple(a - len(leading) for a in kept), keepdims=True)
        if result.shape != like.shape:  # the interpreter re-raises this naming the node's own line
            raise ValueError(f"cannot sum shape {g.shape} to shape {like.shape}")
        return (np.asarray(result),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        return [input_dims[1]]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (gz,) = output_grads
        g, _ = node.inputs
        return [None if gz is None else broadcast_like(gz, g), None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t, _ = tangents
        return [None if t is None else sum_to_like(t, node.inputs[1])]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """Both batched; the axes ``g`` has beyond ``like`` (after the batch axis) summed first, then the rest."""
        from nbdiff.ops.reduce import Sum

        g, like = (v if b else size.materialise(v) for v, b in zip(inputs, batched))
        extra = g.ndim - like.ndim
        if extra:
            g = Sum(tuple(range(1, extra + 1)))(g)
        return [SumToLike()(g, like)]


class BroadcastLike(Op):
    """``broadcast_like(a, x)``: ``a`` broadcast to the shape of ``broadcast(a, x)`` (x's shape, usually)."""

    batch = batching.batch_broadcasting

    def infer(self, a: Variable, like: Variable) -> list[TensorType]:
        return [TensorType(a.dtype, broadcast_shapes(self.name, a.type.shape, like.type.shape))]

    def perform(self, a: np.ndarray, like: np.ndarray) -> tuple[np.ndarray]:
        if a.shape == like.shape:
            return (a,)
        shape = broadcast_array_shapes(a.shape, like.shape)
        return (np.broadcast_to(a, shape),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        return [broadcast_dims(input_dims)]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (gz,) = output_grads
        a, _ = node.inputs
        return [None if gz is None else sum_to_like(gz, a), None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t, _ = tangents
        return [None if t is None else broadcast_like(t, node.inputs[1])]


@dataclass(frozen=True, eq=False)
class FillLike(Op):
    """``full_like(x, value, dtype)``: an array shaped like ``x`` filled with ``value``."""

    batch = batching.batch_per_leading_axis

    value: float
    dtype: str | None = None

    @property
    def name(self) -> str:
        return {0: "zeros_like", 1: "ones_like"}.get(self.value, "full_like")  # type: ignore[call-overload]

    def infer(self, like: Variable) -> list[TensorType]:
        return [TensorType(self.dtype or like.dtype, like.type.shape)]

    def perform(self, like: np.ndarray) -> tuple[np.ndarray]:
        return (np.full(like.shape, self.value, dtype=self.dtype or like.dtype),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        return [input_dims[0]]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        return [None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        return [None]


@dataclass(frozen=True, eq=False)
class AssertShapeLike(Op):
    """``assert_shape_like(a, like, what)``: ``a`` itself, checked at run time to have ``like``'s shape.

    Derivatives require it (``Rop``'s tangents have the shape of their variable, ``Lop``'s eval points and
    ``grad``'s known gradients that of their output); this op makes it part of the graph, so the symbolic shape
    analysis knows that ``a`` has ``like``'s dimensions (its ``symbolic_shape``) and fusion can put both in one
    loop. ``what`` names the requirement in the run-time error, e.g. "Rop: the tangent for x".
    """

    batch = batching.batch_per_leading_axis

    what: str = "the value"

    def infer(self, a: Variable, like: Variable) -> list[TensorType]:
        if a.ndim != like.ndim or any(
            p is not None and q is not None and p != q for p, q in zip(a.type.shape, like.type.shape)
        ):
            raise self.error(
                ShapeError, f"{self.what} must have shape {like.type.shape}, got {a.type.shape}", [a, like]
            )
        shape = tuple(q if q is not None else p for p, q in zip(a.type.shape, like.type.shape))
        return [TensorType(a.dtype, shape)]

    def perform(self, a: np.ndarray, like: np.ndarray) -> tuple[np.ndarray]:
        if a.shape != like.shape:  # the interpreter re-raises this naming the node's own line
            raise ValueError(f"{self.what} has shape {a.shape}, but must have shape {like.shape}")
        return (a,)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        return [input_dims[1]]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (gz,) = output_grads
        return [gz, None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t, _ = tangents
        return [t]


def assert_shape_like(a: Variable, like: Variable, what: str = "the value") -> Variable:
    """``a``, asserted (at run time) to have ``like``'s shape; ``what`` names ``a`` in the error."""
    return AssertShapeLike(what)(a, like)


def may_be_broadcast(var: Variable, node: Apply | None, grad: Variable) -> bool:
    """Whether ``var``, an input of elementwise ``node``, may have been broadcast to ``grad``'s shape (the output's).

    False only when static shapes prove it was not: then gradients and tangents need no sum-to or broadcast step.
    """
    if grad.ndim > var.ndim:
        return True
    if None not in var.type.shape and grad.type.shape == var.type.shape:
        return False
    if node is None:
        return True
    ndim = grad.ndim
    for axis, dim in enumerate(var.type.shape):
        if dim is not None and dim != 1:
            continue  # a known size > 1 cannot have been broadcast
        if dim == 1 and grad.type.shape[axis] == 1:
            continue
        for other in node.inputs:
            if other is var:
                continue
            position = axis - ndim + other.ndim
            if position >= 0 and other.type.shape[position] != 1:
                return True
    return False


def sum_to_like(g: Variable, like: Variable, node: Apply | None = None) -> Variable:
    """``g`` summed back to ``like``'s shape; a no-op when ``node``'s static shapes prove nothing was broadcast."""
    if not may_be_broadcast(like, node, g):
        return g
    return SumToLike()(g, like)


def broadcast_like(a: Variable, like: Variable) -> Variable:
    """``a`` broadcast to ``like``'s shape; a no-op when the static shapes are already equal and known."""
    if None not in a.type.shape and a.type.shape == like.type.shape:
        return a
    return BroadcastLike()(a, like)


def full_like(x: Any, fill_value: float, dtype: object = None) -> Variable:
    """An array shaped like ``x`` filled with ``fill_value`` (NumPy's ``full_like``)."""
    x = as_variable(x)
    name = None if dtype is None else as_dtype(dtype)
    try:
        value = float(fill_value)
    except (TypeError, ValueError):
        raise node_error(DTypeError, "full_like", f"fill value must be a number, got {fill_value!r}", [x]) from None
    if name is not None and not is_float(name) and value != int(value):
        raise node_error(DTypeError, "full_like", f"fill value {fill_value!r} does not fit integer dtype {name}", [x])
    return FillLike(value, name)(x)


def zeros_like(x: Any, dtype: object = None) -> Variable:
    """Zeros shaped like ``x``."""
    return full_like(x, 0.0, dtype)


def ones_like(x: Any, dtype: object = None) -> Variable:
    """Ones shaped like ``x``."""
    return full_like(x, 1.0, dtype)


__all__ = ["full_like", "ones_like", "zeros_like", "broadcast_like", "sum_to_like"]

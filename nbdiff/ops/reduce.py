"""Reductions with NumPy's ``axis=`` (int, tuple or None) and ``keepdims=``: sum, mean, prod, max and min.

Gradients, and the helper ops they use:

- ``mean`` is ``sum / count``; the count is a constant when the reduced dimensions are static and a
  ``ReducedSize`` node (the number of reduced elements, read from the run-time shape) otherwise.
- ``prod``: d prod / d x_i is the product of the *other* elements of x_i's slice (``ProdOthers``), computed from
  prefix and suffix products, so it is exact with any number of zeros (no division by x). Its own derivative is the
  product's Hessian applied to a vector (``ProdHVP``), computed exactly for any number of zeros by counting them
  per slice. The third derivative (the pullback of ``ProdHVP`` with respect to x) divides by x, so it assumes
  the slice has no zeros.
- ``max`` / ``min``: the gradient flows to the positions that attain the extremum; ties split it equally (so the
  gradient of a max sums to the incoming gradient, like a subgradient). A NaN in a slice gives a NaN gradient.
  Reducing an axis of length 0 raises, as in NumPy: at construction when the length is static, else at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.errors import GraphError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Op, Variable, as_variable, constant
from nbdiff.graph.types import TensorType, broadcast_shapes, is_float, normalize_axes, numpy_result_dtype
from nbdiff.ops import batching
from nbdiff.ops import broadcast as bc
from nbdiff.ops import elemwise as ew


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


def check_keepdims(op_name: str, keepdims: object) -> bool:
    """``keepdims`` as a bool; anything else (``1``, ``"yes"``, a variable) is a user error."""
    if isinstance(keepdims, (bool, np.bool_)):
        return bool(keepdims)
    raise node_error(GraphError, op_name, f"keepdims must be True or False, got {keepdims!r}")


@dataclass(frozen=True, eq=False)
class Reduce(Op):
    """Base class: a reduction over ``axes`` (normalised, sorted, non-negative) with ``keepdims``.

    Subclasses set ``numpy_reduce`` (the NumPy reduction) and ``reduce_dtype_fn`` (gives the result dtype).
    """

    batch = batching.batch_shifting_axes

    abstract = True
    axes: tuple[int, ...]
    keepdims: bool = False

    def infer(self, x: Variable) -> list[TensorType]:
        dtype = numpy_result_dtype(type(self).reduce_dtype_fn, x.dtype)
        return [TensorType(dtype, reduced_shape(x.type.shape, self.axes, self.keepdims))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(type(self).numpy_reduce(x, axis=self.axes, keepdims=self.keepdims)),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """Reduced axes disappear (or become 1 with keepdims); the others keep their symbols."""
        return [reduced_shape(input_dims[0], self.axes, self.keepdims)]

    def restore(self, g: Variable) -> Variable:
        """``g`` (shaped like the output) with the reduced axes back as length-1 dimensions."""
        return restore_axes(g, self.axes, self.keepdims)


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


@dataclass(frozen=True, eq=False)
class ReducedSize(Op):
    """The number of elements that reducing ``axes`` of ``x`` combines, as a 0-d array of ``dtype`` (for mean)."""

    axes: tuple[int, ...]
    dtype: str

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(self.dtype, ())]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(math.prod(x.shape[a] for a in self.axes), dtype=self.dtype),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        return [None]  # depends on the shape only

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        return [None]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """The count is the same for every batch element: computed once, repeated along the batch axis."""
        (x,) = inputs
        return [size.materialise(ReducedSize(tuple(a + 1 for a in self.axes), self.dtype)(x))]


def reduced_size(x: Variable, axes: tuple[int, ...], dtype: str) -> Variable:
    """The number of reduced elements: a constant when the dimensions are static, else read at run time."""
    dims = [x.type.shape[a] for a in axes]
    if None not in dims:
        return constant(float(math.prod(dims)), dtype)
    return ReducedSize(axes, dtype)(x)


# ---------------------------------------------------------------------------------------------------------------
# prod
# ---------------------------------------------------------------------------------------------------------------
class Prod(Reduce):
    """``prod(x, axis, keepdims)``; its gradient is the product of the other elements (exact with zeros)."""

    numpy_reduce = staticmethod(np.prod)
    reduce_dtype_fn = staticmethod(np.prod)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        (x,) = node.inputs
        if g is None or not is_float(x.dtype):
            return [None]
        return [ew.mul(ProdOthers(self.axes)(x), self.restore(g))]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        (x,) = node.inputs
        if t is None or not is_float(x.dtype):
            return [None]
        return [Sum(self.axes, self.keepdims)(ew.mul(ProdOthers(self.axes)(x), t))]


def _to_slices(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``x`` with the reduced ``axes`` moved to the end and flattened into one: shape ``kept + (n,)``."""
    kept = x.ndim - len(axes)
    moved = np.moveaxis(x, axes, tuple(range(kept, x.ndim)))
    return moved.reshape(moved.shape[:kept] + (math.prod(moved.shape[kept:]),))


def _from_slices(flat: np.ndarray, like: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``_to_slices``: back to ``like``'s shape and axis order."""
    kept = like.ndim - len(axes)
    moved_shape = np.moveaxis(like, axes, tuple(range(kept, like.ndim))).shape
    return np.moveaxis(flat.reshape(moved_shape), tuple(range(kept, like.ndim)), axes)


@dataclass(frozen=True, eq=False)
class ProdOthers(Op):
    """For each element, the product of the other elements of its slice along ``axes`` (d prod / d x).

    Computed as (product of the elements before) * (product of the elements after), so zeros need no special case.
    """

    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(x.dtype, x.type.shape)]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        flat = _to_slices(x, self.axes)
        if flat.shape[-1] == 0:
            return (np.empty_like(x),)
        ones = np.ones(flat.shape[:-1] + (1,), dtype=x.dtype)
        before = np.concatenate([ones, np.cumprod(flat[..., :-1], axis=-1)], axis=-1)
        after = np.concatenate([np.cumprod(flat[..., :0:-1], axis=-1)[..., ::-1], ones], axis=-1)
        return (np.array(_from_slices(before * after, x, self.axes)),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (u,) = output_grads
        if u is None:
            return [None]
        return [ProdHVP(self.axes)(node.inputs[0], u)]  # the Jacobian of ProdOthers is prod's (symmetric) Hessian

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else ProdHVP(self.axes)(node.inputs[0], t)]


@dataclass(frozen=True, eq=False)
class ProdHVP(Op):
    """``prod_hvp(x, u)``: the Hessian of ``prod`` over each slice along ``axes``, applied to ``u``.

    ``h_j = sum_{i != j} u_i * prod_{k not in (i, j)} x_k``, computed exactly for 0, 1, 2 or more zeros per slice.
    """

    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]

    @property
    def name(self) -> str:
        return "prod_hvp"

    def infer(self, x: Variable, u: Variable) -> list[TensorType]:
        return [TensorType(x.dtype, broadcast_shapes(self.name, x.type.shape, u.type.shape))]

    def perform(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray]:
        u = np.broadcast_to(u, x.shape)
        zero = x == 0
        safe = np.where(zero, np.ones((), x.dtype), x)

        def total(a: np.ndarray) -> np.ndarray:
            return np.sum(a, axis=self.axes, keepdims=True)

        count = np.broadcast_to(total(zero), x.shape)
        nonzero_prod = np.prod(safe, axis=self.axes, keepdims=True)
        ratio = u / safe
        no_zero = nonzero_prod / safe * (total(ratio) - ratio)
        one_zero = np.where(zero, nonzero_prod * total(np.where(zero, 0, ratio)), nonzero_prod / safe * total(u * zero))
        two_zeros = np.where(zero, nonzero_prod * (total(u * zero) - u), 0)
        result = np.select([count == 0, count == 1, count == 2], [no_zero, one_zero, two_zeros], 0)
        return (np.asarray(result, dtype=x.dtype),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (w,) = output_grads
        x, u = node.inputs
        if w is None:
            return [None, None]
        grad_u = bc.sum_to_like(ProdHVP(self.axes)(x, w), u)  # linear in u with a symmetric matrix
        if not is_float(x.dtype):
            return [None, grad_u]
        # d/dx of h = e * (S - u/x), e = ProdOthers(x), S = sum(u/x): valid when the slice has no zeros.
        ratio = ew.true_divide(u, x)
        spread = ew.sub(Sum(self.axes, True)(ratio), ratio)
        we = ew.mul(w, ProdOthers(self.axes)(x))
        correction = ew.mul(ew.sub(we, Sum(self.axes, True)(we)), ew.true_divide(ratio, x))
        grad_x = ew.add(ProdHVP(self.axes)(x, ew.mul(w, spread)), correction)
        return [bc.sum_to_like(grad_x, x), grad_u]


# ---------------------------------------------------------------------------------------------------------------
# max and min
# ---------------------------------------------------------------------------------------------------------------
class Extremum(Reduce):
    """Base class of ``max`` and ``min``: the gradient goes to the positions attaining the result."""

    abstract = True

    def infer(self, x: Variable) -> list[TensorType]:
        empty = [a for a in self.axes if x.type.shape[a] == 0]
        if empty:
            raise self.error(ShapeError, f"{self._empty_message(empty[0])}", [x])
        return super().infer(x)

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        empty = [a for a in self.axes if x.shape[a] == 0]
        if empty:
            raise ValueError(f"{self._empty_message(empty[0])} (input shape {x.shape})")
        return super().perform(x)

    def _empty_message(self, axis: int) -> str:
        return f"cannot take the {self.name} over axis {axis}, which has length 0 ({self.name} has no identity)"

    def weights(self, node: Apply) -> Variable:
        """Where the input attains the result, each position weighted 1/(number of ties)."""
        return ExtremumWeights(self.axes, self.keepdims)(node.inputs[0], node.outputs[0])

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        if g is None or not is_float(node.inputs[0].dtype):
            return [None]
        return [ew.mul(self.weights(node), self.restore(g))]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        if t is None or not is_float(node.inputs[0].dtype):
            return [None]
        return [Sum(self.axes, self.keepdims)(ew.mul(self.weights(node), t))]


class Max(Extremum):
    """``max(x, axis, keepdims)`` (NumPy's ``amax``); keeps the input's dtype."""

    numpy_reduce = staticmethod(np.max)
    reduce_dtype_fn = staticmethod(np.max)


class Min(Extremum):
    """``min(x, axis, keepdims)`` (NumPy's ``amin``); keeps the input's dtype."""

    numpy_reduce = staticmethod(np.min)
    reduce_dtype_fn = staticmethod(np.min)


@dataclass(frozen=True, eq=False)
class ExtremumWeights(Op):
    """``extremum_weights(x, out)``: 1/(ties) where ``x`` equals the reduction result ``out``, else 0.

    Piecewise constant in ``x``, so it passes no gradient on.
    """

    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]
    keepdims: bool = False

    def infer(self, x: Variable, out: Variable) -> list[TensorType]:
        return [TensorType(x.dtype if is_float(x.dtype) else "float64", x.type.shape)]

    def perform(self, x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray]:
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype("float64")
        hits = x == (out if self.keepdims else np.expand_dims(out, self.axes))
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = hits.astype(dtype) / np.sum(hits, axis=self.axes, keepdims=True).astype(dtype)
        return (weights,)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        return [None, None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        return [None]


# ---------------------------------------------------------------------------------------------------------------
# Public functions (NumPy names)
# ---------------------------------------------------------------------------------------------------------------
def _reduce(cls: type[Reduce], name: str, x: Any, axis: Any, keepdims: Any) -> Variable:
    x = as_variable(x)
    return cls(normalize_axes(name, axis, x.ndim), check_keepdims(name, keepdims))(x)


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001 - NumPy's name
    """Sum of elements over ``axis`` (None: all axes)."""
    return _reduce(Sum, "sum", x, axis, keepdims)


def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:
    """Product of elements over ``axis`` (None: all axes); integer and bool inputs give int64 as in NumPy."""
    return _reduce(Prod, "prod", x, axis, keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001 - NumPy's name
    """Largest element over ``axis`` (None: all axes)."""
    return _reduce(Max, "max", x, axis, keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001 - NumPy's name
    """Smallest element over ``axis`` (None: all axes)."""
    return _reduce(Min, "min", x, axis, keepdims)


amax = max
amin = min


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:
    """Arithmetic mean over ``axis`` (None: all axes); integer inputs give float64 as in NumPy."""
    x = as_variable(x)
    axes = normalize_axes("mean", axis, x.ndim)
    keep = check_keepdims("mean", keepdims)
    dtype = numpy_result_dtype(np.mean, x.dtype)
    total = Sum(axes, keep)(ew.astype(x, dtype))
    return ew.true_divide(total, reduced_size(x, axes, dtype))


__all__ = ["sum", "mean", "prod", "max", "min", "amax", "amin"]

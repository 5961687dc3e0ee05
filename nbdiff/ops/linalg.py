"""Linear algebra: ``matmul`` (the ``@`` operator), ``dot`` and ``outer``, with NumPy's semantics.

``MatMul`` is one op for every NumPy case: 1-D operands are promoted to matrices and the added axis removed again,
and N-D operands are stacks of matrices whose batch dimensions broadcast. Its pullback is built from ``matmul``,
a matrix transpose (swap of the last two axes), elementwise products and sums, and un-broadcasts batch dimensions.
``perform`` calls ``np.matmul`` directly, so float32 stays float32 and runs on float32 BLAS.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nbdiff.errors import ShapeError, node_error
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable
from nbdiff.graph.types import TensorType, broadcast_shapes, is_float, numpy_result_dtype
from nbdiff.ops import batching
from nbdiff.ops import broadcast as bc
from nbdiff.ops.elemwise import add, mul
from nbdiff.ops.reduce import Sum
from nbdiff.ops.shape import expand_dims


def _prepare(a: Any, b: Any) -> tuple[Variable, Variable]:
    """Both operands as variables. Python numbers are *not* weak here: NumPy's matmul, dot and outer convert them
    with ``np.asarray`` first, so ``np.dot(float32_array, 2.5)`` is float64, and so is nbdiff's."""
    return as_variable(a), as_variable(b)


def _shape(var: Variable) -> str:
    """A static shape as NumPy prints it, with ``?`` for unknown dimensions: ``(3, ?)``."""
    dims = ["?" if d is None else str(d) for d in var.type.shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _check_inner(op_name: str, a: Variable, b: Variable) -> None:
    """Raise a ShapeError naming ``op_name`` when the contracted dimensions are known and differ."""
    k_a = a.type.shape[-1]
    k_b = b.type.shape[0] if b.ndim == 1 else b.type.shape[-2]
    if k_a is not None and k_b is not None and k_a != k_b:
        raise node_error(
            ShapeError,
            op_name,
            f"shapes {_shape(a)} and {_shape(b)} are not aligned: the last dimension of the first "
            f"operand ({k_a}) must equal the {'only' if b.ndim == 1 else 'second-to-last'} dimension of the "
            f"second ({k_b})",
            [a, b],
        )


class MatMul(Op):
    """``matmul(a, b)``: NumPy's matrix product, with 1-D promotion and broadcasting of batch dimensions."""

    @property
    def name(self) -> str:
        return "matmul"

    def prepare_inputs(self, inputs: Sequence[Any]) -> list[Variable]:
        return list(_prepare(*inputs))

    def infer(self, a: Variable, b: Variable) -> list[TensorType]:
        for position, var in enumerate((a, b)):
            if var.ndim == 0:
                raise self.error(
                    ShapeError,
                    f"operand {position} is 0-d (a scalar) but matmul needs at least 1 dimension; "
                    f"use * (nd.multiply) or nd.dot to scale by a scalar",
                    [a, b],
                )
        _check_inner(self.name, a, b)
        try:
            batch = broadcast_shapes(self.name, a.type.shape[:-2], b.type.shape[:-2])
        except ShapeError:
            raise self.error(
                ShapeError,
                f"the batch dimensions of shapes {_shape(a)} and {_shape(b)} cannot be broadcast together",
                [a, b],
            ) from None
        rows = a.type.shape[-2:-1] if a.ndim >= 2 else ()
        cols = b.type.shape[-1:] if b.ndim >= 2 else ()
        dtype = numpy_result_dtype(np.matmul, a.dtype, b.dtype)
        return [TensorType(dtype, tuple(batch) + tuple(rows) + tuple(cols))]

    def perform(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(np.matmul(a, b)),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple] | None:
        """The rows of ``a`` and the columns of ``b`` (for operands of at most 2 dimensions; else the static shape)."""
        a, b = input_dims
        if len(a) > 2 or len(b) > 2:
            return None
        return [tuple(a[:-1]) + tuple(b[1:])]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        a, b = node.inputs
        if g is None:
            return [None, None]
        return [
            _grad_left(g, a, b) if _wants_grad(a) else None,
            _grad_right(g, a, b) if _wants_grad(b) else None,
        ]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        ta, tb = tangents
        a, b = node.inputs
        terms = []
        if ta is not None:
            terms.append(matmul(ta, b))
        if tb is not None:
            terms.append(matmul(a, tb))
        if not terms:
            return [None]
        return [terms[0] if len(terms) == 1 else add(terms[0], terms[1])]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """Vectors become matrices, both operands get the batch axis in front of their stack axes, then squeeze."""
        from nbdiff.ops.batching import align
        from nbdiff.ops.shape import squeeze

        (a, b), (a0, b0) = inputs, node.inputs
        if a0.ndim == 1:
            a = expand_dims(a, -2)
        if b0.ndim == 1:
            b = expand_dims(b, -1)
        rank = max(a0.ndim, b0.ndim, 2)
        out = self(align(a, batched[0], rank), align(b, batched[1], rank))
        axes = ((-1,) if b0.ndim == 1 else ()) + ((-2,) if a0.ndim == 1 else ())
        return [squeeze(out, axes) if axes else out]


class MatrixTranspose(Op):
    """The transpose of each matrix in a stack: the last two axes swapped (NumPy's ``matrix_transpose``)."""

    batch = batching.batch_per_leading_axis

    def infer(self, x: Variable) -> list[TensorType]:
        if x.ndim < 2:
            raise self.error(ShapeError, f"needs at least 2 dimensions, got {x.ndim}", [x])
        return [TensorType(x.dtype, tuple(x.type.shape[:-2]) + (x.type.shape[-1], x.type.shape[-2]))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.swapaxes(x, -1, -2),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else _matrix_transpose(g)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else _matrix_transpose(t)]


def _matrix_transpose(x: Variable) -> Variable:
    return MatrixTranspose()(x)


def _wants_grad(var: Variable) -> bool:
    return is_float(var.dtype) and not isinstance(var, Constant)


def _sum_all_but(x: Variable, keep: int) -> Variable:
    """Sum ``x`` over every axis except ``keep`` (a negative axis); a no-op when ``x`` has one dimension."""
    kept = keep % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != kept)
    return Sum(axes, False)(x) if axes else x


def _sum_batch_to(grad: Variable, var: Variable) -> Variable:
    """``grad`` summed over the batch dimensions that broadcasting added to ``var``."""
    if grad.ndim == var.ndim and all(
        d is not None and (d != 1 or gd == 1) for d, gd in zip(var.type.shape[:-2], grad.type.shape[:-2])
    ):
        return grad
    return bc.sum_to_like(grad, var)


def _grad_left(g: Variable, a: Variable, b: Variable) -> Variable:
    """The gradient with respect to ``a`` of ``matmul(a, b)`` with output gradient ``g``."""
    if a.ndim == 1 and b.ndim == 1:
        return mul(g, b)  # g is 0-d
    if b.ndim == 1:
        return mul(expand_dims(g, -1), b)  # (..., n, 1) * (k,): a's batch is the output's
    if a.ndim == 1:
        if b.ndim == 2:
            return matmul(b, g)  # (k, m) @ (m,)
        return _sum_all_but(matmul(b, expand_dims(g, -1)), -2)  # (..., k, 1) summed to (k,)
    return _sum_batch_to(matmul(g, _matrix_transpose(b)), a)


def _grad_right(g: Variable, a: Variable, b: Variable) -> Variable:
    """The gradient with respect to ``b`` of ``matmul(a, b)`` with output gradient ``g``."""
    if a.ndim == 1 and b.ndim == 1:
        return mul(g, a)
    if a.ndim == 1:
        return mul(expand_dims(a, -1), expand_dims(g, -2))  # (k, 1) * (..., 1, m): b's batch is the output's
    if b.ndim == 1:
        if a.ndim == 2:
            return matmul(g, a)  # (n,) @ (n, k)
        return _sum_all_but(matmul(expand_dims(g, -2), a), -1)  # (..., 1, k) summed to (k,)
    return _sum_batch_to(matmul(_matrix_transpose(a), g), b)


def matmul(a: Any, b: Any) -> Variable:
    """Matrix product of two arrays (NumPy's ``matmul``, the ``@`` operator)."""
    return MatMul()(a, b)


def dot(a: Any, b: Any) -> Variable:
    """Dot product of two arrays (NumPy's ``dot``) for scalars, vectors, matrices and N-D with a vector."""
    a, b = _prepare(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return mul(a, b)
    if min(a.ndim, b.ndim) >= 2 and max(a.ndim, b.ndim) > 2:
        raise node_error(
            ShapeError,
            "dot",
            f"dot of a {a.ndim}-D and a {b.ndim}-D array is not supported: nbdiff's dot takes scalars, "
            f"vectors, matrices, and an N-D array with a vector; use nd.matmul for stacks of matrices "
            f"(it broadcasts batch dimensions instead of forming NumPy's N-D dot product)",
            [a, b],
        )
    _check_inner("dot", a, b)
    return matmul(a, b)  # for these cases NumPy's dot and matmul agree


def _flatten(x: Variable) -> Variable:
    """``x`` as a 1-D variable, in C order (what ``np.outer`` does to its operands)."""
    if x.ndim == 1:
        return x
    if x.ndim == 0:
        return expand_dims(x, 0)
    from nbdiff.ops.shape import reshape

    return reshape(x, (-1,))


def outer(a: Any, b: Any) -> Variable:
    """Outer product of two arrays, flattened first (NumPy's ``outer``): shape ``(a.size, b.size)``."""
    a, b = _prepare(a, b)
    return mul(expand_dims(_flatten(a), -1), _flatten(b))


__all__ = ["matmul", "dot", "outer"]

"""Neural-network functions built on reductions: ``logsumexp``, ``softmax`` and ``log_softmax``, and the
cross-entropy pair ``LogSoftmaxTake`` / ``LogSoftmaxTakeGrad`` that the stability pass makes of
``take_along_axis(log_softmax(x), labels)`` and its gradient.

Each is one op whose ``perform`` subtracts the slice maximum first, so inputs like ``[1000, -1000]`` give finite
results. Pullbacks and pushforwards are graph ops that only multiply and subtract bounded quantities (the softmax,
or ``exp(log_softmax)``), so they stay finite too and can be differentiated again: logsumexp's derivative is the
``Softmax`` op, softmax's and log_softmax's use the op's own output. Integer inputs give float64; float32 stays
float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.errors import ShapeError
from nbdiff.graph.basic import Apply, Op, Variable, as_variable
from nbdiff.graph.dims import broadcast_dims
from nbdiff.graph.types import TensorType, broadcast_array_shapes, broadcast_shapes, is_float, normalize_axes
from nbdiff.ops import batching
from nbdiff.ops import elemwise as ew
from nbdiff.ops.broadcast import sum_to_like
from nbdiff.ops.indexing import TakeAlongAxis, _along_axis_shape, add_at, along_axis_index
from nbdiff.ops.reduce import Sum, check_keepdims, reduced_shape, restore_axes


def _float_dtype(dtype: str) -> str:
    """The dtype these functions compute in: the input's float dtype, else float64."""
    return dtype if is_float(dtype) else "float64"


def _shifted(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``x`` in its float dtype minus its finite slice maximum (0 where the maximum is infinite or the slice empty)."""
    x = x if x.dtype.kind == "f" else x.astype("float64")  # float16 is no nbdiff dtype: floats are float32/64
    # argmax, then a gather: 8 us where max takes 20 (256 x 10); NumPy gathers with at most 63 index arrays
    if len(axes) == 1 and x.shape[axes[0]] > 0 and x.ndim <= 32:
        top = x[along_axis_index(x.shape, np.expand_dims(np.argmax(x, axis=axes[0]), axes[0]), axes[0])]
    else:
        top = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    top = np.where(np.isfinite(top), top, np.zeros((), x.dtype))
    return x - top, top


@dataclass(frozen=True, eq=False)
class LogSumExp(Op):
    """``logsumexp(x, axis, keepdims)`` = ``log(sum(exp(x)))``, computed as ``m + log(sum(exp(x - m)))``."""

    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]
    keepdims: bool = False

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(_float_dtype(x.dtype), reduced_shape(x.type.shape, self.axes, self.keepdims))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        shifted, top = _shifted(x, self.axes)
        with np.errstate(divide="ignore"):
            out = np.log(np.sum(np.exp(shifted), axis=self.axes, keepdims=True)) + top
        if not self.keepdims:
            out = out.reshape(reduced_shape(x.shape, self.axes, False))
        return (np.asarray(out),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """Like a reduction: the reduced axes disappear (or become 1 with keepdims)."""
        return [reduced_shape(input_dims[0], self.axes, self.keepdims)]

    def softmax(self, node: Apply) -> Variable:
        """The derivative of logsumexp, ``softmax(x)`` over the same axes.

        Computed from ``x`` rather than as ``exp(x - out)``: in float32, ``out`` is rounded at the scale of ``x``
        (about 6e-5 near 1000), which ``exp(x - out)`` would turn into a relative error of the same size.
        """
        return Softmax(self.axes)(node.inputs[0])

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        if g is None or not is_float(node.inputs[0].dtype):
            return [None]
        return [ew.mul(self.softmax(node), restore_axes(g, self.axes, self.keepdims))]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        if t is None or not is_float(node.inputs[0].dtype):
            return [None]
        return [Sum(self.axes, self.keepdims)(ew.mul(self.softmax(node), t))]


@dataclass(frozen=True, eq=False)
class Softmax(Op):
    """``softmax(x, axis)`` = ``exp(x) / sum(exp(x))`` over ``axes``, computed from ``exp(x - max)``."""

    nonnegative = True
    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(_float_dtype(x.dtype), x.type.shape)]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        shifted, _ = _shifted(x, self.axes)
        e = np.exp(shifted)
        return (e / np.sum(e, axis=self.axes, keepdims=True),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """The input's shape."""
        return [input_dims[0]]

    def jvp(self, node: Apply, v: Variable) -> Variable:
        """``s * v - s * sum(s * v)``: the softmax Jacobian (symmetric) applied to ``v``."""
        s = node.outputs[0]
        sv = ew.mul(s, v)
        return ew.sub(sv, ew.mul(s, Sum(self.axes, True)(sv)))

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        if g is None or not is_float(node.inputs[0].dtype):
            return [None]
        return [self.jvp(node, g)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        if t is None or not is_float(node.inputs[0].dtype):
            return [None]
        return [self.jvp(node, t)]


@dataclass(frozen=True, eq=False)
class LogSoftmax(Op):
    """``log_softmax(x, axis)`` = ``x - logsumexp(x, axis, keepdims=True)``, computed from ``x - max``."""

    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(_float_dtype(x.dtype), x.type.shape)]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        shifted, _ = _shifted(x, self.axes)
        with np.errstate(divide="ignore"):
            return (shifted - np.log(np.sum(np.exp(shifted), axis=self.axes, keepdims=True)),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """The input's shape."""
        return [input_dims[0]]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        if g is None or not is_float(node.inputs[0].dtype):
            return [None]
        softmax = ew.exp(node.outputs[0])
        return [ew.sub(g, ew.mul(softmax, Sum(self.axes, True)(g)))]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        if t is None or not is_float(node.inputs[0].dtype):
            return [None]
        softmax = ew.exp(node.outputs[0])
        return [ew.sub(t, Sum(self.axes, True)(ew.mul(softmax, t)))]


@dataclass(frozen=True, eq=False)
class LogSoftmaxTake(Op):
    """``take_along_axis(log_softmax(x, axis), indices, axis)`` for indices of size 1 along ``axis`` (the
    log-probability of one class per slice: a cross-entropy loss's terms), and ``softmax(x, axis)``.

    The stability pass makes it of that expression (``nbdiff.rewrite.stability``), as Theano's
    ``crossentropy_softmax`` ops were. The probabilities are its second output because its pullback,
    ``LogSoftmaxTakeGrad``, is ``onehot * g - softmax(x) * g``: computed once, they are not computed again."""

    batch = batching.batch_shifting_axes

    axis: int
    nout = 2  # the picked log-probabilities and the probabilities (no annotation: not a dataclass field)

    def infer(self, x: Variable, indices: Variable) -> list[TensorType]:
        shape = _one_per_slice_shape(self, x, indices)
        dtype = _float_dtype(x.dtype)
        return [TensorType(dtype, shape), TensorType(dtype, x.type.shape)]

    def perform(self, x: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shifted, _ = _shifted(x, (self.axis,))
        e = np.exp(shifted)
        total = np.sum(e, axis=self.axis, keepdims=True)
        with np.errstate(divide="ignore"):
            picked = shifted[along_axis_index(x.shape, indices, self.axis)] - np.log(total)
        return np.asarray(picked), e / total

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """The indices' shape (after broadcasting with x's other axes), then ``x``'s."""
        x_dims, index_dims = input_dims
        picked = tuple(
            i if axis == self.axis else broadcast_dims([(a,), (i,)])[0]
            for axis, (a, i) in enumerate(zip(x_dims, index_dims))
        )
        return [picked, x_dims]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        g, g_probabilities = output_grads
        x, indices = node.inputs
        if not is_float(x.dtype):
            return [None, None]
        probabilities = node.outputs[1]
        terms = []
        if g is not None:
            terms.append(LogSoftmaxTakeGrad(self.axis)(probabilities, indices, g))
        if g_probabilities is not None:
            sv = ew.mul(probabilities, g_probabilities)
            terms.append(ew.sub(sv, ew.mul(probabilities, Sum((self.axis,), True)(sv))))
        if not terms:
            return [None, None]
        return [terms[0] if len(terms) == 1 else ew.add(terms[0], terms[1]), None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        if t is None or not is_float(node.inputs[0].dtype):
            return [None, None]
        indices = node.inputs[1]
        probabilities = node.outputs[1]
        mean = Sum((self.axis,), True)(ew.mul(probabilities, t))  # the tangent's softmax-weighted mean
        return [TakeAlongAxis(self.axis)(ew.sub(t, mean), indices), ew.mul(probabilities, ew.sub(t, mean))]


@dataclass(frozen=True, eq=False)
class LogSoftmaxTakeGrad(Op):
    """The pullback of ``LogSoftmaxTake``: ``add_along_axis(p, g, indices) - p * g`` with ``p`` the softmax and
    ``g`` broadcast along ``axis`` (the probabilities minus the one-hot classes, scaled by each slice's gradient).
    ``g`` may have fewer dimensions than the indices, as in NumPy broadcasting (a mean's 0-d seed)."""

    axis: int

    def infer(self, probabilities: Variable, indices: Variable, g: Variable) -> list[TensorType]:
        taken = _one_per_slice_shape(self, probabilities, indices)
        broadcast = broadcast_shapes(self.name, g.type.shape, taken) if g.ndim <= len(taken) else None
        if broadcast is None or any(t is not None and b != t for b, t in zip(broadcast, taken)):
            detail = f"the gradient's shape {g.type.shape} does not fit indices giving {taken}"
            raise self.error(ShapeError, detail, [probabilities, g])
        return [TensorType(probabilities.dtype, probabilities.type.shape)]

    def perform(self, probabilities: np.ndarray, indices: np.ndarray, g: np.ndarray) -> tuple[np.ndarray]:
        g = g.astype(probabilities.dtype, copy=False)
        where = along_axis_index(probabilities.shape, indices, self.axis)
        taken = broadcast_array_shapes(g.shape, *(w.shape for w in where))
        if taken[: self.axis] + taken[self.axis + 1 :] == _without(probabilities.shape, self.axis):
            result = probabilities * -g
            result[where] += g  # one index per slice, each slice once: no repeated positions
            return (result,)
        # Indices broadcast past the probabilities (several read one slice): each slice's gradients add up.
        g = np.broadcast_to(g, taken)
        past = tuple(a for a, (p, t) in enumerate(zip(probabilities.shape, taken)) if a != self.axis and p != t)
        result = probabilities * -np.sum(g, axis=past, keepdims=True)
        add_at(result, where, g)
        return (result,)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """The probabilities' shape."""
        return [input_dims[0]]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (gz,) = output_grads
        probabilities, indices, g = node.inputs
        if gz is None:
            return [None, None, None]
        d_probabilities = sum_to_like(ew.negative(ew.mul(gz, g)), probabilities)
        along = Sum((self.axis,), True)(ew.mul(gz, probabilities))
        d_g = sum_to_like(ew.sub(TakeAlongAxis(self.axis)(gz, indices), along), g)
        return [d_probabilities, None, d_g]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t_probabilities, _, t_g = tangents
        probabilities, indices, g = node.inputs
        terms = []
        if t_probabilities is not None:
            terms.append(ew.negative(ew.mul(t_probabilities, g)))
        if t_g is not None:
            terms.append(LogSoftmaxTakeGrad(self.axis)(probabilities, indices, t_g))
        if not terms:
            return [None]
        return [terms[0] if len(terms) == 1 else ew.add(terms[0], terms[1])]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """Every input batched, ``g`` given the indices' rank (it may have fewer axes), the axis shifted."""
        full = [v if b else size.materialise(v) for v, b in zip(inputs, batched)]
        full[2] = batching.align(full[2], True, node.inputs[1].ndim)
        return [LogSoftmaxTakeGrad(self.axis + 1)(*full)]


def _without(shape: tuple, axis: int) -> tuple:
    return shape[:axis] + shape[axis + 1 :]


def _one_per_slice_shape(op: Op, x: Variable, indices: Variable) -> tuple:
    """``take_along_axis``'s result shape, for indices that must have size 1 along ``op.axis``."""
    shape = _along_axis_shape(op, x, indices, op.axis)
    if indices.type.shape[op.axis] != 1:
        raise op.error(
            ShapeError, f"indices must have size 1 along axis {op.axis}, got {indices.type.shape}", [x, indices]
        )
    return shape


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:
    """``log(sum(exp(x), axis))`` without overflow (SciPy's ``logsumexp``)."""
    x = as_variable(x)
    return LogSumExp(normalize_axes("logsumexp", axis, x.ndim), check_keepdims("logsumexp", keepdims))(x)


def softmax(x: Any, axis: Any = -1) -> Variable:
    """``exp(x) / sum(exp(x), axis)`` without overflow; ``axis`` defaults to the last one."""
    x = as_variable(x)
    return Softmax(normalize_axes("softmax", axis, x.ndim))(x)


def log_softmax(x: Any, axis: Any = -1) -> Variable:
    """``x - logsumexp(x, axis, keepdims=True)`` without overflow; ``axis`` defaults to the last one."""
    x = as_variable(x)
    return LogSoftmax(normalize_axes("log_softmax", axis, x.ndim))(x)


__all__ = ["logsumexp", "softmax", "log_softmax"]

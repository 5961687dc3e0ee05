"""Neural-network functions built on reductions: ``logsumexp``, ``softmax`` and ``log_softmax``.

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

from nbdiff.graph.basic import Apply, Op, Variable, as_variable
from nbdiff.graph.types import TensorType, is_float, normalize_axes
from nbdiff.ops import elemwise as ew
from nbdiff.ops.reduce import Sum, check_keepdims, reduced_shape, restore_axes


def _float_dtype(dtype: str) -> str:
    """The dtype these functions compute in: the input's float dtype, else float64."""
    return dtype if is_float(dtype) else "float64"


def _shifted(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``x`` in its float dtype minus its finite slice maximum (0 where the maximum is infinite or the slice empty)."""
    x = x if x.dtype.kind == "f" else x.astype("float64")  # float16 is no nbdiff dtype: floats are float32/64
    top = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    top = np.where(np.isfinite(top), top, np.zeros((), x.dtype))
    return x - top, top


@dataclass(frozen=True, eq=False)
class LogSumExp(Op):
    """``logsumexp(x, axis, keepdims)`` = ``log(sum(exp(x)))``, computed as ``m + log(sum(exp(x - m)))``."""

    axes: tuple[int, ...]
    keepdims: bool = False

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(_float_dtype(x.dtype), reduced_shape(x.shape, self.axes, self.keepdims))]

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

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(_float_dtype(x.dtype), x.shape)]

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

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(_float_dtype(x.dtype), x.shape)]

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

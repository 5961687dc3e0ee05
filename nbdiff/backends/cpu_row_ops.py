"""CPU op kernels over the rows of an array's last axis: ``softmax``, ``log_softmax`` and ``logsumexp`` there, and
sums over the last axis (per row) or over every axis but the last (per column, a bias gradient).

NumPy runs these as several passes over the array with a temporary per pass (max, subtract, exp, sum, divide)
and reduces short trailing axes slowly (20 us per 256 x 10 array); each kernel here is one loop nest, registered
with ``cpu_ops`` like the cross-entropy pair, and a step of the whole-plan entry point (``cpu_program``) through
its ``entry`` arguments. The ops' ``perform`` stays the reference: the same arithmetic (the slice maximum, or 0
where it is not finite, subtracted first), float32 slices accumulating their sums in float64.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nbdiff.backends.cpu_ops import Arguments, OpKernel, register, rows_expression, rows_of
from nbdiff.graph.basic import Apply
from nbdiff.graph.types import is_float
from nbdiff.ops.nnet import LogSoftmax, LogSumExp, Softmax
from nbdiff.ops.reduce import Sum, reduced_shape

# The slice maximum of row r (NaN wins, as in NumPy's maximum), or 0 where it is not finite; then the sum of the
# shifted exponentials. Shared by the three kernels of the softmax family.
_SHIFT = """\
        top = x[r, 0]
        for c in range(1, classes):
            if x[r, c] > top or x[r, c] != x[r, c]:
                top = x[r, c]
        if not math.isfinite(top):
            top = zero
        total = 0.0
        for c in range(classes):
            total += math.exp(x[r, c] - top)
"""

_HEAD = """\
def kernel(x, out):
    rows, classes = x.shape
    zero = np.zeros(1, x.dtype)[0]  # keeps float32 arithmetic float32
    for r in range(rows):
"""

_SOFTMAX = (
    _HEAD
    + _SHIFT
    + """\
        for c in range(classes):
            out[r, c] = math.exp(x[r, c] - top) / total
"""
)

_LOG_SOFTMAX = (
    _HEAD
    + _SHIFT
    + """\
        log_total = math.log(total)
        for c in range(classes):
            out[r, c] = (x[r, c] - top) - log_total
"""
)

_LOGSUMEXP = (
    _HEAD
    + _SHIFT
    + """\
        out[r] = math.log(total) + top
"""
)

# Sums of a flat C-ordered array: per row of ``out.size`` rows (the last axis), or per column of ``out.size``
# columns (every axis but the last summed); float32 accumulates in float64.
_ROW_SUM = """\
def kernel(x, out):
    rows = out.size
    columns = x.size // rows if rows else 0
    for r in range(rows):
        acc = 0.0
        for c in range(columns):
            acc += x[r * columns + c]
        out[r] = acc
"""

_COLUMN_SUM = """\
def kernel(x, out):
    columns = out.size
    rows = x.size // columns if columns else 0
    acc = np.zeros(columns, np.float64)
    for r in range(rows):
        for c in range(columns):
            acc[c] += x[r * columns + c]
    for c in range(columns):
        out[c] = acc[c]
"""


def _last_axis(node: Apply) -> bool:
    """Whether ``node``'s op works over its float input's last axis only (and the input has one)."""
    x = node.inputs[0]
    return x.ndim >= 1 and is_float(x.dtype) and tuple(node.op.axes) == (x.ndim - 1,)  # type: ignore[attr-defined]


def _non_empty_rows(shapes: Sequence[tuple[int, ...]]) -> str | None:
    """Why a softmax-family kernel does not run this input: slices without elements (``perform`` answers)."""
    return "the last axis is empty" if shapes[0][-1] == 0 else None


def _rows_kernel(node: Apply, source: str, reduces: bool) -> OpKernel:
    """An op kernel from ``x``'s rows to rows of the same length, or (``reduces``) to one value per row."""
    dtype = node.inputs[0].dtype
    out_type = f"{dtype}[::1]" if reduces else f"{dtype}[:, ::1]"

    def arguments(arrays: Sequence[np.ndarray]) -> Arguments | None:
        (x,) = arrays
        if _non_empty_rows([x.shape]) is not None:
            return None
        rows = rows_of(x)
        out = np.empty(_out_shape(node, x.shape), x.dtype)
        flat = out.reshape(-1) if reduces else out.reshape(rows.shape)
        return [rows, flat], lambda: (out,)

    def entry(inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        out = f"{outputs[0]}.ravel()" if reduces else rows_expression(outputs[0])
        return [rows_expression(inputs[0]), out]

    return OpKernel(node.op.name, source, (f"{dtype}[:, ::1]", out_type), arguments, entry, _non_empty_rows)


def _out_shape(node: Apply, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The op's output shape for an input of ``shape``: a reduction's (``logsumexp``, ``sum``), else ``shape``."""
    op = node.op
    if isinstance(op, (LogSumExp, Sum)):
        return tuple(reduced_shape(shape, op.axes, op.keepdims))
    return shape


@register(Softmax)
def _softmax(node: Apply) -> OpKernel | None:
    """``softmax`` over the last axis: one pass for the maximum, one for the sum, one writing the result."""
    return _rows_kernel(node, _SOFTMAX, reduces=False) if _last_axis(node) else None


@register(LogSoftmax)
def _log_softmax(node: Apply) -> OpKernel | None:
    """``log_softmax`` over the last axis."""
    return _rows_kernel(node, _LOG_SOFTMAX, reduces=False) if _last_axis(node) else None


@register(LogSumExp)
def _logsumexp(node: Apply) -> OpKernel | None:
    """``logsumexp`` over the last axis (keepdims or not: one value per row)."""
    return _rows_kernel(node, _LOGSUMEXP, reduces=True) if _last_axis(node) else None


@register(Sum)
def _partial_sum(node: Apply) -> OpKernel | None:
    """A float sum over the last axis (per row) or over every axis but the last (per column); whole sums are left
    to NumPy's pairwise sum (and to the entry point's own loop)."""
    x, out = node.inputs[0], node.outputs[0]
    axes = tuple(node.op.axes)  # type: ignore[attr-defined]
    if x.ndim < 2 or not is_float(x.dtype) or out.dtype != x.dtype:
        return None
    if axes == (x.ndim - 1,):
        source = _ROW_SUM
    elif axes == tuple(range(x.ndim - 1)):
        source = _COLUMN_SUM
    else:
        return None
    dtype = x.dtype

    def arguments(arrays: Sequence[np.ndarray]) -> Arguments | None:
        (value,) = arrays
        result = np.empty(_out_shape(node, value.shape), value.dtype)
        return [np.ascontiguousarray(value).reshape(-1), result.reshape(-1)], lambda: (result,)

    def entry(inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        return [f"{inputs[0]}.ravel()", f"{outputs[0]}.ravel()"]

    types = (f"{dtype}[::1]", f"{dtype}[::1]")
    return OpKernel(f"sum_{'rows' if source is _ROW_SUM else 'columns'}", source, types, arguments, entry, sums=True)

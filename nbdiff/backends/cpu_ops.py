"""The CPU target's kernels for ops that are not elementwise, registered per op class.

Elementwise ops reach compiled code through fusion (their target-neutral ``scalar_code`` becomes part of a fused
loop). An op whose work is a loop of another shape (the cross-entropy pair; later a row-wise softmax) gets a kernel
of its own here: ``@register(OpClass)`` on a function ``(node) -> OpKernel | None`` giving the text of a plain
Python function ``kernel(*inputs, *outputs)`` over arrays, ``math`` and ``np`` (Numba compiles it), the argument
types to compile it for, and an adapter from the op's inputs to the kernel's arguments. Nothing in ``ops/`` knows
about these kernels: another target keeps a registry of its own. The op's ``perform`` stays the reference: the
agreement check compares the kernel with it, and ``perform`` runs the inputs the adapter declines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nbdiff.graph.basic import Apply, Op
from nbdiff.graph.types import is_float
from nbdiff.ops.nnet import LogSoftmaxTake, LogSoftmaxTakeGrad

Arguments = tuple[list, Callable[[], tuple[np.ndarray, ...]]]


@dataclass(frozen=True)
class OpKernel:
    """One op's compiled kernel.

    ``source`` defines ``kernel(*inputs, *outputs)``, writing every output into a preallocated array;
    ``argument_types`` are Numba's type strings for its parameters in order (``"float32[:, ::1]"``, ``"int64[::1]"``);
    ``arguments(arrays)`` gives the call's arguments (output buffers included) and a function returning the op's
    outputs once the kernel has run, or None when this call's inputs do not fit (``perform`` runs then).

    For the whole-plan entry point (``cpu_program``): ``entry(inputs, outputs)`` gives the kernel's argument
    expressions from the names of the node's inputs and outputs there (C-contiguous arrays of the node's ranks and
    shapes; None: no step form), and ``fits(input_shapes)`` why the kernel does not run inputs of these shapes
    (None when it does). ``sums``: each output is a sum of the input's elements (the agreement check scales its
    tolerance by their magnitudes)."""

    name: str
    source: str
    argument_types: tuple[str, ...]
    arguments: Callable[[Sequence[np.ndarray]], Arguments | None]
    entry: Callable[[Sequence[str], Sequence[str]], list[str]] | None = None
    fits: Callable[[Sequence[tuple[int, ...]]], str | None] = lambda shapes: None
    sums: bool = False

    @property
    def signature(self) -> str:
        """The Numba signature string the kernel is compiled for."""
        return "(" + ", ".join(self.argument_types) + ")"


_KERNELS: dict[type[Op], Callable[[Apply], OpKernel | None]] = {}


def register(op_class: type[Op]) -> Callable:
    """Decorator: the function describing ``op_class``'s CPU kernel for a node."""

    def decorate(describe: Callable[[Apply], OpKernel | None]) -> Callable[[Apply], OpKernel | None]:
        _KERNELS[op_class] = describe
        return describe

    return decorate


def op_kernel(node: Apply) -> OpKernel | None:
    """The CPU kernel of ``node``'s op, None when it has none (or none for these input types)."""
    describe = _KERNELS.get(type(node.op))
    return describe(node) if describe is not None else None


def registered() -> tuple[type[Op], ...]:
    """The op classes with a CPU kernel."""
    return tuple(_KERNELS)


def rows_of(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-contiguous 2-D array of its last axis's slices (a view where it can be one)."""
    return np.ascontiguousarray(array).reshape(-1, array.shape[-1])


def one_per_row(indices: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """``indices`` (one per slice of ``x``'s last axis, shaped ``x.shape[:-1] + (1,)``) as a flat int64 array; None
    when they have another shape or dtype (e.g. broadcasting past ``x``)."""
    if indices.shape != x.shape[:-1] + (1,) or indices.dtype != np.int64:
        return None
    return np.ascontiguousarray(indices).reshape(-1)


@register(LogSoftmaxTake)
def _log_softmax_take(node: Apply) -> OpKernel | None:
    """One compiled loop over the slices along the last axis (see ``_LOG_SOFTMAX_TAKE``)."""
    op, x = node.op, node.inputs[0]
    if op.axis != x.ndim - 1 or not is_float(x.dtype) or node.inputs[1].dtype != "int64":
        return None
    types = (f"{x.dtype}[:, ::1]", "int64[::1]", f"{x.dtype}[::1]", f"{x.dtype}[:, ::1]")
    return OpKernel(op.name, _LOG_SOFTMAX_TAKE, types, _log_softmax_take_arguments, _picked_entry, _one_per_row_fits)


@register(LogSoftmaxTakeGrad)
def _log_softmax_take_grad(node: Apply) -> OpKernel | None:
    """One compiled loop over the slices along the last axis (see ``_LOG_SOFTMAX_TAKE_GRAD``)."""
    op = node.op
    probabilities, indices, _ = node.inputs
    if op.axis != probabilities.ndim - 1 or indices.dtype != "int64":
        return None
    dtype = probabilities.dtype
    types = (f"{dtype}[:, ::1]", "int64[::1]", f"{dtype}[::1]", f"{dtype}[:, ::1]")
    return OpKernel(op.name, _LOG_SOFTMAX_TAKE_GRAD, types, _log_softmax_take_grad_arguments, _picked_entry, _grad_fits)


def rows_expression(name: str) -> str:
    """In generated code: the C-contiguous array ``name`` as 2-D rows of its last axis (a view)."""
    return f"{name}.reshape((-1, {name}.shape[-1]))"


def _picked_entry(inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
    """The cross-entropy pair's arguments in the entry point: rows, flat indices (and seeds), rows or flat outputs."""
    rows, indices, *rest = inputs
    flat = [f"{name}.ravel()" for name in rest]
    shaped = [rows_expression(name) if k == len(outputs) - 1 else f"{name}.ravel()" for k, name in enumerate(outputs)]
    return [rows_expression(rows), f"{indices}.ravel()", *flat, *shaped]


def _one_per_row_fits(shapes: Sequence[tuple[int, ...]]) -> str | None:
    """Why the cross-entropy kernels do not run these shapes: one index per slice of a non-empty ``x``."""
    x, indices = shapes[0], shapes[1]
    if indices != x[:-1] + (1,) or math.prod(x) == 0:
        return f"indices of shape {indices} are not one per slice of a non-empty {x}"
    return None


def _grad_fits(shapes: Sequence[tuple[int, ...]]) -> str | None:
    """``_one_per_row_fits``, and a gradient of one element or one per slice (the kernel reads it flat)."""
    problem = _one_per_row_fits(shapes)
    if problem is None and math.prod(shapes[2]) != 1 and shapes[2] != shapes[1]:
        return f"a gradient of shape {shapes[2]} is neither one value nor one per slice"
    return problem


# The cross-entropy pair: one pass per slice of the last axis, the same arithmetic as ``perform`` (the slice
# maximum, or 0 where it is not finite, is subtracted first; a float32
# slice's sum accumulates in float64, more accurately than NumPy's float32 sum).
_LOG_SOFTMAX_TAKE = """\
def kernel(x, indices, picked, probabilities):
    rows, classes = x.shape
    zero = np.zeros(1, x.dtype)[0]  # keeps float32 arithmetic float32
    for r in range(rows):
        top = x[r, 0]
        for c in range(1, classes):
            if x[r, c] > top or x[r, c] != x[r, c]:  # NaN wins, as in NumPy's maximum
                top = x[r, c]
        if not math.isfinite(top):
            top = zero
        total = 0.0
        for c in range(classes):
            e = math.exp(x[r, c] - top)
            probabilities[r, c] = e
            total += e
        i = indices[r] + classes if indices[r] < 0 else indices[r]
        if i < 0 or i >= classes:
            raise IndexError("log_softmax_take: a class index is out of bounds")
        picked[r] = (x[r, i] - top) - math.log(total)
        for c in range(classes):
            probabilities[r, c] = probabilities[r, c] / total
"""

_LOG_SOFTMAX_TAKE_GRAD = """\
def kernel(probabilities, indices, g, out):
    rows, classes = probabilities.shape
    for r in range(rows):
        scale = g[r] if g.size == rows else g[0]  # one per slice, or one for all
        for c in range(classes):
            out[r, c] = probabilities[r, c] * -scale
        i = indices[r] + classes if indices[r] < 0 else indices[r]
        if i < 0 or i >= classes:
            raise IndexError("log_softmax_take_grad: a class index is out of bounds")
        out[r, i] += scale
"""


def _log_softmax_take_arguments(arrays: Sequence[np.ndarray]) -> Arguments | None:
    x, indices = arrays
    flat = one_per_row(indices, x)
    if flat is None or x.size == 0:
        return None
    picked = np.empty(flat.shape, x.dtype)
    probabilities = np.empty(x.shape, x.dtype)
    rows = rows_of(x)
    return [rows, flat, picked, probabilities.reshape(rows.shape)], lambda: (
        picked.reshape(indices.shape),
        probabilities,
    )


def _log_softmax_take_grad_arguments(arrays: Sequence[np.ndarray]) -> Arguments | None:
    probabilities, indices, g = arrays
    flat = one_per_row(indices, probabilities)
    if flat is None or probabilities.size == 0:
        return None
    scales = np.array(np.broadcast_to(g, indices.shape), dtype=probabilities.dtype, order="C").reshape(-1)  # writeable
    out = np.empty(probabilities.shape, probabilities.dtype)
    rows = rows_of(probabilities)
    return [rows, flat, scales, out.reshape(rows.shape)], lambda: (out,)

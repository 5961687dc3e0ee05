"""CUDA kernels of the ops that are not fused elementwise loops, registered per op class.

``cuda_op_kernel(node)`` gives the ``CudaOpKernel`` of a node, or None when no CUDA kernel handles it (the device
plan then copies its inputs to the host and runs ``op.perform``). A kernel states the module texts it uses (with
the signatures ``compile_ptx`` checks) and ``run(library, arrays)``: the op's outputs as device arrays, computed
from its inputs as device arrays, or None to decline these inputs (the plan's host fallback runs them, so
``perform`` stays the reference for every case a kernel does not cover). Registered here:

- ``MatMul``: 1-D/2-D operands of one float dtype, a tiled shared-memory kernel (no CUDA library is installed with
  the extra: cuBLAS comes with the toolkit wheels only as a C library, not callable from numba-cuda without cupy);
- ``Softmax``, ``LogSoftmax``, ``LogSumExp`` over trailing axes: one block per row;
- ``LogSoftmaxTake``, ``LogSoftmaxTakeGrad`` (the cross-entropy pair) along the last axis;
- ``Sum`` over any axes, ``SumToLike``: the reduced axes moved last (an index map), then row sums;
- data movement (reshape, transpose, expand/squeeze, broadcasts, shape assertions): ``perform`` run once per
  input shape on an index array tells where each element comes from; a C-order identity is a free reshape,
  anything else one gather;
- ``ReducedSize``: computed from the input's shape (no data moves);
- indexing: ``TakeAlongAxis`` / ``AddAlongAxis`` (indices of the array's shape but along the axis, or
  ``axis=None``), ``x[idx]`` / its gradient ``IndexAdd`` for one integer array on the first axis (gather, and a
  scatter with ``cuda.atomic.add`` so repeated indices accumulate), and basic indexing (slices, integers) as data
  movement / a scatter to the positions it reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from nbdiff.cuda import templates
from nbdiff.cuda.launch import Launch, current_limits, launch_config, rows_config
from nbdiff.graph.basic import Apply
from nbdiff.graph.types import is_float
from nbdiff.ops.broadcast import AssertShapeLike, BroadcastLike, SumToLike, _reduced_axes
from nbdiff.ops.indexing import ARRAY, AddAlongAxis, Index, IndexAdd, TakeAlongAxis
from nbdiff.ops.linalg import MatMul, MatrixTranspose
from nbdiff.ops.nnet import LogSoftmax, LogSoftmaxTake, LogSoftmaxTakeGrad, LogSumExp, Softmax
from nbdiff.ops.reduce import ReducedSize, Sum
from nbdiff.ops.shape import BroadcastTo, ExpandDims, Reshape, ReshapeLike, Squeeze, Transpose

Runner = Callable[[Any, Sequence[Any]], "tuple | None"]  # (KernelLibrary, device arrays) -> device outputs | None


@dataclass(frozen=True)
class CudaOpKernel:
    """One node's CUDA kernel: ``modules`` are ``(label, text)`` pairs of the module texts it launches,
    ``signatures`` the ``(label, function, numba signature)`` triples a PTX check compiles, ``run`` the adapter."""

    name: str
    run: Runner
    modules: tuple[tuple[str, str], ...] = ()
    signatures: tuple[tuple[str, str, str], ...] = field(default=())


_REGISTRY: dict[type, Callable[[Apply], CudaOpKernel | None]] = {}


def register(*op_classes: type) -> Callable:
    """Register a factory ``(node) -> CudaOpKernel | None`` for these op classes (exact classes)."""

    def decorate(factory: Callable[[Apply], CudaOpKernel | None]) -> Callable[[Apply], CudaOpKernel | None]:
        for cls in op_classes:
            _REGISTRY[cls] = factory
        return factory

    return decorate


def cuda_op_kernel(node: Apply) -> CudaOpKernel | None:
    """The CUDA kernel of ``node``, or None when none is registered for its op or its types."""
    factory = _REGISTRY.get(type(node.op))
    return None if factory is None else factory(node)


def registered_op_classes() -> tuple[type, ...]:
    """The op classes that have a CUDA kernel factory."""
    return tuple(_REGISTRY)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
def _size(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def _array_type(dtype: str, ndim: int) -> str:
    """A C-contiguous Numba array type: ``float32[::1]``, ``float32[:, ::1]``."""
    name = "boolean" if dtype == "bool" else dtype
    return f"{name}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


def _trailing(axes: Sequence[int], ndim: int) -> bool:
    """Whether ``axes`` are the last ``len(axes)`` axes (a row-wise op over C-order rows)."""
    return tuple(axes) == tuple(range(ndim - len(axes), ndim))


def _float_kernel_dtype(node: Apply) -> str | None:
    """The input's dtype when it is a float the outputs keep, else None (integer inputs: the interpreter)."""
    dtype = node.inputs[0].dtype
    return dtype if is_float(dtype) and all(out.dtype == dtype for out in node.outputs) else None


def flat(array: Any) -> Any:
    """A C-contiguous (device) array as 1-D (a view)."""
    return array if array.ndim == 1 else array.reshape(_size(array.shape))


def _stand_in(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A read-only host array of ``shape`` and ``dtype`` costing no memory: for ops that read only a shape."""
    return np.broadcast_to(np.zeros((), dtype), shape)


# ---------------------------------------------------------------------------------------------------------------
# Matmul
# ---------------------------------------------------------------------------------------------------------------
def matmul_tile(threads: int | None = None) -> int:
    """The tile width: the largest of 16, 8, 4 whose square fits the threads per block."""
    threads = threads or current_limits().threads
    return next(tile for tile in (16, 8, 4) if tile * tile <= threads)


@register(MatMul)
def _matmul(node: Apply) -> CudaOpKernel | None:
    a, b = node.inputs
    dtype = a.dtype
    if not is_float(dtype) or b.dtype != dtype or node.outputs[0].dtype != dtype or a.ndim > 2 or b.ndim > 2:
        return None
    tile = matmul_tile()
    source = templates.matmul_source(dtype, tile)
    label = f"matmul_{dtype}_t{tile}"
    matrix = _array_type(dtype, 2)

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        left, right = arrays
        a_shape, b_shape = tuple(left.shape), tuple(right.shape)
        out_shape = node.op.perform(_stand_in(a_shape, dtype), _stand_in(b_shape, dtype))[0].shape
        m = a_shape[0] if len(a_shape) == 2 else 1
        k = a_shape[-1]
        n = b_shape[1] if len(b_shape) == 2 else 1
        if 0 in (m, k, n):
            return None
        out = library.empty((m, n), dtype)
        module = library.template(label, source)
        grid = (min(-(-n // tile), current_limits().blocks), min(-(-m // tile), current_limits().blocks))
        module.matmul[grid, (tile, tile)](left.reshape(m, k), right.reshape(k, n), out)
        return (out.reshape(out_shape) if out_shape != (m, n) else out,)

    return CudaOpKernel(label, run, ((label, source),), ((label, "matmul", f"({matrix}, {matrix}, {matrix})"),))


# ---------------------------------------------------------------------------------------------------------------
# Row-wise ops
# ---------------------------------------------------------------------------------------------------------------
_ROW_KINDS = {Softmax: "softmax", LogSoftmax: "log_softmax", LogSumExp: "logsumexp"}


@register(Softmax, LogSoftmax, LogSumExp)
def _rowwise(node: Apply) -> CudaOpKernel | None:
    op = node.op
    x = node.inputs[0]
    dtype = _float_kernel_dtype(node)
    if dtype is None or not op.axes or not _trailing(op.axes, x.ndim):
        return None
    kind = _ROW_KINDS[type(op)]
    source = templates.row_source(kind, dtype)
    label = f"{kind}_{dtype}"

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        (value,) = arrays
        shape = tuple(value.shape)
        cols = _size(shape[len(shape) - len(op.axes) :])
        rows = _size(shape[: len(shape) - len(op.axes)])
        if cols == 0 or rows == 0:
            return None
        out_shape = node.op.perform(_stand_in(shape, dtype))[0].shape if kind == "logsumexp" else shape
        out = library.empty(rows if kind == "logsumexp" else (rows, cols), dtype)
        module = library.template(label, source)
        library.launch(module.kernel, rows_config(rows), rows, cols, value.reshape(rows, cols), out)
        return (out.reshape(out_shape),)

    out_type = _array_type(dtype, 1 if kind == "logsumexp" else 2)
    signature = f"(int64, int64, {_array_type(dtype, 2)}, {out_type})"
    return CudaOpKernel(label, run, ((label, source),), ((label, "kernel", signature),))


def _one_per_row(indices: Any, x_shape: tuple[int, ...]) -> bool:
    """Whether ``indices`` hold one int64 class per row of ``x`` (shape ``x.shape[:-1] + (1,)``)."""
    return tuple(indices.shape) == tuple(x_shape[:-1]) + (1,) and indices.dtype == np.int64


@register(LogSoftmaxTake)
def _log_softmax_take(node: Apply) -> CudaOpKernel | None:
    x, indices = node.inputs
    dtype = x.dtype
    if node.op.axis != x.ndim - 1 or not is_float(dtype) or indices.dtype != "int64":
        return None
    source = templates.row_source("log_softmax_take", dtype)
    label = f"log_softmax_take_{dtype}"

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        value, classes = arrays
        if value.size == 0 or not _one_per_row(classes, tuple(value.shape)):
            return None
        cols = tuple(value.shape)[-1]
        rows = value.size // cols
        picked = library.empty(rows, dtype)
        probabilities = library.empty((rows, cols), dtype)
        module = library.template(label, source)
        library.launch(
            module.kernel,
            rows_config(rows),
            rows,
            cols,
            value.reshape(rows, cols),
            classes.reshape(rows),
            picked,
            probabilities,
            library.error_flag(node),
        )
        return picked.reshape(tuple(classes.shape)), probabilities.reshape(tuple(value.shape))

    matrix, vector = _array_type(dtype, 2), _array_type(dtype, 1)
    signature = f"(int64, int64, {matrix}, int64[::1], {vector}, {matrix}, int32[::1])"
    return CudaOpKernel(label, run, ((label, source),), ((label, "kernel", signature),))


@register(LogSoftmaxTakeGrad)
def _log_softmax_take_grad(node: Apply) -> CudaOpKernel | None:
    probabilities, indices, g = node.inputs
    dtype = probabilities.dtype
    if node.op.axis != probabilities.ndim - 1 or not is_float(dtype) or indices.dtype != "int64" or g.dtype != dtype:
        return None
    source = templates.log_softmax_take_grad_source(dtype)
    label = f"log_softmax_take_grad_{dtype}"

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        p, classes, scale = arrays
        if p.size == 0 or not _one_per_row(classes, tuple(p.shape)):
            return None
        cols = tuple(p.shape)[-1]
        rows = p.size // cols
        if scale.size not in (1, rows) or np.broadcast_shapes(tuple(scale.shape), tuple(classes.shape)) != tuple(
            classes.shape
        ):
            return None
        out = library.empty((rows, cols), dtype)
        module = library.template(label, source)
        library.launch(
            module.kernel,
            launch_config(rows * cols),
            rows,
            cols,
            p.reshape(rows, cols),
            classes.reshape(rows),
            scale.reshape(scale.size),
            out,
            library.error_flag(node),
        )
        return (out.reshape(tuple(p.shape)),)

    matrix, vector = _array_type(dtype, 2), _array_type(dtype, 1)
    signature = f"(int64, int64, {matrix}, int64[::1], {vector}, {matrix}, int32[::1])"
    return CudaOpKernel(label, run, ((label, source),), ((label, "kernel", signature),))


# ---------------------------------------------------------------------------------------------------------------
# Sums over axes
# ---------------------------------------------------------------------------------------------------------------
def sum_axes(library: Any, value: Any, axes: Sequence[int], out_dtype: str, out_shape: tuple[int, ...]) -> Any:
    """``value`` summed over ``axes`` (any of them) into ``out_dtype``, shaped ``out_shape``: the reduced axes
    moved last by one gather (unless they already are), then one block per output element sums its row."""
    shape = tuple(value.shape)
    axes = tuple(sorted(axes))
    kept = tuple(a for a in range(len(shape)) if a not in axes)
    rows = _size([shape[a] for a in kept])
    cols = _size([shape[a] for a in axes])
    if not _trailing(axes, len(shape)):
        order = kept + axes
        index = library.index_map(
            ("sum", shape, order), lambda: np.arange(_size(shape)).reshape(shape).transpose(order)
        )
        value = library.gather(value, index, (rows * cols,))
    if rows == 0:
        return library.empty(out_shape, out_dtype)
    return library.sum_rows(value, rows, cols, out_dtype).reshape(out_shape)


@register(Sum)
def _sum(node: Apply) -> CudaOpKernel | None:
    op = node.op
    in_dtype, out_dtype = node.inputs[0].dtype, node.outputs[0].dtype

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        (value,) = arrays
        out_shape = op.perform(_stand_in(tuple(value.shape), in_dtype))[0].shape
        return (sum_axes(library, value, op.axes, out_dtype, out_shape),)

    source = templates.sum_rows_source(in_dtype, out_dtype)
    label = f"sum_rows_{in_dtype}_{out_dtype}"
    signature = f"(int64, int64, {_array_type(in_dtype, 2)}, {_array_type(out_dtype, 1)})"
    return CudaOpKernel("sum", run, ((label, source),), ((label, "sum_rows", signature),))


@register(SumToLike)
def _sum_to_like(node: Apply) -> CudaOpKernel | None:
    dtype = node.inputs[0].dtype

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        g, like = arrays
        if tuple(g.shape) == tuple(like.shape):
            return (g,)
        node.op.perform(
            _stand_in(tuple(g.shape), dtype), _stand_in(tuple(like.shape), like.dtype.name)
        )  # its shape errors
        leading, kept = _reduced_axes(tuple(g.shape), tuple(like.shape))
        return (sum_axes(library, g, leading + kept, dtype, tuple(like.shape)),)

    return CudaOpKernel("sum_to_like", run)


# ---------------------------------------------------------------------------------------------------------------
# Data movement and shape-only ops
# ---------------------------------------------------------------------------------------------------------------
# Op classes whose output is their first input's elements rearranged (the others give only a shape).
MOVEMENT_OPS = (
    Reshape,
    ReshapeLike,
    ExpandDims,
    Squeeze,
    Transpose,
    MatrixTranspose,
    BroadcastTo,
    BroadcastLike,
    AssertShapeLike,
)


@register(*MOVEMENT_OPS)
def _movement(node: Apply) -> CudaOpKernel | None:
    op = node.op
    dtypes = [v.dtype for v in node.inputs]

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        shapes = tuple(tuple(a.shape) for a in arrays)
        source = np.arange(_size(shapes[0]), dtype=np.int64).reshape(shapes[0])
        others = [_stand_in(shape, dtype) for shape, dtype in zip(shapes[1:], dtypes[1:])]
        (where,) = op.perform(source, *others)  # raises the interpreter's shape errors
        where = np.asarray(where)
        identity = where.size == source.size and where.flags.c_contiguous
        if identity and np.array_equal(where.reshape(-1), np.arange(where.size)):
            return (arrays[0].reshape(where.shape) if where.shape != shapes[0] else arrays[0],)
        index = library.index_map(("move", op, shapes), lambda: where)
        return (library.gather(arrays[0], index, where.shape),)

    return CudaOpKernel(f"move_{op.name}", run)


@register(ReducedSize)
def _reduced_size(node: Apply) -> CudaOpKernel | None:
    op = node.op

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        (value,) = arrays
        (result,) = op.perform(_stand_in(tuple(value.shape), value.dtype.name))
        return (library.constant(("reduced_size", op, tuple(value.shape)), np.asarray(result)),)

    return CudaOpKernel("reduced_size", run)


# ---------------------------------------------------------------------------------------------------------------
# Indexing: gathers and scatter-adds along one axis
# ---------------------------------------------------------------------------------------------------------------
def _take_signatures(label: str, dtype: str) -> tuple[tuple[str, str, str], ...]:
    vector = _array_type(dtype, 1)
    signature = f"(int64, int64, int64, int64, {vector}, int64[::1], {vector}, int32[::1])"
    return ((label, "take", signature), (label, "scatter_add", signature))


def _along_view(shape: tuple[int, ...], index_shape: tuple[int, ...], axis: int | None) -> tuple[int, ...] | None:
    """``(outer, n, m, inner)`` viewing an array of ``shape`` and indices of ``index_shape`` along ``axis`` (None:
    the flattened array), or None when the indices do not have the array's shape off the axis (broadcasting)."""
    if axis is None:
        return 1, _size(shape), _size(index_shape), 1
    if len(index_shape) != len(shape) or any(a != b for d, (a, b) in enumerate(zip(shape, index_shape)) if d != axis):
        return None
    return _size(shape[:axis]), shape[axis], index_shape[axis], _size(shape[axis + 1 :])


def _first_axis_array(node: Apply) -> bool:
    """Whether an ``Index``/``IndexAdd`` node indexes with exactly one integer array on the first axis."""
    arrays = node.inputs[2:] if isinstance(node.op, IndexAdd) else node.inputs[1:]
    return tuple(node.op.items) == (ARRAY,) and len(arrays) == 1 and arrays[0].dtype not in ("bool",)


def _gathered(library: Any, label: str, dtype: str, node: Apply, view: tuple[int, ...], x: Any, idx: Any, shape):
    """``take`` over ``view`` (``(outer, n, m, inner)``) into a new array of ``shape``."""
    outer, n, m, inner = view
    out = library.empty(outer * m * inner, dtype)
    if out.size:
        module = library.template(label, take_source_of(dtype))
        library.launch(
            module.take, launch_config(out.size), outer, n, m, inner, flat(x), flat(idx), out, library.error_flag(node)
        )
    return out.reshape(shape)


def _scattered(library: Any, label: str, dtype: str, node: Apply, view: tuple[int, ...], g: Any, idx: Any, shape):
    """``scatter_add`` of ``g`` over ``view`` into zeros of ``shape``."""
    outer, n, m, inner = view
    out = library.full(_size(shape), dtype, 0)
    if outer * m * inner:
        module = library.template(label, take_source_of(dtype))
        library.launch(
            module.scatter_add,
            launch_config(outer * m * inner),
            outer,
            n,
            m,
            inner,
            flat(g),
            flat(idx),
            out,
            library.error_flag(node),
        )
    return out.reshape(shape)


def take_source_of(dtype: str) -> str:
    """The gather/scatter module text of ``dtype`` (``templates.take_source``)."""
    return templates.take_source(dtype)


@register(TakeAlongAxis, AddAlongAxis)
def _along_axis(node: Apply) -> CudaOpKernel | None:
    op = node.op
    dtype = node.outputs[0].dtype
    scatter = isinstance(op, AddAlongAxis)
    if not is_float(dtype) or node.inputs[-1].dtype == "bool":
        return None
    label = f"take_{dtype}"

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        if scatter:
            x, g, idx = arrays
            if tuple(g.shape) != tuple(idx.shape) or g.dtype.name != dtype:
                return None
        else:
            x, idx = arrays
        view = _along_view(tuple(x.shape), tuple(idx.shape), op.axis)
        if view is None:
            return None
        if scatter:
            return (_scattered(library, label, dtype, node, view, g, idx, tuple(x.shape)),)
        return (_gathered(library, label, dtype, node, view, x, idx, tuple(idx.shape)),)

    return CudaOpKernel(label, run, ((label, take_source_of(dtype)),), _take_signatures(label, dtype))


@register(Index, IndexAdd)
def _index(node: Apply) -> CudaOpKernel | None:
    op = node.op
    dtype = node.outputs[0].dtype
    scatter = isinstance(op, IndexAdd)
    basic = len(node.inputs) == (2 if scatter else 1)  # no array among the items: slices, integers, None, ...
    if basic and not scatter:
        return _movement(node)
    if not is_float(dtype) or not (basic or _first_axis_array(node)):
        return None
    label = f"take_{dtype}"

    def run(library: Any, arrays: Sequence[Any]) -> tuple | None:
        x = arrays[0]
        shape = tuple(x.shape)
        if basic:  # the positions basic indexing reads, each once: scatter g there
            g = arrays[1]
            (where,) = Index(op.items).perform(np.arange(_size(shape), dtype=np.int64).reshape(shape))
            if tuple(g.shape) != tuple(np.shape(where)) or g.dtype.name != dtype:
                return None
            positions = library.index_map(("index_add", op, shape), lambda: np.asarray(where))
            view = (1, _size(shape), int(np.size(where)), 1)
            return (_scattered(library, label, dtype, node, view, g, positions, shape),)
        idx = arrays[-1]
        if not shape:
            return None
        view = (1, shape[0], int(idx.size), _size(shape[1:]))
        taken_shape = tuple(idx.shape) + shape[1:]
        if scatter:
            g = arrays[1]
            if tuple(g.shape) != taken_shape or g.dtype.name != dtype:
                return None
            return (_scattered(library, label, dtype, node, view, g, idx, shape),)
        return (_gathered(library, label, dtype, node, view, x, idx, taken_shape),)

    return CudaOpKernel(label, run, ((label, take_source_of(dtype)),), _take_signatures(label, dtype))


__all__ = ["CudaOpKernel", "cuda_op_kernel", "register", "registered_op_classes", "sum_axes", "matmul_tile", "Launch"]

"""Shape ops: reshape, transpose, expand_dims, squeeze, broadcast_to, concatenate, stack, diag, and ``arange``.

Every op here is linear: its pushforward applies the same op to the tangent, and its pullback is the adjoint shape
op (reshape back, inverse permutation, split, unstack, embed a diagonal). Static shapes are exact wherever the
inputs' are; dimensions known only at run time stay ``None`` and are checked when the graph runs. Ops with a
variable number of outputs (``Split``, ``Unstack``) are built with ``make_node`` and give their ``outputs``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.errors import AxisError, DTypeError, GraphError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable, constant
from nbdiff.graph.types import TensorType, as_dtype, normalize_axes, numpy_result_dtype, static_shape
from nbdiff.ops import batching, sizes
from nbdiff.ops import broadcast as bc


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
def _known_size(shape: tuple) -> int | None:
    """Number of elements when the static shape fixes it (every dimension known, or one of them 0)."""
    if 0 in shape:
        return 0
    if None in shape:
        return None
    return math.prod(shape)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _axis(op_name: str, axis: object, ndim: int, inputs: Sequence[object]) -> int:
    """One axis (negatives allowed) as a non-negative int below ``ndim``; AxisError otherwise."""
    if not _is_int(axis):
        raise node_error(AxisError, op_name, f"axis must be an int, got {axis!r}", inputs)
    if not -ndim <= axis < ndim:  # type: ignore[operator]
        raise node_error(AxisError, op_name, f"axis {axis} is out of bounds for {ndim} dimension(s)", inputs)
    return int(axis) % ndim  # type: ignore[call-overload]


def _common_dims(op: Op, inputs: Sequence[Variable], skip: int | None) -> list[int | None]:
    """Per axis (except ``skip``), the dimension all inputs share: known ones must agree, unknown ones defer."""
    shape: list[int | None] = [None] * inputs[0].ndim
    owner: list[int] = [0] * inputs[0].ndim
    for position, var in enumerate(inputs):
        for axis, dim in enumerate(var.type.shape):
            if axis == skip or dim is None:
                continue
            if shape[axis] is None:
                shape[axis], owner[axis] = dim, position
            elif shape[axis] != dim:
                first = inputs[owner[axis]]
                raise op.error(
                    ShapeError,
                    f"input {owner[axis]} has shape {first.type.shape} but input {position} has shape {var.type.shape} "
                    f"(dimension {axis} differs)",
                    [first, var],
                )
    return shape


def _same_ndim(op: Op, inputs: Sequence[Variable]) -> int:
    """The inputs' common number of dimensions; ShapeError when there are none or they differ."""
    if not inputs:
        raise op.error(ShapeError, "needs at least one input")
    ndim = inputs[0].ndim
    for position, var in enumerate(inputs):
        if var.ndim != ndim:
            raise op.error(
                ShapeError,
                f"all inputs must have the same number of dimensions, but input 0 has {ndim} and input "
                f"{position} has {var.ndim}",
                [inputs[0], var],
            )
    return ndim


def _first_mismatch(arrays: Sequence[np.ndarray], skip: int | None) -> str:
    """Name the first run-time array whose shape (outside axis ``skip``) differs from array 0's."""

    def key(shape: tuple) -> tuple:
        return tuple(d for axis, d in enumerate(shape) if axis != skip)

    for position, array in enumerate(arrays):
        if array.ndim != arrays[0].ndim or key(array.shape) != key(arrays[0].shape):
            return f"array 0 has shape {arrays[0].shape} but array {position} has shape {array.shape}"
    return f"shapes {[a.shape for a in arrays]}"


def _joined(*arrays: np.ndarray) -> np.ndarray:
    """The dtype rule of concatenate and stack (NumPy's result type), applied by ``numpy_result_dtype``."""
    return np.concatenate(arrays)


def _fill_missing(values: Sequence[Variable | None], likes: Sequence[Variable], dtype: str | None) -> list[Variable]:
    """``values`` with zeros (shaped like the matching ``likes``) in place of the missing (None) ones."""
    return [bc.zeros_like(like, dtype) if value is None else value for value, like in zip(values, likes)]


def _array_list(op_name: str, arrays: Any) -> list[Variable]:
    """The list argument of concatenate/stack as variables; a single variable or an empty list is an error."""
    if isinstance(arrays, Variable):
        raise node_error(
            GraphError, op_name, "expected a list of arrays, got a single variable; wrap it in a list", [arrays]
        )
    if not isinstance(arrays, (list, tuple)):
        raise node_error(GraphError, op_name, f"expected a list of arrays, got {type(arrays).__name__}")
    if not arrays:
        raise node_error(ShapeError, op_name, "needs at least one array")
    return [as_variable(a) for a in arrays]


# ---------------------------------------------------------------------------------------------------------------
# reshape
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Reshape(Op):
    """``reshape(x, shape)``: the same elements in a new shape; one entry may be -1 (inferred)."""

    shape: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(x.dtype, self.static_shape(x))]

    def static_shape(self, x: Variable) -> tuple:
        """The result's static shape: -1 resolved when x's size is known, ``None`` otherwise."""
        total = _known_size(x.type.shape)
        if -1 not in self.shape:
            target = math.prod(self.shape)
            known = math.prod(d for d in x.type.shape if d is not None)
            if (total is not None and total != target) or (total is None and target % known):
                raise self.error(ShapeError, f"cannot reshape shape {x.type.shape} into shape {self.shape}", [x])
            return self.shape
        rest = math.prod(d for d in self.shape if d != -1)
        if rest == 0:
            raise self.error(ShapeError, f"cannot infer the -1 in shape {self.shape}: the other entries are 0", [x])
        if total is None:
            return tuple(None if d == -1 else d for d in self.shape)
        if total % rest:
            raise self.error(
                ShapeError, f"cannot reshape shape {x.type.shape} ({total} elements) into shape {self.shape}", [x]
            )
        return tuple(total // rest if d == -1 else d for d in self.shape)

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        try:
            return (x.reshape(self.shape),)
        except ValueError:
            raise ValueError(f"cannot reshape an array of shape {x.shape} into shape {self.shape}") from None

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else _reshape_to(g, node.inputs[0])]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else Reshape(self.shape)(t)]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """``(batch, *shape)``; a -1 that static sizes cannot resolve follows the first batch element's result."""
        shape = self.shape
        if -1 in shape:
            shape = self.static_shape(node.inputs[0])
        if None not in shape:
            return [Reshape((-1, *shape))(inputs[0])]
        if size.static is not None:
            return [Reshape((size.static, *self.shape))(inputs[0])]
        first = Reshape(self.shape)(inputs[0][0])  # one element's result: its run-time shape is every element's
        return [ReshapeLike()(inputs[0], size.materialise(first))]


class ReshapeLike(Op):
    """``reshape_like(g, x)``: ``g`` reshaped to ``x``'s run-time shape (reshape's gradient when x has unknown dims)."""

    batch = batching.batch_per_leading_axis

    def infer(self, g: Variable, like: Variable) -> list[TensorType]:
        sizes = _known_size(g.type.shape), _known_size(like.type.shape)
        if None not in sizes and sizes[0] != sizes[1]:
            raise self.error(ShapeError, f"cannot reshape shape {g.type.shape} into shape {like.type.shape}", [g, like])
        return [TensorType(g.dtype, like.type.shape)]

    def perform(self, g: np.ndarray, like: np.ndarray) -> tuple[np.ndarray]:
        try:
            return (g.reshape(like.shape),)
        except ValueError:
            raise ValueError(f"cannot reshape an array of shape {g.shape} into shape {like.shape}") from None

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (gz,) = output_grads
        return [None if gz is None else _reshape_to(gz, node.inputs[0]), None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        return [None if t is None else ReshapeLike()(t, node.inputs[1])]


def _reshape_to(g: Variable, like: Variable) -> Variable:
    """``g`` reshaped to ``like``'s shape: a static reshape when that shape is known, else a run-time one."""
    if None not in like.type.shape:
        return reshape(g, like.type.shape)
    return ReshapeLike()(g, like)


def reshape(x: Any, shape: Any) -> Variable:
    """``x`` with a new shape (ints or size scalars such as ``x.shape[0]``; one entry may be -1), as NumPy's
    ``reshape``."""
    x = as_variable(x)
    entries = sizes.size_entries("reshape", shape, [x], allow_minus_one=True)
    if isinstance(entries, list):
        return sizes.SizedReshape()(x, *entries)
    op = Reshape(entries)
    target = op.static_shape(x)
    if None not in target:
        if target == x.type.shape:
            return x
        op = Reshape(target)  # -1 resolved: reshape(x, (-1,)) and reshape(x, (6,)) are one node
    return op(x)


# ---------------------------------------------------------------------------------------------------------------
# transpose, expand_dims, squeeze
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Transpose(Op):
    """``transpose(x, axes)``: result axis ``i`` is input axis ``axes[i]``."""

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        if sorted(self.axes) != list(range(x.ndim)):
            raise self.error(AxisError, f"axes {self.axes} are not a permutation of {x.ndim} dimension(s)", [x])
        return [TensorType(x.dtype, tuple(x.type.shape[a] for a in self.axes))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.transpose(x, self.axes),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        inverse = tuple(int(a) for a in np.argsort(self.axes))
        return [None if g is None else Transpose(inverse)(g)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else Transpose(self.axes)(t)]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """The batch axis stays in front; the permutation moves one place right."""
        return [Transpose((0, *(a + 1 for a in self.axes)))(inputs[0])]


def transpose(x: Any, axes: Sequence[int] | None = None) -> Variable:
    """``x`` with its axes permuted (``axes=None`` reverses them), as NumPy's ``transpose``."""
    x = as_variable(x)
    if axes is None:
        permutation = tuple(reversed(range(x.ndim)))
    else:
        items = tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)
        if len(items) != x.ndim:
            raise node_error(AxisError, "transpose", f"axes {axes!r} do not match {x.ndim} dimension(s)", [x])
        permutation = tuple(_axis("transpose", a, x.ndim, [x]) for a in items)
        if len(set(permutation)) != len(permutation):
            raise node_error(AxisError, "transpose", f"repeated axis in {axes!r}", [x])
    if permutation == tuple(range(x.ndim)):
        return x
    return Transpose(permutation)(x)


@dataclass(frozen=True, eq=False)
class ExpandDims(Op):
    """``expand_dims(x, axis)``: insert length-1 dimensions at ``axes`` (positions in the result)."""

    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        shape = list(x.type.shape)
        for axis in self.axes:
            if not 0 <= axis <= len(shape):
                raise self.error(AxisError, f"axis {axis} is out of bounds for the result's dimensions", [x])
            shape.insert(axis, 1)
        return [TensorType(x.dtype, tuple(shape))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.expand_dims(x, self.axes),)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        dims = list(input_dims[0])
        for axis in self.axes:
            dims.insert(axis, 1)
        return [tuple(dims)]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else Squeeze(self.axes)(g)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else ExpandDims(self.axes)(t)]


def expand_dims(x: Any, axis: Any) -> Variable:
    """Insert length-1 dimensions at ``axis`` (int or tuple), as NumPy does."""
    x = as_variable(x)
    count = len(axis) if isinstance(axis, (tuple, list)) else 1
    axes = normalize_axes("expand_dims", axis, x.ndim + count)
    return ExpandDims(axes)(x) if axes else x


@dataclass(frozen=True, eq=False)
class Squeeze(Op):
    """``squeeze(x, axis)``: remove the length-1 dimensions ``axes`` (unknown ones are checked at run time)."""

    batch = batching.batch_shifting_axes

    axes: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        for axis in self.axes:
            if not 0 <= axis < x.ndim:
                raise self.error(AxisError, f"axis {axis} is out of bounds for {x.ndim} dimension(s)", [x])
            if x.type.shape[axis] not in (1, None):
                raise self.error(
                    ShapeError, f"cannot squeeze axis {axis}: its length is {x.type.shape[axis]}, not 1", [x]
                )
        return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.type.shape) if i not in self.axes))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        for axis in self.axes:
            if x.shape[axis] != 1:
                raise ValueError(f"cannot squeeze axis {axis} of an array of shape {x.shape}: its length is not 1")
        return (np.squeeze(x, axis=self.axes),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else ExpandDims(self.axes)(g)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else Squeeze(self.axes)(t)]


def squeeze(x: Any, axis: Any = None) -> Variable:
    """Remove length-1 dimensions; ``axis=None`` removes those statically known to be 1, as NumPy does."""
    x = as_variable(x)
    if axis is None:
        axes = tuple(i for i, d in enumerate(x.type.shape) if d == 1)
    else:
        axes = normalize_axes("squeeze", axis, x.ndim)
    return Squeeze(axes)(x) if axes else x


# ---------------------------------------------------------------------------------------------------------------
# broadcast_to
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BroadcastTo(Op):
    """``broadcast_to(x, shape)``: ``x`` repeated along its length-1 and missing leading axes to ``shape``."""

    shape: tuple[int, ...]

    def infer(self, x: Variable) -> list[TensorType]:
        lead = len(self.shape) - x.ndim
        if lead < 0:
            raise self.error(
                ShapeError, f"cannot broadcast shape {x.type.shape} to the shorter shape {self.shape}", [x]
            )
        for axis, dim in enumerate(x.type.shape):
            target = self.shape[lead + axis]
            if dim is not None and dim not in (1, target):
                raise self.error(
                    ShapeError,
                    f"cannot broadcast shape {x.type.shape} to shape {self.shape} (dimension {axis} is {dim}, "
                    f"not 1 or {target})",
                    [x],
                )
        return [TensorType(x.dtype, self.shape)]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        try:
            return (np.broadcast_to(x, self.shape),)
        except ValueError:
            raise ValueError(f"cannot broadcast an array of shape {x.shape} to shape {self.shape}") from None

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else bc.sum_to_like(g, node.inputs[0])]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else BroadcastTo(self.shape)(t)]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """Broadcast against a ``(1, *shape)`` template, so the batch axis keeps its run-time length."""
        from nbdiff.ops.batching import align

        template = BroadcastTo((1, *self.shape))(constant(0, node.out.dtype))
        return [bc.broadcast_like(align(inputs[0], True, len(self.shape)), template)]


def broadcast_to(x: Any, shape: Any) -> Variable:
    """``x`` broadcast to ``shape`` (ints or size scalars), as NumPy's ``broadcast_to``."""
    x = as_variable(x)
    entries = sizes.size_entries("broadcast_to", shape, [x], allow_minus_one=False)
    if isinstance(entries, list):
        return sizes.SizedBroadcastTo()(x, *entries)
    target = static_shape("broadcast_to", entries, x.dtype, [x])
    if target == x.type.shape:
        return x
    return BroadcastTo(target)(x)


# ---------------------------------------------------------------------------------------------------------------
# concatenate and split
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Concatenate(Op):
    """``concatenate(xs, axis)``: the inputs joined along an existing axis; dtype is NumPy's result type."""

    batch = batching.batch_shifting_axes

    axis: int

    def infer(self, *inputs: Variable) -> list[TensorType]:
        ndim = _same_ndim(self, inputs)
        if ndim == 0:
            raise self.error(ShapeError, "zero-dimensional arrays cannot be concatenated", inputs[:1])
        if not 0 <= self.axis < ndim:
            raise self.error(AxisError, f"axis {self.axis} is out of bounds for {ndim} dimension(s)", inputs[:1])
        shape = _common_dims(self, inputs, skip=self.axis)
        along = [v.type.shape[self.axis] for v in inputs]
        shape[self.axis] = None if None in along else sum(along)  # type: ignore[arg-type]
        return [TensorType(numpy_result_dtype(_joined, *(v.dtype for v in inputs)), tuple(shape))]

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray]:
        try:
            return (np.concatenate(arrays, axis=self.axis),)
        except ValueError:
            mismatch = _first_mismatch(arrays, self.axis)
            raise ValueError(f"cannot concatenate along axis {self.axis}: {mismatch}") from None

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        if g is None:
            return [None] * len(node.inputs)
        return split_like(g, node.inputs, self.axis)

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        if all(t is None for t in tangents):
            return [None]
        return [Concatenate(self.axis)(*_fill_missing(tangents, node.inputs, node.out.dtype))]


@dataclass(frozen=True, eq=False)
class Split(Op):
    """``split(x, *likes)``: ``x`` cut along ``axis`` into pieces as long as each ``like`` (concatenate's adjoint)."""

    batch = batching.batch_shifting_axes

    axis: int

    def infer(self, x: Variable, *likes: Variable) -> list[TensorType]:
        if not likes:
            raise self.error(ShapeError, "needs at least one piece", [x])
        if not 0 <= self.axis < x.ndim:
            raise self.error(AxisError, f"axis {self.axis} is out of bounds for {x.ndim} dimension(s)", [x])
        if any(like.ndim != x.ndim for like in likes):
            raise self.error(ShapeError, "every piece must have the dimensions of the split input", [x, *likes])
        sizes = [like.type.shape[self.axis] for like in likes]
        if None not in sizes and x.type.shape[self.axis] is not None and sum(sizes) != x.type.shape[self.axis]:
            raise self.error(
                ShapeError,
                f"pieces of lengths {sizes} do not add up to axis {self.axis} of shape {x.type.shape}",
                [x, *likes],
            )
        before, after = x.type.shape[: self.axis], x.type.shape[self.axis + 1 :]
        return [TensorType(x.dtype, (*before, size, *after)) for size in sizes]

    def perform(self, x: np.ndarray, *likes: np.ndarray) -> tuple[np.ndarray, ...]:
        sizes = [like.shape[self.axis] for like in likes]
        if sum(sizes) != x.shape[self.axis]:
            raise ValueError(f"pieces of lengths {sizes} do not add up to axis {self.axis} of shape {x.shape}")
        return tuple(np.split(x, list(itertools.accumulate(sizes[:-1])), axis=self.axis))

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        none = [None] * (len(node.inputs) - 1)
        if all(g is None for g in output_grads):
            return [None, *none]
        return [Concatenate(self.axis)(*_fill_missing(output_grads, node.outputs, None)), *none]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        if tangents[0] is None:
            return [None] * len(node.outputs)
        return split_like(tangents[0], node.inputs[1:], self.axis)


def split_like(x: Variable, likes: Sequence[Variable], axis: int) -> list[Variable]:
    """``x`` cut along ``axis`` into pieces as long as each of ``likes`` along that axis (at run time)."""
    return list(Split(axis).make_node(x, *likes).outputs)


def concatenate(arrays: Sequence[Any], axis: int | None = 0) -> Variable:
    """Join a list of arrays along an existing axis (``axis=None`` flattens them first), as NumPy does."""
    xs = _array_list("concatenate", arrays)
    if axis is None:
        xs = [reshape(x, (-1,)) for x in xs]
        axis = 0
    if xs[0].ndim == 0:
        raise node_error(ShapeError, "concatenate", "zero-dimensional arrays cannot be concatenated", xs[:1])
    return Concatenate(_axis("concatenate", axis, xs[0].ndim, xs[:1]))(*xs)


# ---------------------------------------------------------------------------------------------------------------
# stack and unstack
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Stack(Op):
    """``stack(xs, axis)``: equally shaped inputs joined along a new axis at position ``axis`` of the result."""

    batch = batching.batch_shifting_axes

    axis: int

    def infer(self, *inputs: Variable) -> list[TensorType]:
        ndim = _same_ndim(self, inputs)
        if not 0 <= self.axis <= ndim:
            raise self.error(AxisError, f"axis {self.axis} is out of bounds for {ndim + 1} dimension(s)", inputs[:1])
        shape = _common_dims(self, inputs, skip=None)
        shape.insert(self.axis, len(inputs))
        return [TensorType(numpy_result_dtype(_joined, *(v.dtype for v in inputs)), tuple(shape))]

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray]:
        try:
            return (np.stack(arrays, axis=self.axis),)
        except ValueError:
            mismatch = _first_mismatch(arrays, None)
            raise ValueError(f"cannot stack arrays of different shapes: {mismatch}") from None

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        if g is None:
            return [None] * len(node.inputs)
        return unstack(g, len(node.inputs), self.axis)

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        if all(t is None for t in tangents):
            return [None]
        return [Stack(self.axis)(*_fill_missing(tangents, node.inputs, node.out.dtype))]


@dataclass(frozen=True, eq=False)
class Unstack(Op):
    """``unstack(x, count, axis)``: the ``count`` slices of ``x`` along ``axis`` (stack's adjoint)."""

    batch = batching.batch_shifting_axes

    axis: int
    count: int

    def infer(self, x: Variable) -> list[TensorType]:
        if not 0 <= self.axis < x.ndim:
            raise self.error(AxisError, f"axis {self.axis} is out of bounds for {x.ndim} dimension(s)", [x])
        if x.type.shape[self.axis] not in (None, self.count):
            raise self.error(
                ShapeError, f"axis {self.axis} has length {x.type.shape[self.axis]}, not {self.count}", [x]
            )
        shape = x.type.shape[: self.axis] + x.type.shape[self.axis + 1 :]
        return [TensorType(x.dtype, shape)] * self.count

    def perform(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        if x.shape[self.axis] != self.count:
            raise ValueError(f"axis {self.axis} of shape {x.shape} has length {x.shape[self.axis]}, not {self.count}")
        return tuple(np.asarray(piece) for piece in np.moveaxis(x, self.axis, 0))

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        if all(g is None for g in output_grads):
            return [None]
        return [Stack(self.axis)(*_fill_missing(output_grads, node.outputs, None))]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        if t is None:
            return [None] * self.count
        return unstack(t, self.count, self.axis)


def unstack(x: Variable, count: int, axis: int) -> list[Variable]:
    """The ``count`` slices of ``x`` along ``axis`` (a non-negative axis whose length is ``count``)."""
    return list(Unstack(axis, count).make_node(x).outputs)


def stack(arrays: Sequence[Any], axis: int = 0) -> Variable:
    """Join a list of equally shaped arrays along a new axis, as NumPy's ``stack``."""
    xs = _array_list("stack", arrays)
    return Stack(_axis("stack", axis, xs[0].ndim + 1, xs[:1]))(*xs)


# ---------------------------------------------------------------------------------------------------------------
# diag
# ---------------------------------------------------------------------------------------------------------------
def _diagonal_length(shape: tuple, k: int) -> int | None:
    """Length of diagonal ``k`` of a matrix of static ``shape`` (None when a dimension is unknown)."""
    rows, cols = shape
    if rows is None or cols is None:
        return None
    return max(0, min(rows, cols - k) if k >= 0 else min(rows + k, cols))


@dataclass(frozen=True, eq=False)
class DiagMatrix(Op):
    """``diag(v, k)`` of a vector: a square matrix with ``v`` on diagonal ``k`` and zeros elsewhere."""

    k: int

    @property
    def name(self) -> str:
        return "diag"

    def infer(self, v: Variable) -> list[TensorType]:
        if v.ndim != 1:
            raise self.error(ShapeError, f"expected a vector, got {v.ndim} dimension(s)", [v])
        size = None if v.type.shape[0] is None else v.type.shape[0] + abs(self.k)
        return [TensorType(v.dtype, (size, size))]

    def perform(self, v: np.ndarray) -> tuple[np.ndarray]:
        return (np.diag(v, self.k),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else Diagonal(self.k)(g)]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else DiagMatrix(self.k)(t)]


@dataclass(frozen=True, eq=False)
class Diagonal(Op):
    """``diag(x, k)`` of a matrix: its diagonal ``k`` as a vector."""

    k: int

    def infer(self, x: Variable) -> list[TensorType]:
        if x.ndim != 2:
            raise self.error(ShapeError, f"expected a matrix, got {x.ndim} dimension(s)", [x])
        return [TensorType(x.dtype, (_diagonal_length(x.type.shape, self.k),))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.diagonal(x, self.k),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else EmbedDiagonal(self.k)(g, node.inputs[0])]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        (t,) = tangents
        return [None if t is None else Diagonal(self.k)(t)]


@dataclass(frozen=True, eq=False)
class EmbedDiagonal(Op):
    """``embed_diagonal(v, x)``: zeros shaped like matrix ``x`` with ``v`` on diagonal ``k`` (diagonal's adjoint)."""

    k: int

    def infer(self, v: Variable, like: Variable) -> list[TensorType]:
        if v.ndim != 1 or like.ndim != 2:
            raise self.error(ShapeError, "expected a vector and a matrix", [v, like])
        length = _diagonal_length(like.type.shape, self.k)
        if None not in (length, v.type.shape[0]) and length != v.type.shape[0]:
            raise self.error(
                ShapeError,
                f"diagonal {self.k} of shape {like.type.shape} has length {length}, not {v.type.shape[0]}",
                [v, like],
            )
        return [TensorType(v.dtype, like.type.shape)]

    def perform(self, v: np.ndarray, like: np.ndarray) -> tuple[np.ndarray]:
        length = _diagonal_length(like.shape, self.k)
        if v.shape[0] != length:
            raise ValueError(f"diagonal {self.k} of shape {like.shape} has length {length}, not {v.shape[0]}")
        result = np.zeros(like.shape, dtype=v.dtype)
        index = np.arange(length)
        result[index + max(0, -self.k), index + max(0, self.k)] = v
        return (result,)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        return [None if g is None else Diagonal(self.k)(g), None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        return [None if t is None else EmbedDiagonal(self.k)(t, node.inputs[1])]


def diag(x: Any, k: int = 0) -> Variable:
    """NumPy's ``diag``: a vector gives the matrix with it on diagonal ``k``; a matrix gives its diagonal ``k``."""
    x = as_variable(x)
    if not _is_int(k):
        raise node_error(ShapeError, "diag", f"the diagonal offset k must be an int, got {k!r}", [x])
    if x.ndim == 1:
        return DiagMatrix(int(k))(x)
    if x.ndim == 2:
        return Diagonal(int(k))(x)
    raise node_error(ShapeError, "diag", f"expected a 1-d or 2-d input, got {x.ndim} dimension(s)", [x])


# ---------------------------------------------------------------------------------------------------------------
# arange: a constant, or computed when the function runs when it is large
# ---------------------------------------------------------------------------------------------------------------
ARANGE_CONSTANT_MAX = 1 << 16  # elements; a larger arange is an ``Arange`` node, never allocated while building


def arange(start: float, stop: float | None = None, step: float = 1, dtype: object = None) -> Variable:
    """Evenly spaced values with NumPy's ``arange`` arguments and dtype rule: a constant when small, else a node
    that computes them when the function runs (building a graph never allocates a huge array). A bound may be a
    graph scalar such as ``x.shape[0]``: the values are then computed when the function runs."""
    start, stop, step = (_constant_number(v) for v in (start, stop, step))
    if any(isinstance(v, Variable) for v in (start, stop, step)):
        return sizes.sized_arange(0 if stop is None else start, start if stop is None else stop, step, dtype)
    for value in (start, stop, step):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
            raise node_error(DTypeError, "arange", f"start, stop and step must be numbers, got {value!r}")
    if step == 0:
        raise node_error(ShapeError, "arange", "step must not be zero")
    try:
        name = _arange_dtype(start, stop, step) if dtype is None else as_dtype(dtype)
    except DTypeError as exc:
        raise node_error(DTypeError, "arange", str(exc)) from None
    op = Arange(start, stop, step, name)
    (type_,) = op.infer()  # refuses a length or size no array can have
    if type_.shape[0] > ARANGE_CONSTANT_MAX:
        return op()
    try:
        return constant(op.perform()[0])
    except (OverflowError, ValueError, TypeError) as exc:  # a bound beyond the dtype, e.g. arange(2**70, 2**70 + 3)
        raise node_error(DTypeError, "arange", f"NumPy cannot compute it in {name}: {exc}") from None


def _constant_number(value: Any) -> Any:
    """A 0-d constant variable as its Python number (so ``arange(nd.constant(3))`` is a constant), else ``value``."""
    if isinstance(value, Constant) and value.ndim == 0:
        return value.data.item()
    return value


def _arange_dtype(start: Any, stop: Any, step: Any) -> str:
    """NumPy's dtype for ``arange(start, stop, step)`` without ``dtype=``, asked of NumPy on a tiny range of the same
    argument types (the dtype depends on the types only; NumPy's rule is not ``result_type``'s)."""
    probe = [type(start)(0), None if stop is None else type(stop)(1), type(step)(1)]
    return as_dtype(np.arange(*probe).dtype)


def _arange_length(op_name: str, start: Any, stop: Any, step: Any) -> int:
    """The number of values NumPy's ``arange`` gives (``ceil((stop - start) / step)``, at least 0), computed without
    building them; ``ShapeError`` when it is not finite."""
    if stop is None:
        start, stop = 0, start
    try:
        with np.errstate(all="raise"):
            length = math.ceil((stop - start) / step)
    except (OverflowError, ValueError, ArithmeticError, FloatingPointError):
        raise node_error(ShapeError, op_name, f"cannot compute the length of arange({start}, {stop}, {step})") from None
    return max(length, 0)


@dataclass(frozen=True, eq=False)
class Arange(Op):
    """``arange(start, stop, step)`` of ``dtype``, computed when the graph runs: no inputs, a static length.

    ``nd.arange`` builds one when the values are too many to hold as a constant; a length NumPy cannot allocate at
    run time fails at the call, naming the user's line."""

    start: Any
    stop: Any
    step: Any
    dtype: str

    def infer(self) -> list[TensorType]:
        length = _arange_length(self.name, self.start, self.stop, self.step)
        return [TensorType(self.dtype, static_shape(self.name, (length,), self.dtype))]

    def perform(self) -> tuple[np.ndarray]:
        return (np.arange(self.start, self.stop, self.step, dtype=self.dtype),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        return []  # no inputs

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        return [None]  # a constant: no tangent


__all__ = [
    "arange",
    "broadcast_to",
    "concatenate",
    "diag",
    "expand_dims",
    "reshape",
    "squeeze",
    "stack",
    "transpose",
]

"""Shapes as values: ``x.shape[i]`` as a graph scalar, ``nd.shape(x)``, and the ops whose sizes may be such scalars
(``full``/``zeros``/``ones``, ``arange``, ``reshape``, ``broadcast_to``).

A dimension known when the graph is built is a Python int; an unknown one is ``ShapeAt(axis)(x)``, a 0-d int64
variable. A size argument may mix both (and any 0-d integer variable). Where every size is a known int, the static
ops of ``nbdiff.ops.shape`` are built as before; otherwise the ``Sized*`` ops here take the sizes as extra inputs.
Their static shapes keep every size that is constant, and ``ShapeFacts`` reads the sizes' symbols
(``size_symbols``): ``nd.arange(X.shape[0])`` has X's first dimension, so such graphs still fuse. Sizes are integers
with no gradient. A bad size (a float, a negative int, a non-scalar) is refused when built where its value is
known, and when the function runs otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.errors import DTypeError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable, constant
from nbdiff.graph.types import TensorType, as_dtype, static_shape
from nbdiff.ops import broadcast as bc

SIZE_DTYPE = "int64"


# ---------------------------------------------------------------------------------------------------------------
# x.shape[i] and nd.shape(x)
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ShapeAt(Op):
    """``shape_at(x)``: the run-time length of ``x``'s axis ``axis``, an int64 scalar (what ``x.shape[axis]`` gives
    for an unknown dimension)."""

    axis: int

    def infer(self, x: Variable) -> list[TensorType]:
        if not 0 <= self.axis < x.ndim:
            raise self.error(ShapeError, f"axis {self.axis} is out of bounds for {x.ndim} dimension(s)", [x])
        return [TensorType(SIZE_DTYPE, ())]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(x.shape[self.axis], dtype=SIZE_DTYPE),)

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> Any:
        """The same axis past the batch axis; a size is the same for every batch element, so it is not batched."""
        from nbdiff.ops.batching import Batched

        return Batched([ShapeAt(self.axis + 1)(inputs[0])], [False])

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        return [None]  # an integer: no gradient

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        return [None]


class Shape(Op):
    """``shape(x)``: ``x``'s run-time shape as an int64 vector of length ``x.ndim``."""

    def infer(self, x: Variable) -> list[TensorType]:
        return [TensorType(SIZE_DTYPE, (x.ndim,))]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(x.shape, dtype=SIZE_DTYPE),)

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> Any:
        """The shape past the batch axis, not batched (as ``ShapeAt``'s)."""
        from nbdiff.ops.batching import Batched

        return Batched([Shape()(inputs[0])[1:]], [False])

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        return [None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        return [None]


def shape_tuple(x: Variable) -> tuple:
    """``x.shape`` as users see it: a Python int per known dimension, a ``ShapeAt`` scalar per unknown one."""
    return tuple(ShapeAt(axis)(x) if dim is None else dim for axis, dim in enumerate(x.type.shape))


def shape(x: Any) -> Variable:
    """``x``'s shape as a 1-d int64 variable (a constant when every dimension is known); ``shape(x)[i]`` is the
    same size as ``x.shape[i]``."""
    x = as_variable(x)
    if None not in x.type.shape:
        return constant(np.asarray(x.type.shape, dtype=SIZE_DTYPE))
    return Shape()(x)


# ---------------------------------------------------------------------------------------------------------------
# Size arguments
# ---------------------------------------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def static_value(var: Variable) -> int | None:
    """The value of a 0-d integer constant size, else None."""
    if isinstance(var, Constant) and var.ndim == 0 and var.dtype.startswith(("int", "uint")):
        return int(var.data)
    return None


def size_entries(op_name: str, sizes: Any, inputs: Sequence[object], allow_minus_one: bool) -> tuple | list:
    """A shape argument as a tuple of ints when every entry is known, else as a list of 0-d int64 variables.

    Entries may be ints, 0-d integer variables (``x.shape[i]``), or a whole 1-d integer variable
    (``nd.shape(x)``); a float, a non-scalar or (where known) a negative entry is a ``ShapeError`` naming ``op_name``.
    """
    if isinstance(sizes, Constant) and sizes.ndim == 1:
        sizes = sizes.data.tolist()
    if isinstance(sizes, Variable):
        if sizes.ndim == 0:
            items: list = [sizes]
        elif sizes.ndim == 1 and sizes.type.shape[0] is not None:
            items = [sizes[i] for i in range(sizes.type.shape[0])]
        else:
            raise node_error(ShapeError, op_name, f"a shape must be a tuple of sizes, got {sizes.type}", [sizes])
    else:
        items = list(sizes) if isinstance(sizes, (tuple, list, np.ndarray)) else [sizes]
    lowest = -1 if allow_minus_one else 0
    what = "ints >= 0 (one of them may be -1)" if allow_minus_one else "ints >= 0"
    entries: list = []
    for item in items:
        if isinstance(item, Variable):
            if item.ndim != 0 or not item.dtype.startswith(("int", "uint")):
                detail = f"a size must be an int or a 0-d integer variable, got {item.type}"
                raise node_error(ShapeError, op_name, detail, [*inputs, item])
            known = static_value(item)
            entries.append(item if known is None else known)
            item = known
        elif not _is_int(item):
            raise node_error(ShapeError, op_name, f"shape entries must be {what}, got {_shown(items)}", inputs)
        else:
            entries.append(int(item))
        if item is not None and item < lowest:
            raise node_error(ShapeError, op_name, f"shape entries must be {what}, got {_shown(items)}", inputs)
    if allow_minus_one and sum(1 for e in entries if isinstance(e, int) and e == -1) > 1:
        raise node_error(ShapeError, op_name, f"only one entry of the shape may be -1, got {_shown(items)}", inputs)
    if all(isinstance(e, int) for e in entries):
        return tuple(entries)
    return [e if isinstance(e, Variable) else constant(e, SIZE_DTYPE) for e in entries]


def _shown(items: Sequence[object]) -> str:
    return "(" + ", ".join(str(getattr(i, "type", i)) if isinstance(i, Variable) else repr(i) for i in items) + ")"


def _check_sizes(name: str, sizes: Sequence[np.ndarray], allow_minus_one: bool = False) -> tuple[int, ...]:
    """Run-time sizes as ints; a negative one (other than reshape's -1) is a ValueError (a ShapeError naming the
    node's line, from the interpreter)."""
    values = tuple(int(s) for s in sizes)
    lowest = -1 if allow_minus_one else 0
    if any(v < lowest for v in values):
        raise ValueError(f"{name}: sizes must be >= 0, got {values}")
    return values


def _static_sizes(sizes: Sequence[Variable]) -> list[int | None]:
    return [static_value(s) for s in sizes]


def _batched_sized(
    op: Op, x: Variable, is_batched: bool, sizes: Sequence[Variable], batched: Sequence[bool], size: Any
):
    """A ``Sized*`` op (``x`` and its sizes) under vmap: ``x``'s batch axis in front of the same sizes. Sizes that
    differ per batch element would give a ragged result: declined (unrolled over a static batch, else refused)."""
    from nbdiff.ops.batching import align

    if any(batched):
        raise NotImplementedError(f"{op.name} with batched sizes has no batching rule")
    if not is_batched:
        return None
    return [op.make_node(align(x, True, len(sizes)), size.length(), *sizes).outputs[0]]


# ---------------------------------------------------------------------------------------------------------------
# full, zeros, ones
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SizedFull(Op):
    """``sized_full(value, *sizes)``: an array of the given run-time sizes filled with the scalar ``value``."""

    @property
    def name(self) -> str:
        return "full"

    def infer(self, value: Variable, *sizes: Variable) -> list[TensorType]:
        return [TensorType(value.dtype, tuple(_static_sizes(sizes)))]

    def perform(self, value: np.ndarray, *sizes: np.ndarray) -> tuple[np.ndarray]:
        return (np.full(_check_sizes(self.name, sizes), value, dtype=value.dtype),)

    def symbolic_shape_from_sizes(self, input_dims: Sequence[tuple], sizes: Sequence[Any]) -> list[tuple]:
        return [tuple(sizes[1:])]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> Any:
        """A batched fill value: each batch element's value broadcast to the sizes (a ``broadcast_to``)."""
        return _batched_sized(SizedBroadcastTo(), inputs[0], batched[0], inputs[1:], batched[1:], size)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        rest = [None] * (len(node.inputs) - 1)
        if g is None or not node.out.dtype.startswith("float"):
            return [None, *rest]
        from nbdiff.ops.reduce import sum as reduce_sum

        return [reduce_sum(g), *rest]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        return [None if t is None else SizedFull()(t, *node.inputs[1:])]


def full(shape: Any, fill_value: Any, dtype: object = None) -> Variable:
    """An array of ``shape`` (ints and/or size scalars such as ``x.shape[0]``) filled with ``fill_value``, with
    NumPy's ``full`` dtype rule."""
    if isinstance(fill_value, Variable):
        if fill_value.ndim != 0:
            detail = f"the fill value must be a scalar, got {fill_value.type}"
            raise node_error(ShapeError, "full", detail, [fill_value])
        value = fill_value if dtype is None else fill_value.astype(as_dtype(dtype))
    else:
        try:
            array = np.asarray(fill_value, dtype=None if dtype is None else as_dtype(dtype))
        except (TypeError, ValueError, OverflowError):
            raise node_error(DTypeError, "full", f"fill value must be a number, got {fill_value!r}") from None
        if array.ndim != 0:
            raise node_error(ShapeError, "full", f"the fill value must be a scalar, got shape {array.shape}")
        value = constant(array)
    entries = size_entries("full", shape, [value], allow_minus_one=False)
    if isinstance(entries, tuple):
        static_shape("full", entries, value.dtype, [value])
        entries = [constant(e, SIZE_DTYPE) for e in entries]
    return SizedFull()(value, *entries)


def zeros(shape: Any, dtype: object = "float64") -> Variable:
    """Zeros of ``shape`` (ints and/or size scalars), as NumPy's ``zeros``."""
    return full(shape, 0, as_dtype(dtype))


def ones(shape: Any, dtype: object = "float64") -> Variable:
    """Ones of ``shape`` (ints and/or size scalars), as NumPy's ``ones``."""
    return full(shape, 1, as_dtype(dtype))


# ---------------------------------------------------------------------------------------------------------------
# arange with size scalars
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SizedArange(Op):
    """``sized_arange(start, stop, step)``: NumPy's ``arange`` of run-time scalars, in ``dtype``."""

    @property
    def name(self) -> str:
        return "arange"

    dtype: str

    def infer(self, start: Variable, stop: Variable, step: Variable) -> list[TensorType]:
        return [TensorType(self.dtype, (None,))]

    def perform(self, start: np.ndarray, stop: np.ndarray, step: np.ndarray) -> tuple[np.ndarray]:
        if step == 0:
            raise ValueError("arange: step must not be zero")
        return (np.arange(start, stop, step, dtype=self.dtype),)

    def symbolic_shape_from_sizes(self, input_dims: Sequence[tuple], sizes: Sequence[Any]) -> list[tuple] | None:
        start, stop, step = sizes
        if start == 0 and step == 1 and stop is not None:
            return [(stop,)]  # arange(n): n values
        return None

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> Any:
        """Bounds that differ per batch element give ragged ranges: declined (unrolled over a static batch)."""
        raise NotImplementedError("arange with batched bounds has no batching rule")

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        return [None, None, None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        return [None]


def sized_arange(start: Any, stop: Any, step: Any, dtype: object) -> Variable:
    """``arange`` where a bound is a graph scalar: a ``SizedArange`` node (its length is known when it runs)."""
    values = [as_variable(v) for v in (start, stop, step)]
    for value in values:
        if value.ndim != 0:
            raise node_error(ShapeError, "arange", f"start, stop and step must be scalars, got {value.type}", [value])
    if dtype is None:
        name = "float64" if any(v.dtype.startswith("float") for v in values) else SIZE_DTYPE
    else:
        name = as_dtype(dtype)
    return SizedArange(name)(*values)


# ---------------------------------------------------------------------------------------------------------------
# reshape and broadcast_to with size scalars
# ---------------------------------------------------------------------------------------------------------------
def _size_key(var: Variable) -> object:
    """What a size is known to equal when built: an int, ``(x, axis)`` for ``x.shape[axis]``, else the variable."""
    known = static_value(var)
    if known is not None:
        return known
    if var.owner is not None and isinstance(var.owner.op, ShapeAt):
        return (id(var.owner.inputs[0]), var.owner.op.axis)
    return var


@dataclass(frozen=True, eq=False)
class SizedReshape(Op):
    """``sized_reshape(x, *sizes)``: ``x`` reshaped to run-time sizes (one may be -1)."""

    @property
    def name(self) -> str:
        return "reshape"

    def infer(self, x: Variable, *sizes: Variable) -> list[TensorType]:
        static = _static_sizes(sizes)
        if -1 in static:
            static[static.index(-1)] = self._inferred(x, sizes)
        known_x = math.prod(d for d in x.type.shape if d is not None)
        if None not in x.type.shape and None not in static and math.prod(static) != known_x:  # type: ignore[arg-type]
            raise self.error(ShapeError, f"cannot reshape shape {x.type.shape} into shape {tuple(static)}", [x])
        return [TensorType(x.dtype, tuple(static))]

    @staticmethod
    def _inferred(x: Variable, sizes: Sequence[Variable]) -> int | None:
        """The -1 entry where the other sizes are x's own dimensions and ints: the product of x's others."""
        unknown = {(id(x), axis) for axis, d in enumerate(x.type.shape) if d is None}
        rest = 1
        for size in sizes:
            key = _size_key(size)
            if isinstance(key, int):
                rest *= 1 if key == -1 else key
            elif isinstance(key, tuple) and key in unknown:
                unknown.discard(key)  # type: ignore[arg-type]
            else:
                return None
        known = math.prod(d for d in x.type.shape if d is not None)
        if unknown or rest == 0 or known % rest:
            return None
        return known // rest

    def perform(self, x: np.ndarray, *sizes: np.ndarray) -> tuple[np.ndarray]:
        target = _check_sizes(self.name, sizes, allow_minus_one=True)
        try:
            return (x.reshape(target),)
        except ValueError:
            raise ValueError(f"cannot reshape an array of shape {x.shape} into shape {target}") from None

    def symbolic_shape_from_sizes(self, input_dims: Sequence[tuple], sizes: Sequence[Any]) -> list[tuple] | None:
        target = list(sizes[1:])
        if -1 in target:
            if target.count(-1) > 1:
                return None
            x_dims = list(input_dims[0])
            for size in target:
                if size != -1 and size in x_dims and not isinstance(size, int):
                    x_dims.remove(size)
            others = [s for s in target if s != -1]
            if any(not isinstance(d, int) for d in x_dims) or any(not isinstance(s, int) for s in others):
                target[target.index(-1)] = None
            else:
                rest = math.prod(others)
                target[target.index(-1)] = math.prod(x_dims) // rest if rest else None
        return [tuple(target)]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> Any:
        """Each batch element reshaped: the batch size in front of the same sizes."""
        if any(batched[1:]) or not batched[0]:
            raise NotImplementedError("reshape with batched sizes has no batching rule")
        return list(self.make_node(inputs[0], size.length(), *inputs[1:]).outputs)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        x = node.inputs[0]
        rest = [None] * (len(node.inputs) - 1)
        if g is None:
            return [None, *rest]
        from nbdiff.ops.shape import ReshapeLike, reshape

        return [reshape(g, x.type.shape) if None not in x.type.shape else ReshapeLike()(g, x), *rest]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        return [None if t is None else SizedReshape()(t, *node.inputs[1:])]


@dataclass(frozen=True, eq=False)
class SizedBroadcastTo(Op):
    """``sized_broadcast_to(x, *sizes)``: ``x`` broadcast to run-time sizes."""

    @property
    def name(self) -> str:
        return "broadcast_to"

    def infer(self, x: Variable, *sizes: Variable) -> list[TensorType]:
        static = _static_sizes(sizes)
        lead = len(static) - x.ndim
        if lead < 0:
            raise self.error(ShapeError, f"cannot broadcast shape {x.type.shape} to {len(static)} dimension(s)", [x])
        for axis, dim in enumerate(x.type.shape):
            target = static[lead + axis]
            if dim is not None and target is not None and dim not in (1, target):
                raise self.error(ShapeError, f"cannot broadcast shape {x.type.shape} to shape {tuple(static)}", [x])
            if target is None and dim not in (None, 1):
                static[lead + axis] = dim  # the size must be x's own
        return [TensorType(x.dtype, tuple(static))]

    def perform(self, x: np.ndarray, *sizes: np.ndarray) -> tuple[np.ndarray]:
        target = _check_sizes(self.name, sizes)
        try:
            return (np.broadcast_to(x, target),)
        except ValueError:
            raise ValueError(f"cannot broadcast an array of shape {x.shape} to shape {target}") from None

    def symbolic_shape_from_sizes(self, input_dims: Sequence[tuple], sizes: Sequence[Any]) -> list[tuple]:
        return [tuple(sizes[1:])]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> Any:
        """Each batch element broadcast: ``x`` aligned to the target's rank, the batch size in front of the sizes."""
        return _batched_sized(self, inputs[0], batched[0], inputs[1:], batched[1:], size)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        rest = [None] * (len(node.inputs) - 1)
        return [None if g is None else bc.SumToLike()(g, node.inputs[0]), *rest]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        return [None if t is None else SizedBroadcastTo()(t, *node.inputs[1:])]


__all__ = ["full", "ones", "shape", "zeros"]

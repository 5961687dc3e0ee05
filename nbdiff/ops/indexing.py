"""Indexing: x[ints, slices, None, Ellipsis, integer arrays, boolean masks] and take_along_axis.

``x[index]`` becomes one ``Index`` node. Its frozen ``items`` hold the static part of the index (ints, slices as
``(start, stop, step)`` tuples, ``None``, ``Ellipsis``, and the marker ``ARRAY`` where an integer array or a boolean
mask goes); the arrays themselves are extra inputs, so indices may be symbolic. The gradient ``IndexAdd`` scatters
the incoming gradient into zeros shaped like ``x`` with ``np.add.at`` semantics (repeated indices add up), and the
pullback of ``IndexAdd`` is ``Index`` again, so derivatives of any order compose. ``take_along_axis`` and its
gradient ``AddAlongAxis`` form the same pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.errors import IndexingError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable, constant
from nbdiff.graph.types import MAX_INDEX, TensorType, broadcast_shapes, max_ndim, normalize_axes
from nbdiff.ops import batching

ARRAY = "array"  # marks the place of an array index (integer array or boolean mask) among ``Index.items``


# ---------------------------------------------------------------------------------------------------------------
# The static layout of an index: which axes each item consumes, and NumPy's result shape
# ---------------------------------------------------------------------------------------------------------------
def _is_int_dtype(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def _consumed(item: Any, array: Variable | None) -> int:
    """How many dimensions of the indexed variable one index item uses."""
    if array is not None:
        return array.ndim if array.dtype == "bool" else 1
    return 0 if item is None or item is Ellipsis else 1


def _entries(op: Op, x: Variable, items: tuple, arrays: Sequence[Variable]) -> list[tuple[Any, Any, tuple]]:
    """Pair each item with its array input (or None) and the axes of ``x`` it consumes.

    An index without ``Ellipsis`` gets one at its end, covering the trailing axes (as NumPy does).
    """
    if sum(1 for item in items if item == ARRAY) != len(arrays):
        raise op.error(IndexingError, f"the index has {items.count(ARRAY)} array marker(s) but {len(arrays)} arrays")
    pending = list(arrays)
    paired = []
    for item in items:
        array = pending.pop(0) if item == ARRAY else None
        if array is not None and array.dtype != "bool" and not _is_int_dtype(array.dtype):
            raise op.error(IndexingError, f"index arrays must be integer or boolean, got {array.dtype}", [x, array])
        paired.append((item, array))
    ellipses = sum(1 for item, _ in paired if item is Ellipsis)
    if ellipses > 1:
        raise op.error(IndexingError, "an index can only have a single ellipsis ('...')", [x])
    if ellipses == 0:
        paired.append((Ellipsis, None))
    used = sum(_consumed(item, array) for item, array in paired)
    if used > x.ndim:
        raise op.error(
            IndexingError, f"too many indices: the variable has {x.ndim} dimension(s) but {used} were indexed", [x]
        )
    entries = []
    axis = 0
    for item, array in paired:
        count = x.ndim - used if item is Ellipsis else _consumed(item, array)
        entries.append((item, array, tuple(range(axis, axis + count))))
        axis += count
    return entries


def _check_int(op: Op, x: Variable, value: int, axis: int) -> None:
    size = x.type.shape[axis]
    if size is not None and not -size <= value < size:
        raise op.error(IndexingError, f"index {value} is out of bounds for axis {axis} with size {size}", [x])


def _basic_dims(op: Op, x: Variable, item: Any, axes: tuple) -> list:
    """Result dimensions of a basic index item (int, slice, None or Ellipsis)."""
    if item is None:
        return [1]
    if item is Ellipsis:
        return [x.type.shape[a] for a in axes]
    (axis,) = axes
    if isinstance(item, int):
        _check_int(op, x, item, axis)
        return []
    size = x.type.shape[axis]
    return [None if size is None else len(range(*slice(*item).indices(size)))]


def _advanced_shape(op: Op, x: Variable, item: Any, array: Variable | None, axes: tuple) -> tuple:
    """The shape an advanced index contributes to the broadcast block (a mask gives its count of True)."""
    if array is None:  # an int among advanced indices acts as a 0-d array
        _check_int(op, x, item, axes[0])
        return ()
    if array.dtype == "bool":
        dims = tuple(x.type.shape[a] for a in axes)
        if any(m is not None and d is not None and m != d for m, d in zip(array.type.shape, dims)):
            raise op.error(
                IndexingError,
                f"boolean index of shape {array.type.shape} does not match the indexed dimensions {dims}",
                [x, array],
            )
        return (int(np.count_nonzero(array.data)),) if isinstance(array, Constant) else (None,)
    size = x.type.shape[axes[0]]
    if isinstance(array, Constant) and size is not None and array.data.size:
        low, high = int(array.data.min()), int(array.data.max())
        if low < -size or high >= size:
            bad = high if high >= size else low
            raise op.error(IndexingError, f"index {bad} is out of bounds for axis {axes[0]} with size {size}", [x])
    return array.type.shape


def index_shape(op: Op, x: Variable, items: tuple, arrays: Sequence[Variable]) -> tuple:
    """NumPy's result shape for ``x[items]`` (None where only the run time knows); raises on a bad index.

    Advanced indices (arrays, masks, and ints when any array is present) broadcast together into one block; the
    block stays in place when those indices are adjacent, and goes to the front when other items separate them.
    """
    entries = _entries(op, x, items, arrays)
    advanced = any(array is not None for _, array, _ in entries)
    dims: list = []
    block: list[tuple] = []
    block_at, state = 0, "before"
    for item, array, axes in entries:
        if array is None and not (advanced and isinstance(item, int)):
            state = "after" if state == "inside" else state
            dims.extend(_basic_dims(op, x, item, axes))
            continue
        if state == "before":
            block_at, state = len(dims), "inside"
        elif state == "after":
            block_at, state = 0, "scattered"
        block.append(_advanced_shape(op, x, item, array, axes))
    if not advanced:
        return tuple(dims)
    try:
        shape = broadcast_shapes(op.name, *block)
    except ShapeError:
        described = " ".join(str(tuple(s)) for s in block)
        raise op.error(
            IndexingError, f"shape mismatch: index arrays could not be broadcast together ({described})", [x, *arrays]
        ) from None
    return tuple(dims[:block_at]) + tuple(shape) + tuple(dims[block_at:])


UFUNC_AT_MAX_NDIM = 32  # np.add.at crashes the process (NumPy 2.4: a segmentation fault) past 32 dimensions


def add_at(out: np.ndarray, index: Any, values: Any) -> None:
    """``np.add.at(out, index, values)`` for arrays of any rank NumPy allows.

    NumPy's ``ufunc.at`` ends the process with a segmentation fault when the array or the indexed result has more
    than 32 dimensions. There, the flat positions ``index`` selects are read from an array of positions (indexing
    works to 64 dimensions) and the values are added on the flat array, in the same order."""
    parts = index if isinstance(index, tuple) else (index,)
    widest = max((np.ndim(part) for part in parts if isinstance(part, np.ndarray)), default=0)
    bound = out.ndim + sum(1 for part in parts if part is None) + widest  # at least the indexed result's rank
    if bound <= UFUNC_AT_MAX_NDIM:
        np.add.at(out, index, values)
        return
    positions = np.arange(out.size).reshape(out.shape)[index]
    flat = np.ascontiguousarray(out).reshape(-1)  # a view when ``out`` is C-contiguous
    np.add.at(flat, positions.reshape(-1), np.broadcast_to(values, positions.shape).reshape(-1))
    if not np.shares_memory(flat, out):
        out[...] = flat.reshape(out.shape)


def numpy_index(items: tuple, arrays: Sequence[np.ndarray]) -> tuple:
    """The NumPy index tuple for ``items`` with the run-time ``arrays`` in place of the markers."""
    pending = list(arrays)
    result: list[Any] = []
    for item in items:
        if isinstance(item, tuple):
            result.append(slice(*item))
        elif item == ARRAY:
            result.append(pending.pop(0))
        else:
            result.append(item)
    return tuple(result)


def _render(item: Any) -> str:
    if item is None:
        return "None"
    if item is Ellipsis:
        return "..."
    if isinstance(item, tuple):
        start, stop, step = ("" if v is None else str(v) for v in item)
        return f"{start}:{stop}" + (f":{step}" if step else "")
    return str(item)


# ---------------------------------------------------------------------------------------------------------------
# Index and its gradient
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Index(Op):
    """``x[items]`` with NumPy semantics; the inputs are ``x`` and then one array per ``ARRAY`` marker."""

    items: tuple

    def describe(self) -> str:
        return f"{self.name}[{', '.join(_render(item) for item in self.items)}]"

    def infer(self, x: Variable, *arrays: Variable) -> list[TensorType]:
        return [TensorType(x.dtype, index_shape(self, x, self.items, arrays))]

    def perform(self, x: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray]:
        return (np.asarray(x[numpy_index(self.items, arrays)]),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        x, *arrays = node.inputs
        none = [None] * len(arrays)
        return [None if g is None else IndexAdd(self.items)(x, g, *arrays), *none]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        return [None if t is None else Index(self.items)(t, *node.inputs[1:])]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """A full slice in front of the items; where NumPy moves separated advanced indices to the front, the batch
        axis is moved back. Batched index arrays decline (the op is then unrolled over a static batch)."""
        if any(batched[1:]):
            return [_gather_batched(self.items, inputs, batched, size)]
        out = Index(((None, None, None), *self.items))(*inputs)
        lead = _advanced_lead(self.items, inputs[1:])
        if lead:
            from nbdiff.ops.shape import transpose

            out = transpose(out, (lead, *(a for a in range(out.ndim) if a != lead)))
        return [out]


@dataclass(frozen=True, eq=False)
class IndexAdd(Op):
    """``index_add(x, g, *arrays)``: zeros like ``x`` with ``g`` added at ``x[items]`` (repeats accumulate)."""

    items: tuple

    def describe(self) -> str:
        return f"{self.name}[{', '.join(_render(item) for item in self.items)}]"

    def infer(self, x: Variable, g: Variable, *arrays: Variable) -> list[TensorType]:
        indexed = index_shape(self, x, self.items, arrays)
        if g.ndim > len(indexed) or len(broadcast_shapes(self.name, g.type.shape, indexed)) != len(indexed):
            raise self.error(
                ShapeError, f"values of shape {g.type.shape} do not fit an index of shape {indexed}", [x, g]
            )
        return [TensorType(g.dtype, x.type.shape)]

    def perform(self, x: np.ndarray, g: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray]:
        out = np.zeros(x.shape, dtype=g.dtype)
        index = numpy_index(self.items, arrays)
        if any(a.dtype != np.bool_ for a in arrays):
            add_at(out, index, g)  # integer arrays may repeat a position: accumulate
        else:
            out[index] = g  # basic indices and masks reach each position at most once
        return (out,)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """``x``'s shape."""
        return [input_dims[0]]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (gz,) = output_grads
        x, _, *arrays = node.inputs
        none = [None] * len(arrays)
        return [None, None if gz is None else Index(self.items)(gz, *arrays), *none]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[1]
        x, _, *arrays = node.inputs
        return [None if t is None else IndexAdd(self.items)(x, t, *arrays)]

    def batch(self, node: Apply, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> list[Variable]:
        """As ``Index``'s rule: ``x`` and the values batched, a full slice in front of the items, the values' batch
        axis where NumPy's indexing puts it."""
        if any(batched[2:]):
            raise NotImplementedError("index_add with batched index arrays")
        x, g = (v if b else size.materialise(v) for v, b in zip(inputs[:2], batched[:2]))
        lead = _advanced_lead(self.items, inputs[2:])
        if lead:
            from nbdiff.ops.shape import transpose

            g = transpose(g, (*range(1, lead + 1), 0, *range(lead + 1, g.ndim)))
        return [IndexAdd(((None, None, None), *self.items))(x, g, *inputs[2:])]


def _gather_batched(items: tuple, inputs: Sequence[Variable], batched: Sequence[bool], size: Any) -> Variable:
    """``x[s, idx, s]`` with a batched integer ``idx`` among slices ``s``: the slices first, then ``idx`` as a
    ``take_along_axis`` (``x`` gets length-1 axes for ``idx``'s dimensions, ``idx`` length-1 axes for ``x``'s)."""
    from nbdiff.ops.shape import expand_dims, squeeze

    full = (None, None, None)
    if len(inputs) != 2 or inputs[1].dtype == "bool" or any(i != ARRAY and not isinstance(i, tuple) for i in items):
        raise NotImplementedError("index with batched index arrays other than one integer array among slices")
    x, idx = (v if b else size.materialise(v) for v, b in zip(inputs, batched))
    if any(item not in (ARRAY, full) for item in items):
        x = Index((full, *(full if item == ARRAY else item for item in items)))(x)
    place, extra = items.index(ARRAY), idx.ndim - 1
    after = x.ndim - 2 - place  # x's axes after the indexed one
    x = expand_dims(x, tuple(range(1 + place, 1 + place + extra))) if extra else x
    idx = expand_dims(idx, (*range(1, 1 + place), *range(1 + place + extra, 2 + place + extra + after)))
    axis = 1 + place + extra
    return squeeze(TakeAlongAxis(axis)(x, idx), axis)


def _advanced_lead(items: tuple, arrays: Sequence[Variable]) -> int:
    """Where a batch axis put in front of ``items`` lands: 0, or, when NumPy moves separated advanced indices
    (arrays, and ints among arrays) to the front, after their broadcast dimensions."""
    if ARRAY not in items:
        return 0
    places = [k for k, item in enumerate(items) if item == ARRAY or isinstance(item, int)]
    if places == list(range(places[0], places[-1] + 1)):
        return 0
    return max((1 if a.dtype == "bool" else a.ndim) for a in arrays)


def _index_error(x: Variable, detail: str) -> Exception:
    return node_error(IndexingError, "index", detail, [x])


def _slice_item(x: Variable, item: slice) -> tuple:
    """A slice as a ``(start, stop, step)`` tuple of ints or None."""
    bounds = []
    for value in (item.start, item.stop, item.step):
        if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))):
            raise _index_error(x, f"slice bounds must be Python ints or None, got {value!r} in {item!r}")
        bounds.append(None if value is None else int(value))
    if bounds[2] == 0:
        raise _index_error(x, "slice step cannot be zero")
    return tuple(bounds)


def _array_item(x: Variable, item: Any) -> Any:
    """A list or array index: an int (0-d integer arrays), or a constant integer array or boolean mask."""
    try:
        data = np.asarray(item)
    except ValueError:
        raise _index_error(x, f"cannot use {item!r} as an index (ragged nested sequence)") from None
    if data.size == 0 and isinstance(item, (list, tuple)) and data.dtype.kind == "f":
        data = data.astype(np.intp)  # NumPy reads an empty list as an empty integer index
    if data.dtype.kind not in "biu":
        raise _index_error(x, f"arrays used as indices must be integer or boolean, got {data.dtype}")
    if data.ndim == 0 and data.dtype.kind != "b":
        return _int_item(x, int(data))
    if data.dtype.kind == "u" and data.size and int(data.max()) > MAX_INDEX:
        _int_item(x, int(data.max()))  # NumPy would wrap it to a negative index
    return constant(data)


def _int_item(x: Variable, value: int) -> int:
    """An integer index, refused when outside ``np.intp`` (NumPy would fail at run time, or wrap a uint64)."""
    if not -MAX_INDEX - 1 <= value <= MAX_INDEX:
        raise _index_error(
            x, f"index {value} is out of bounds for any array: integer indices must fit in np.intp (int64)"
        )
    return value


def _parse_item(x: Variable, item: Any) -> tuple[Any, Variable | None]:
    """One user index item as (static item, array input or None)."""
    if isinstance(item, Variable):
        if item.dtype != "bool" and not _is_int_dtype(item.dtype):
            raise _index_error(x, f"index variables must be integer or boolean, got {item.label()}: {item.type}")
        return ARRAY, item
    if item is None or item is Ellipsis:
        return item, None
    if isinstance(item, slice):
        return _slice_item(x, item), None
    if isinstance(item, (bool, np.bool_)):
        return ARRAY, constant(np.asarray(item))
    if isinstance(item, (int, np.integer)):
        return _int_item(x, int(item)), None
    if isinstance(item, (float, np.floating)):
        raise _index_error(
            x,
            f"only integers, slices, None, Ellipsis, integer or boolean arrays are valid "
            f"indices, got the float {item!r}",
        )
    if isinstance(item, (list, tuple, np.ndarray)):
        parsed = _array_item(x, item)
        return (parsed, None) if isinstance(parsed, int) else (ARRAY, parsed)
    raise _index_error(x, f"cannot index with an object of type {type(item).__name__}")


def getitem(x: Any, index: Any) -> Variable:
    """``x[index]`` with NumPy semantics: ints, slices, None, Ellipsis, integer arrays and boolean masks."""
    x = as_variable(x)
    parts = index if isinstance(index, tuple) else (index,)
    items, arrays = [], []
    for part in parts:
        item, array = _parse_item(x, part)
        items.append(item)
        if array is not None:
            arrays.append(array)
    return Index(tuple(items))(x, *arrays)


# ---------------------------------------------------------------------------------------------------------------
# take_along_axis and its gradient
# ---------------------------------------------------------------------------------------------------------------
def along_axis_index(shape: tuple, indices: np.ndarray, axis: int) -> tuple:
    """The NumPy fancy index that ``take_along_axis`` uses: ``indices`` on ``axis``, aranges on the others."""
    result: list[np.ndarray] = []
    for dim, size in enumerate(shape):
        if dim == axis:
            result.append(indices)
        else:
            view = [1] * len(shape)
            view[dim] = size
            result.append(np.arange(size).reshape(view))
    return tuple(result)


def _along_axis_shape(op: Op, arr: Variable, indices: Variable, axis: int | None) -> tuple:
    """The result shape of ``take_along_axis(arr, indices, axis)``; raises on mismatched inputs."""
    if not _is_int_dtype(indices.dtype):
        raise op.error(IndexingError, f"indices must be an integer array, got {indices.dtype}", [arr, indices])
    if axis is None:
        if indices.ndim != 1:
            raise op.error(ShapeError, "with axis=None the indices must have a single dimension", [arr, indices])
        shape, axis_size = indices.type.shape, arr.type.size
    else:
        if indices.ndim != arr.ndim:
            raise op.error(ShapeError, "indices and arr must have the same number of dimensions", [arr, indices])
        if arr.ndim >= max_ndim():  # one index array per dimension: NumPy refuses the last one, as its own would
            detail = f"NumPy indexes with at most {max_ndim() - 1} arrays: arr may have {max_ndim() - 1} dimensions"
            raise op.error(IndexingError, detail, [arr, indices])
        dims = []
        for dim, (a, i) in enumerate(zip(arr.type.shape, indices.type.shape)):
            if dim == axis:
                dims.append(i)
            elif a is not None and i is not None and a != i and 1 not in (a, i):
                raise op.error(
                    IndexingError, f"shape mismatch: dimension {dim} is {a} in arr and {i} in indices", [arr, indices]
                )
            else:
                dims.append(broadcast_shapes(op.name, (a,), (i,))[0])
        shape, axis_size = tuple(dims), arr.type.shape[axis]
    if isinstance(indices, Constant) and axis_size is not None and indices.data.size:
        low, high = int(indices.data.min()), int(indices.data.max())
        if low < -axis_size or high >= axis_size:
            bad = high if high >= axis_size else low
            raise op.error(IndexingError, f"index {bad} is out of bounds for size {axis_size}", [arr, indices])
    return shape


@dataclass(frozen=True, eq=False)
class TakeAlongAxis(Op):
    """``take_along_axis(arr, indices, axis)`` (NumPy's; ``axis=None`` indexes the flattened ``arr``)."""

    batch = batching.batch_shifting_axes

    axis: int | None

    def infer(self, arr: Variable, indices: Variable) -> list[TensorType]:
        return [TensorType(arr.dtype, _along_axis_shape(self, arr, indices, self.axis))]

    def perform(self, arr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray]:
        if self.axis is None:
            return (np.asarray(arr.reshape(-1)[indices]),)
        return (np.asarray(arr[along_axis_index(arr.shape, indices, self.axis)]),)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        arr, indices = node.inputs
        return [None if g is None else AddAlongAxis(self.axis)(arr, g, indices), None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[0]
        return [None if t is None else TakeAlongAxis(self.axis)(t, node.inputs[1])]


@dataclass(frozen=True, eq=False)
class AddAlongAxis(Op):
    """``add_along_axis(arr, g, indices, axis)``: zeros like ``arr`` with ``g`` added where take_along_axis read."""

    batch = batching.batch_shifting_axes

    axis: int | None

    def infer(self, arr: Variable, g: Variable, indices: Variable) -> list[TensorType]:
        taken = _along_axis_shape(self, arr, indices, self.axis)
        if g.ndim != len(taken) or len(broadcast_shapes(self.name, g.type.shape, taken)) != len(taken):
            raise self.error(ShapeError, f"values of shape {g.type.shape} do not fit indices giving {taken}", [arr, g])
        return [TensorType(g.dtype, arr.type.shape)]

    def perform(self, arr: np.ndarray, g: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray]:
        out = np.zeros(arr.shape, dtype=g.dtype)
        if self.axis is None:
            flat = out.reshape(-1)
            add_at(flat, indices, g)
            return (flat.reshape(arr.shape),)
        add_at(out, along_axis_index(arr.shape, indices, self.axis), g)
        return (out,)

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """``arr``'s shape (so the softmax gradient that follows fuses with it)."""
        return [input_dims[0]]

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (gz,) = output_grads
        _, _, indices = node.inputs
        return [None, None if gz is None else TakeAlongAxis(self.axis)(gz, indices), None]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Any]:
        t = tangents[1]
        arr, _, indices = node.inputs
        return [None if t is None else AddAlongAxis(self.axis)(arr, t, indices)]


def take_along_axis(arr: Any, indices: Any, axis: int | None = -1) -> Variable:
    """Values of ``arr`` at ``indices`` along ``axis`` (NumPy's; ``axis=None`` works on the flattened ``arr``)."""
    arr = as_variable(arr)
    if not isinstance(indices, Variable):
        indices = constant(np.asarray(indices))
    if axis is not None:
        (axis,) = normalize_axes("take_along_axis", axis, arr.ndim)
    return TakeAlongAxis(axis)(arr, indices)


__all__ = ["getitem", "take_along_axis"]

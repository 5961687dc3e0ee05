"""Splitting a call's arguments into chunked ones (dask arrays, chunked along their rows) and in-memory ones.

A chunked argument is split along axis 0 (its rows) only: a row-wise function needs whole rows, so every other axis
must be one chunk, and every chunked argument must be chunked alike along the rows, since chunk ``i`` of each goes
to the same task. In-memory arguments (parameters, scalars) are checked and converted as a direct call would, then
go whole to every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nbdiff.errors import InputError, ShapeError, node_error
from nbdiff.function import convert_argument
from nbdiff.graph.basic import Variable
from nbdiff.graph.types import numpy_dtype


@dataclass(frozen=True)
class Arguments:
    """One call's arguments: dask arrays at ``chunked`` positions, checked NumPy arrays elsewhere."""

    values: tuple[Any, ...]
    chunked: tuple[int, ...]
    row_chunks: tuple[int, ...]

    def blockwise_pairs(self) -> list[Any]:
        """The (argument, index) pairs ``dask.array.blockwise`` takes: a chunked argument with the shared row index
        (then indices of its own, each one chunk), an in-memory one with ``None`` (passed whole to every task)."""
        pairs: list[Any] = []
        for position, value in enumerate(self.values):
            pairs += [value, _row_index(position, value.ndim) if position in self.chunked else None]
        return pairs

    @property
    def rows(self) -> int:
        return sum(self.row_chunks)

    @property
    def blocks(self) -> int:
        return len(self.row_chunks)


def _row_index(position: int, ndim: int) -> tuple[str, ...]:
    return ("rows", *(f"argument{position}_axis{axis}" for axis in range(1, ndim)))


def is_dask_array(value: Any) -> bool:
    import dask.array as da

    return isinstance(value, da.Array)


def split_arguments(
    inputs: Sequence[Variable], values: Sequence[Any], where: str, data: int | None = None
) -> Arguments:
    """Check ``values`` against ``inputs`` (count, rank, dtype kind, static shape, chunking) and split them.

    With ``data`` given, the first ``data`` arguments must be dask arrays and no other may be (``row_cost``)."""
    if len(values) != len(inputs):
        expected = ", ".join(f"{v.label()}: {v.type}" for v in inputs)
        raise node_error(InputError, where, f"expected {len(inputs)} argument(s) ({expected}), got {len(values)}")
    if data is not None:
        _check_placement(inputs, values, data, where)
    converted: list[Any] = []
    chunked: list[int] = []
    for position, (var, value) in enumerate(zip(inputs, values)):
        if is_dask_array(value):
            _check_chunked(var, value, position, where)
            converted.append(value)
            chunked.append(position)
        else:
            converted.append(convert_argument(var, value, position, where))
    if not chunked:
        raise node_error(InputError, where, "no argument is a dask array; call the function directly instead")
    row_chunks = _shared_row_chunks([(inputs[p], converted[p]) for p in chunked], where)
    return Arguments(tuple(converted), tuple(chunked), row_chunks)


def _check_placement(inputs: Sequence[Variable], values: Sequence[Any], data: int, where: str) -> None:
    """The first ``data`` values are dask arrays (the data), the others in memory (parameters and tangents)."""
    for position, (var, value) in enumerate(zip(inputs, values)):
        if position < data and not is_dask_array(value):
            detail = f"data argument {position} ({var.label()}) must be a dask array chunked along its rows"
            raise node_error(InputError, where, detail)
        if position >= data and is_dask_array(value):
            detail = (
                f"argument {position} ({var.label()}) is a dask array, but only the data may be chunked: parameters "
                f"and tangents are in memory (compute them first)"
            )
            raise node_error(InputError, where, detail)


def _check_chunked(var: Variable, array: Any, position: int, where: str) -> None:
    label = f"{where}: argument {position} ({var.label()}: {var.type})"
    if array.ndim == 0:
        raise node_error(InputError, label, "a 0-d dask array has no rows to chunk; pass its computed value instead")
    if array.ndim != var.ndim:
        detail = f"expected {var.ndim} dimension(s), got a dask array of shape {array.shape}"
        raise node_error(InputError, label, detail)
    if any(np.isnan(d) for d in array.shape):
        detail = "a dask array of unknown chunk sizes; call .compute_chunk_sizes() on it first"
        raise node_error(ShapeError, label, detail)
    if not var.type.accepts(array.shape):
        raise node_error(InputError, label, f"expected shape {var.type.describe()}, got {array.shape}")
    dtype = np.dtype(array.dtype)
    target = numpy_dtype(var.dtype)
    if dtype.kind not in "biuf" or not np.can_cast(dtype, target, casting="same_kind"):
        raise node_error(InputError, label, f"cannot convert a dask array of dtype {dtype} to {var.dtype}")
    split = [axis for axis in range(1, array.ndim) if len(array.chunks[axis]) > 1]
    if split:
        axes = dict.fromkeys(split, -1)
        detail = (
            f"chunked along axis {split[0]} {array.chunks[split[0]]}: a row-wise function needs whole rows, so only "
            f"axis 0 may be split; rechunk it first: array.rechunk({axes})"
        )
        raise node_error(ShapeError, label, detail)


def _shared_row_chunks(pairs: Sequence[tuple[Variable, Any]], where: str) -> tuple[int, ...]:
    """The row chunks every chunked argument shares; a ``ShapeError`` naming two that differ."""
    (first_var, first), *others = pairs
    for var, array in others:
        if array.chunks[0] != first.chunks[0]:
            if array.shape[0] != first.shape[0]:
                detail = f"{first_var.label()} has {first.shape[0]} rows but {var.label()} has {array.shape[0]}"
            else:
                detail = (
                    f"{first_var.label()} and {var.label()} are chunked differently along their rows "
                    f"({_describe(first.chunks[0])} against {_describe(array.chunks[0])}): chunk i of each goes "
                    f"to the same task; rechunk one like the other, e.g. {var.label()}.rechunk({{0: "
                    f"{first_var.label()}.chunks[0]}})"
                )
            raise node_error(ShapeError, where, detail)
    return tuple(int(c) for c in first.chunks[0])


def _describe(chunks: tuple[int, ...]) -> str:
    if len(chunks) <= 4:
        return str(tuple(chunks))
    return f"({chunks[0]}, {chunks[1]}, ..., {chunks[-1]}: {len(chunks)} chunks)"

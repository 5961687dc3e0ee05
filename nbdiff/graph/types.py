"""Tensor types: a dtype plus a static shape whose unknown dimensions are ``None``.

Dtype rules are NumPy's (NEP 50): result dtypes are taken from NumPy itself on tiny arrays, so what the graph
infers is exactly what the interpreter computes; Python numbers are weak, so ``x * 2`` keeps float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nbdiff.errors import AxisError, DTypeError, ShapeError, node_error

Shape = tuple  # tuple[int | None, ...]

SUPPORTED_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
)
FLOAT_DTYPES = ("float32", "float64")


def as_dtype(dtype: object) -> str:
    """Normalise a dtype-like (``"float32"``, ``np.float32``, ``float``) to its name; raise for unsupported ones."""
    try:
        name = np.dtype(dtype).name  # type: ignore[arg-type]
    except (TypeError, ValueError, SyntaxError):  # NumPy parses strings: "f8,", "(" raise these
        raise node_error(
            DTypeError, "dtype", f"unknown dtype {dtype!r}; nbdiff supports {', '.join(SUPPORTED_DTYPES)}"
        ) from None
    if name not in SUPPORTED_DTYPES:
        supported = ", ".join(SUPPORTED_DTYPES)
        raise node_error(DTypeError, "dtype", f"unsupported dtype {name!r}; nbdiff supports {supported}")
    return name


MAX_INDEX = int(np.iinfo(np.intp).max)  # the largest dimension, size or byte count a NumPy array can have


@functools.cache
def max_ndim() -> int:
    """The most dimensions a NumPy array can have (64 in NumPy 2, 32 in NumPy 1), found once by asking NumPy."""
    allowed, refused = 1, 2
    while refused < 1 << 16 and _numpy_allows_ndim(refused):
        allowed, refused = refused, refused * 2
    while refused - allowed > 1:
        middle = (allowed + refused) // 2
        allowed, refused = (middle, refused) if _numpy_allows_ndim(middle) else (allowed, middle)
    return allowed


def _numpy_allows_ndim(ndim: int) -> bool:
    try:
        np.empty((1,) * ndim, dtype=np.bool_)
    except ValueError:
        return False
    return True


def static_shape(op_name: str, shape: Sequence[object], dtype: str, inputs: Sequence[object] = ()) -> Shape:
    """``shape`` as a tuple of Python ints and ``None`` (unknown), refused with ``ShapeError`` when no NumPy array of
    ``dtype`` can have it: an entry that is not a non-negative int or None, more than ``max_ndim()`` dimensions,
    or (for the known dimensions) more elements or bytes than ``np.intp`` can count."""
    if len(shape) > max_ndim():
        raise node_error(ShapeError, op_name, ndim_limit_detail(len(shape)), inputs)
    dims = []
    for dim in shape:
        if dim is not None and (isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 0):
            raise node_error(
                ShapeError, op_name, f"shape entries must be non-negative ints or None, got {_shown(shape)}", inputs
            )
        dims.append(None if dim is None else int(dim))
    nbytes = numpy_dtype(dtype).itemsize
    for dim in dims:
        nbytes *= dim or 1  # NumPy refuses a shape whose non-zero dimensions overflow, even next to a 0
    if nbytes > MAX_INDEX:
        raise node_error(
            ShapeError,
            op_name,
            f"shape {_shown(shape)} of {dtype} needs at least {nbytes} bytes; a NumPy array holds at most "
            f"{MAX_INDEX} (the largest np.intp)",
            inputs,
        )
    return tuple(dims)


def ndim_limit_detail(ndim: int) -> str:
    """The message for a type with more dimensions than NumPy allows."""
    return f"{ndim} dimensions, but a NumPy array has at most {max_ndim()}"


def _shown(shape: Sequence[object]) -> str:
    """A user's shape for a message (shapes within ``max_ndim()`` entries are short enough to show whole)."""
    return repr(tuple(shape))


@functools.cache
def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a dtype name, cached. Hot paths compare ``array.dtype`` with it: NumPy 2 computes
    ``dtype.name`` in Python (about 4 us a read), while comparing dtype objects takes 0.1 us."""
    return np.dtype(name)


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint")) or dtype == "bool"


@functools.lru_cache(maxsize=4096)
def _numpy_result(fn: Callable, dtypes: tuple[str, ...]) -> str:
    arrays = [np.ones((1,), dtype=d) for d in dtypes]
    with np.errstate(all="ignore"):
        return np.asarray(fn(*arrays)).dtype.name


def numpy_result_dtype(fn: Callable, *dtypes: str) -> str:
    """The dtype NumPy gives ``fn`` applied to arrays of ``dtypes`` (cached; ``fn`` must be hashable)."""
    return _numpy_result(fn, tuple(dtypes))


@dataclass(frozen=True)
class TensorType:
    """The static type of a variable: dtype name and shape (``None`` for a dimension known only at run time)."""

    dtype: str
    shape: Shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int | None:
        """Number of elements when every dimension is known, else ``None``."""
        total = 1
        for dim in self.shape:
            if dim is None:
                return None
            total *= dim
        return total

    def accepts(self, shape: Sequence[int]) -> bool:
        """True when a run-time shape fits this static shape."""
        return len(shape) == len(self.shape) and all(s is None or s == d for s, d in zip(self.shape, shape))

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def __str__(self) -> str:
        return self.describe()


def broadcast_shapes(op_name: str, *shapes: Shape) -> Shape:
    """NumPy broadcasting on static shapes; unknown dims stay unknown unless another input fixes them.

    Raises ShapeError when two known dimensions differ and neither is 1. A known dimension of 1 against an
    unknown one gives unknown; a known dimension ``n > 1`` against an unknown one gives ``n`` (checked at run time).
    """
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(ndim):
        dims = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            described = " and ".join(str(tuple(s)) for s in shapes)
            raise node_error(
                ShapeError,
                op_name,
                f"shapes {described} cannot be broadcast together "
                f"(dimension {axis - ndim} is {' vs '.join(str(d) for d in sorted(known))})",
            )
        if known:
            result.append(known.pop())
        elif any(d is None for d in dims):
            result.append(None)
        else:
            result.append(1)
    return tuple(result)


def broadcast_array_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's broadcast of run-time shapes, as ``np.broadcast_shapes`` (same result and message), for any number of
    dimensions an array can have: ``np.broadcast_shapes`` stops at 32 even where arrays have 64."""
    ndim = max((len(shape) for shape in shapes), default=0)
    result = []
    for axis in range(ndim):  # axis by axis, then shape by shape: the first mismatch is the one NumPy names
        size, setter = 1, 0
        for position, shape in enumerate(shapes):
            offset = axis - ndim + len(shape)
            dim = shape[offset] if offset >= 0 else 1
            if dim == 1 or dim == size:
                continue
            if size != 1:
                raise ValueError(
                    "shape mismatch: objects cannot be broadcast to a single shape.  Mismatch is between "
                    f"arg {setter} with shape {tuple(shapes[setter])} and arg {position} with shape {tuple(shape)}."
                )
            size, setter = dim, position
        result.append(size)
    return tuple(result)


def normalize_axes(op_name: str, axis: object, ndim: int) -> tuple[int, ...]:
    """Turn ``axis`` (None, int or tuple of ints, negatives allowed) into a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    result = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise node_error(AxisError, op_name, f"axis must be an int, a tuple of ints or None, got {axis!r}")
        if not -ndim <= item < ndim:
            raise node_error(AxisError, op_name, f"axis {item} is out of bounds for an input with {ndim} dimension(s)")
        result.append(int(item) % ndim)
    if len(set(result)) != len(result):
        raise node_error(AxisError, op_name, f"repeated axis in {axis!r}")
    return tuple(sorted(result))

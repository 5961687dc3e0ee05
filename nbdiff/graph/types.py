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
    except TypeError:
        raise node_error(
            DTypeError, "dtype", f"unknown dtype {dtype!r}; nbdiff supports {', '.join(SUPPORTED_DTYPES)}"
        ) from None
    if name not in SUPPORTED_DTYPES:
        supported = ", ".join(SUPPORTED_DTYPES)
        raise node_error(DTypeError, "dtype", f"unsupported dtype {name!r}; nbdiff supports {supported}")
    return name


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

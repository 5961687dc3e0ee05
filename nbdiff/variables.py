"""Symbolic input variables: ``nd.scalar``, ``nd.vector``, ``nd.matrix`` and ``nd.tensor``."""

from __future__ import annotations

from typing import Sequence

from nbdiff.errors import ShapeError
from nbdiff.graph.basic import Variable
from nbdiff.graph.types import TensorType, as_dtype


def tensor(
    name: str | None = None,
    ndim: int | None = None,
    dtype: object = "float64",
    shape: Sequence[int | None] | None = None,
) -> Variable:
    """A symbolic input of any rank: ``ndim`` dimensions, or the given static ``shape`` (``None`` = unknown)."""
    if shape is None:
        if ndim is None:
            raise ShapeError(f"tensor {name!r}: give ndim= or shape=")
        if not isinstance(ndim, int) or ndim < 0:
            raise ShapeError(f"tensor {name!r}: ndim must be a non-negative int, got {ndim!r}")
        shape = (None,) * ndim
    shape = tuple(shape)
    for dim in shape:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 0):
            raise ShapeError(f"tensor {name!r}: shape entries must be non-negative ints or None, got {shape!r}")
    if ndim is not None and ndim != len(shape):
        raise ShapeError(f"tensor {name!r}: shape {shape} has {len(shape)} dimension(s), but ndim={ndim}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"variable name must be a string, got {type(name).__name__}")
    return Variable(TensorType(as_dtype(dtype), shape), name=name)


def scalar(name: str | None = None, dtype: object = "float64") -> Variable:
    """A symbolic 0-d input."""
    return tensor(name, 0, dtype)


def vector(name: str | None = None, dtype: object = "float64", shape: Sequence[int | None] | None = None) -> Variable:
    """A symbolic 1-d input (``shape=(n,)`` fixes its length)."""
    return tensor(name, 1, dtype, shape)


def matrix(name: str | None = None, dtype: object = "float64", shape: Sequence[int | None] | None = None) -> Variable:
    """A symbolic 2-d input (``shape=(m, n)``, entries may be ``None``)."""
    return tensor(name, 2, dtype, shape)

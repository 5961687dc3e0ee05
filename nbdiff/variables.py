"""Symbolic input variables: ``nd.scalar``, ``nd.vector``, ``nd.matrix`` and ``nd.tensor``.

Every argument is checked when the variable is built, so a mistake is reported on the user's line, naming the
constructor: the name must be a str (or None), the dtype one nbdiff supports, and the shape one a NumPy array can
have (at most ``max_ndim()`` dimensions, each a non-negative int or None, and not more bytes than ``np.intp`` counts).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nbdiff.errors import DTypeError, GraphError, ShapeError, node_error
from nbdiff.graph.basic import Variable
from nbdiff.graph.types import TensorType, as_dtype, max_ndim, ndim_limit_detail, static_shape


def tensor(
    name: str | None = None,
    ndim: int | None = None,
    dtype: object = "float64",
    shape: Sequence[int | None] | None = None,
) -> Variable:
    """A symbolic input of any rank: ``ndim`` dimensions, or the given static ``shape`` (``None`` = unknown)."""
    return _input("tensor", name, ndim, dtype, shape)


def scalar(name: str | None = None, dtype: object = "float64") -> Variable:
    """A symbolic 0-d input."""
    return _input("scalar", name, 0, dtype, None)


def vector(name: str | None = None, dtype: object = "float64", shape: Sequence[int | None] | None = None) -> Variable:
    """A symbolic 1-d input (``shape=(n,)`` fixes its length)."""
    return _input("vector", name, 1, dtype, shape)


def matrix(name: str | None = None, dtype: object = "float64", shape: Sequence[int | None] | None = None) -> Variable:
    """A symbolic 2-d input (``shape=(m, n)``, entries may be ``None``)."""
    return _input("matrix", name, 2, dtype, shape)


def _input(kind: str, name: object, ndim: object, dtype: object, shape: object) -> Variable:
    """The input variable built by constructor ``kind``, after checking each argument (in signature order)."""
    if name is not None and not isinstance(name, str):
        detail = f"the name must be a str or None, got {type(name).__name__} {_short(name)}"
        raise node_error(GraphError, kind, detail)
    where = kind if name is None else f"{kind} {name!r}"
    try:
        dtype_name = as_dtype(dtype)
    except DTypeError as exc:
        raise node_error(DTypeError, where, str(exc).splitlines()[0].removeprefix("dtype: ")) from None
    if shape is None:
        if ndim is None:
            raise node_error(ShapeError, where, "give ndim= or shape=")
        dims: tuple = (None,) * _rank(where, ndim)
    else:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
            detail = f"shape must be a tuple or list of non-negative ints or None, got {type(shape).__name__} "
            raise node_error(ShapeError, where, detail + _short(shape))
        dims = static_shape(where, tuple(shape), dtype_name)
        if ndim is not None and _rank(where, ndim) != len(dims):
            raise node_error(ShapeError, where, f"shape {dims} has {len(dims)} dimension(s), but ndim={ndim}")
    return Variable(TensorType(dtype_name, dims), name=name)


def _rank(where: str, ndim: object) -> int:
    """``ndim`` as an int from 0 to NumPy's limit; ``ShapeError`` otherwise (before anything that large is built)."""
    if isinstance(ndim, (bool, np.bool_)) or not isinstance(ndim, (int, np.integer)) or ndim < 0:
        raise node_error(ShapeError, where, f"ndim must be a non-negative int, got {_short(ndim)}")
    if ndim > max_ndim():
        raise node_error(ShapeError, where, f"ndim: {ndim_limit_detail(int(ndim))}")
    return int(ndim)


def _short(value: object) -> str:
    """``repr(value)``, cut to a line for messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

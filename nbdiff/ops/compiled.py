"""How an op that is not elementwise tells a compiled backend to run it: an ``OpKernel``.

Elementwise ops reach compiled code through fusion (their ``scalar_code`` becomes part of a fused loop). An op
whose work is a loop of another shape (a row-wise softmax, a cross-entropy gradient) can instead describe one
kernel of its own through an optional method ``op_kernel(node) -> OpKernel | None``: the text of a plain Python
function ``kernel`` over arrays, ``math`` and ``np`` (Numba compiles it; nothing here imports Numba), the argument
types to compile it for, and an adapter from the op's inputs to the kernel's arguments. The op's ``perform`` stays
the reference: the backend checks the kernel against it on the first compiled call, and runs ``perform`` for
inputs the adapter declines (``arguments`` returning None).

Adding a compiled op touches only the op's definition: its ``op_kernel`` and its source text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Arguments = tuple[list, Callable[[], tuple[np.ndarray, ...]]]


@dataclass(frozen=True)
class OpKernel:
    """One op's compiled kernel.

    ``source`` defines ``kernel(*inputs, *outputs)``, writing every output into a preallocated array;
    ``argument_types`` are Numba's type strings for its parameters in order (``"float32[:, ::1]"``, ``"int64[::1]"``);
    ``arguments(arrays)`` gives the call's arguments (output buffers included) and a function returning the op's
    outputs once the kernel has run, or None when this call's inputs do not fit (``perform`` runs then)."""

    name: str
    source: str
    argument_types: tuple[str, ...]
    arguments: Callable[[Sequence[np.ndarray]], Arguments | None]

    @property
    def signature(self) -> str:
        """The Numba signature string the kernel is compiled for."""
        return "(" + ", ".join(self.argument_types) + ")"


def rows_of(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-contiguous 2-D array of its last axis's slices (a view where it can be one)."""
    return np.ascontiguousarray(array).reshape(-1, array.shape[-1])


def one_per_row(indices: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """``indices`` (one per slice of ``x``'s last axis, shaped ``x.shape[:-1] + (1,)``) as a flat int64 array; None
    when they have another shape or dtype (e.g. broadcasting past ``x``)."""
    if indices.shape != x.shape[:-1] + (1,) or indices.dtype != np.int64:
        return None
    return np.ascontiguousarray(indices).reshape(-1)

"""Indexing: x[ints, slices, None, Ellipsis, integer arrays, boolean masks] and take_along_axis."""

from __future__ import annotations

__all__: list[str] = []

"""Linear algebra: matmul, dot, outer."""

from __future__ import annotations

__all__: list[str] = []

"""Elementwise fusion (being written): ``kernels_of`` lists a graph's fused kernels for ``f.kernels``."""

from __future__ import annotations

from typing import Any

from nbdiff.graph.fgraph import Graph


def kernels_of(graph: Graph) -> list[Any]:
    """The fused kernels of ``graph``, in execution order (none until the fusion pass exists)."""
    return []

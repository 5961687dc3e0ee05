"""Neural-network functions: logsumexp, softmax, log_softmax, sigmoid-style helpers built on reductions."""

from __future__ import annotations

__all__: list[str] = []

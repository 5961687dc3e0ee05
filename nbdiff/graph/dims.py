"""Symbolic dimensions: an unknown run-time size shared by every variable that provably has it.

Ops state how symbols flow through them in an optional ``symbolic_shape(input_dims)`` method (elementwise ops
broadcast, reductions drop axes, ...); ``nbdiff.rewrite.shapes.ShapeFacts`` applies them over a graph.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence, Union

_fresh = itertools.count()


@dataclass(frozen=True, eq=False)
class Dim:
    """An unknown run-time size; two variables sharing a ``Dim`` (the same object) have equal sizes on that axis."""

    label: str

    def __repr__(self) -> str:
        return self.label


Size = Union[int, Dim]


def broadcast_dims(shapes: Sequence[tuple[Size, ...]]) -> tuple[Size, ...]:
    """Broadcast symbolic shapes (right-aligned): 1s give way, equal symbols stay, different symbols are unknown."""
    ndim = max((len(s) for s in shapes), default=0)
    result: list[Size] = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0} - {1}
        if not sizes:
            result.append(1)
        elif len(sizes) == 1:
            result.append(next(iter(sizes)))
        else:
            known = [d for d in sizes if isinstance(d, int)]
            result.append(known[0] if len(known) == 1 else fresh_dim())
    return tuple(result)


def fresh_dim() -> Dim:
    """A new symbol, equal to no other: an unknown size nothing is known about."""
    return Dim(f"d{next(_fresh)}")

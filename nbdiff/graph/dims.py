"""Symbolic dimensions: an unknown run-time size shared by every variable that provably has it.

Ops state how symbols flow through them in an optional ``symbolic_shape(input_dims)`` method (elementwise ops
broadcast, reductions drop axes, ...); ``nbdiff.rewrite.shapes.ShapeFacts`` applies them over a graph.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

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
            if len(known) == 1:
                result.append(known[0])
            elif not known:
                result.append(joined_dim(sizes))  # type: ignore[arg-type]
            else:
                result.append(fresh_dim())
    return tuple(result)


@dataclass(frozen=True)
class JoinedDim(Dim):
    """Several unknown sizes broadcast together (each is 1 or the result): equal sets of symbols, equal sizes.

    Unlike plain symbols, joined ones compare by value, so ``broadcast(broadcast(a, b), a)`` is ``broadcast(a, b)``
    wherever it is computed (e.g. a Hessian-vector product mixing x's and v's unknown lengths).
    """

    atoms: frozenset = frozenset()


def joined_dim(symbols: Iterable[Dim]) -> Dim:
    """The symbol for ``symbols`` broadcast together (nested joins flattened; one symbol is itself)."""
    atoms: set[Dim] = set()
    for symbol in symbols:
        atoms.update(symbol.atoms if isinstance(symbol, JoinedDim) else (symbol,))
    if len(atoms) == 1:
        return next(iter(atoms))
    label = "max(" + ", ".join(sorted(a.label for a in atoms)) + ")"
    return JoinedDim(label, frozenset(atoms))


def broadcasts_into(small: tuple[Size, ...], big: tuple[Size, ...]) -> bool:
    """Whether a value of shape ``small`` provably broadcasts to ``big`` axis by axis, without adding axes: each
    size is equal, 1, or one of the symbols ``big``'s joined size was broadcast from."""
    if len(small) != len(big):
        return False
    return all(
        s == b or s == 1 or (isinstance(s, Dim) and isinstance(b, Dim) and _atoms(s) <= _atoms(b))
        for s, b in zip(small, big)
    )


def _atoms(dim: Dim) -> frozenset:
    return dim.atoms if isinstance(dim, JoinedDim) else frozenset((dim,))


def fresh_dim() -> Dim:
    """A new symbol, equal to no other: an unknown size nothing is known about."""
    return Dim(f"d{next(_fresh)}")

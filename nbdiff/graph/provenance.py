"""Where each node came from: the user's source line plus a stack of transforms ("pullback of tanh").

A node records, when it is built, the first stack frame outside the nbdiff package (a file or a notebook cell,
and a line) and the transforms active at that moment. Hash-consing returns an existing node when the same op is
applied to the same inputs again; the node then keeps every site that built it.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_state = threading.local()


@dataclass(frozen=True)
class Site:
    """A user's source line: file (or notebook cell) name, line number and the line's text."""

    filename: str
    lineno: int
    function: str

    @property
    def code(self) -> str:
        """The source text of the line, when it can be read (files and IPython cells)."""
        return linecache.getline(self.filename, self.lineno).strip()

    @property
    def label(self) -> str:
        """A short ``file:line`` label: the file's base name, or the cell's name for notebook cells."""
        name = self.filename
        if not name.startswith("<"):
            name = os.path.basename(name)
        return f"{name}:{self.lineno}"

    def describe(self) -> str:
        """``file:line: code`` for error messages."""
        code = self.code
        return f"{self.label}: {code}" if code else self.label


@dataclass(frozen=True)
class Origin:
    """One construction of a node: the site and the transforms that were active (innermost last)."""

    site: Site | None
    transforms: tuple[str, ...]

    def describe(self) -> str:
        where = self.site.describe() if self.site is not None else "<unknown>"
        if self.transforms:
            return f"{where} ({'; '.join(self.transforms)})"
        return where


class Provenance:
    """Every origin of a node, the first one being the primary one shown in errors and printers."""

    __slots__ = ("origins",)

    def __init__(self, origins: list[Origin]):
        self.origins = origins

    @property
    def primary(self) -> Origin:
        return self.origins[0]

    @property
    def site(self) -> Site | None:
        return self.primary.site

    @property
    def transforms(self) -> tuple[str, ...]:
        return self.primary.transforms

    @property
    def is_gradient(self) -> bool:
        """True when the node was first built by a derivative transform (a pullback or pushforward)."""
        return bool(self.primary.transforms)

    def add(self, origin: Origin) -> None:
        if origin not in self.origins:
            self.origins.append(origin)

    def describe(self) -> str:
        return self.primary.describe()

    def ordered_for_now(self) -> list[Origin]:
        """The origins, the one the running code is about first: sites in a function now on the user's call stack
        (innermost first), then sites in the file or cell running now, then the others; the latest first among equals.
        Hash-consing shares a node between every line that builds it, so the first builder may be another cell."""
        stack = _user_stack()
        current_file = stack[0][0] if stack else None

        def rank(position: int) -> tuple:
            site = self.origins[position].site
            if site is None:
                return (3, position)
            if (site.filename, site.function) in stack:
                return (0, stack.index((site.filename, site.function)), -position)
            if site.filename == current_file:
                return (1, -position)
            return (2, -position)

        return [self.origins[i] for i in sorted(range(len(self.origins)), key=rank)]

    def __repr__(self) -> str:
        return f"Provenance({self.describe()!r})"


def _user_frame():
    """The innermost frame whose code lives outside the nbdiff package."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR) and not filename.startswith("<frozen"):
            return frame
        frame = frame.f_back
    return None


def _user_stack() -> list[tuple[str, str]]:
    """``(filename, function)`` of every frame outside nbdiff now running, innermost first."""
    frames = []
    frame = _user_frame()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR) and not filename.startswith("<frozen"):
            frames.append((filename, frame.f_code.co_name))
        frame = frame.f_back
    return frames


def current_site() -> Site | None:
    """The user's source line that is running now (first frame outside nbdiff)."""
    frame = _user_frame()
    if frame is None:
        return None
    return Site(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


def current_transforms() -> tuple[str, ...]:
    return getattr(_state, "transforms", ())


def current_origin() -> Origin:
    return Origin(current_site(), current_transforms())


def inherited_origins() -> tuple[Origin, ...] | None:
    """The origins a rewrite hands to the nodes it creates (see ``inherit``), or None outside a rewrite."""
    pending = getattr(_state, "inherited", None)
    return None if pending is None else pending.origins()


class inherit:
    """Give every node built inside the block the origins of ``provenances`` (the nodes a rewrite replaces),
    each tagged with ``note`` when given (e.g. ``"rewrite log1p"``), instead of the rewriting code's own location.

    A plain class rather than a generator context manager, and the tagged origins are only computed when a node is
    actually built: rewrites try many rules on every node and most of them build nothing.
    """

    __slots__ = ("provenances", "note", "previous", "_origins")

    def __init__(self, provenances: Sequence[Provenance], note: str | None = None):
        self.provenances = provenances
        self.note = note
        self._origins: tuple[Origin, ...] | None = None

    def origins(self) -> tuple[Origin, ...]:
        if self._origins is None:
            tagged: list[Origin] = []
            for provenance in self.provenances:
                for origin in provenance.origins:
                    origin = Origin(origin.site, origin.transforms + (self.note,)) if self.note else origin
                    if origin not in tagged:
                        tagged.append(origin)
            self._origins = tuple(tagged)
        return self._origins

    def __enter__(self) -> inherit:
        self.previous = getattr(_state, "inherited", None)
        _state.inherited = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        _state.inherited = self.previous


@contextlib.contextmanager
def transform(description: str) -> Iterator[None]:
    """Tag every node built inside the block with ``description`` (e.g. ``"pullback of tanh at f.py:3"``)."""
    previous = current_transforms()
    _state.transforms = previous + (description,)
    try:
        yield
    finally:
        _state.transforms = previous

"""Where each node came from: the user's source line plus a stack of transforms ("pullback of tanh").

A node records, when it is built, the first stack frame outside the nbdiff package (a file or a notebook cell,
and a line), the notes of the transforms active at that moment ("vmap of exp", "rewrite log1p", "fused into kernel
k0") and, for a node a derivative built, a typed ``Derivative`` record naming the forward node it differentiates.
That record is the one place that decides whether a node is a gradient node (``Provenance.is_gradient``): the
printer, the kernel listing and the drawings all read it. Hash-consing returns an existing node when the same op
is applied to the same inputs again; the node then keeps every site that built it.

Notebook cells are named as IPython names them (``In[15]:3``, from IPython's own map of cell file names to
execution counts), and ``%%graph`` cells as the cell they were run in; elsewhere a site is ``file:line``.
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


_cell_names: dict[str, str] = {}  # pseudo-files nbdiff compiled for a cell (a %%graph body) -> "In[15]"


def name_cell(filename: str, name: str) -> None:
    """Name a pseudo-file nbdiff compiled for a notebook cell (a ``%%graph`` body) after that cell (``In[15]``)."""
    _cell_names[filename] = name


def cell_name(filename: str) -> str | None:
    """The name IPython gives the cell compiled as ``filename`` (``In[15]``), or None for a file or outside IPython.

    IPython keeps its own map from the file names it compiles cells under (``3049196835.py`` in ipykernel) to
    execution counts, and names cells from it in tracebacks (``Cell In[15], line 3``): ``format_code_name`` of the
    shell's compiler is its public face. IPython is only asked when it is already imported; inside
    ``same_cell_names()`` each file name is asked once.
    """
    memo = getattr(_state, "cell_names", None)
    if memo is not None and filename in memo:
        return memo[filename]
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    format_code_name = getattr(getattr(shell, "compile", None), "format_code_name", None)
    named = format_code_name(filename) if format_code_name is not None else None
    name = named[1] if named else None
    if memo is not None:
        memo[filename] = name
    return name


@contextlib.contextmanager
def same_cell_names() -> Iterator[None]:
    """Ask IPython for each cell's name once inside the block: a printer or a drawing labels thousands of nodes
    from a handful of cells, and IPython's answer does not change while it runs (no cell is compiled meanwhile)."""
    outer = getattr(_state, "cell_names", None)
    if outer is None:
        _state.cell_names = {}
    try:
        yield
    finally:
        if outer is None:
            _state.cell_names = None


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
        """A short label: ``In[15]:3`` for a notebook cell (IPython's name), else ``file.py:3`` (the base name)."""
        cell = cell_name(self.filename)
        if cell is not None:
            return f"{cell}:{self.lineno}"
        name = self.filename
        if not name.startswith("<"):
            name = os.path.basename(name)
        return f"{name}:{self.lineno}"

    def describe(self) -> str:
        """``file:line: code`` for error messages; a notebook cell as IPython's tracebacks name it, ``Cell In[15],
        line 3: code``."""
        cell = cell_name(self.filename)
        where = f"Cell {cell}, line {self.lineno}" if cell is not None else self.label
        code = self.code
        return f"{where}: {code}" if code else where


@dataclass(frozen=True)
class Derivative:
    """The forward node a gradient node differentiates: the derivative call that built it (``grad``, ``Lop``,
    ``Rop``, ``jacobian ...``) and, inside an op's rule, the rule (``pullback`` or ``pushforward``) with the forward
    node's op and user line. Nodes the walker builds outside any rule (seeds, sums of contributions) name no node.

    This record, not the text of a transform, is what makes a node a gradient node.
    """

    call: str
    rule: str | None = None
    op: str | None = None
    site: Site | None = None

    @classmethod
    def of(cls, rule: str, node: object, call: str = "") -> Derivative:
        """The record of ``rule`` (``pullback``/``pushforward``) applied to the forward Apply ``node``."""
        provenance = node.provenance  # type: ignore[attr-defined]
        return cls(call, rule, node.op.name, provenance.site)  # type: ignore[attr-defined]

    def within(self, outer: Derivative | None) -> Derivative:
        """The record of a node built with ``self`` active inside ``outer``: the outermost rule names the forward
        node (the user's op, e.g. a scan whose pullback runs ``Lop`` on its body), the outermost call the walk."""
        if outer is None:
            return self
        if outer.rule is not None or self.rule is None:
            return outer
        return Derivative(outer.call or self.call, self.rule, self.op, self.site)

    def describe(self) -> str:
        """``pullback of tanh at f.py:3``, or the call (``grad``) for the walker's own nodes."""
        if self.rule is None:
            return self.call
        where = f" at {self.site.label}" if self.site is not None else ""
        return f"{self.rule} of {self.op}{where}"

    def chain(self) -> str:
        """The call and the rule: ``grad; pullback of tanh at f.py:3``."""
        if self.rule is None or not self.call:
            return self.describe()
        return f"{self.call}; {self.describe()}"

    def label(self) -> str:
        """The compact label printers show: ``grad of tanh @ f.py:3``, ``jvp of exp @ f.py:2``, or ``grad``."""
        if self.rule is None:
            return self.call
        short = "jvp" if self.rule == "pushforward" else "grad"
        where = f" @ {self.site.label}" if self.site is not None else ""
        return f"{short} of {self.op}{where}"


@dataclass(frozen=True)
class Origin:
    """One construction of a node: the site, the notes of the transforms that were active (innermost last), and
    the derivative that built it (None for a forward node)."""

    site: Site | None
    transforms: tuple[str, ...]
    derivative: Derivative | None = None

    def describe(self) -> str:
        where = self.site.describe() if self.site is not None else "<unknown>"
        notes = self.notes()
        return f"{where} ({notes})" if notes else where

    def notes(self) -> str:
        """The derivative's call and rule, then the other transforms: ``grad; pullback of tanh at f.py:3``."""
        parts = ([self.derivative.chain()] if self.derivative is not None else []) + list(self.transforms)
        return "; ".join(parts)

    def label(self) -> str:
        """The compact label printers show: ``grad of tanh @ f.py:3; fused into kernel k0``."""
        parts = ([self.derivative.label()] if self.derivative is not None else []) + list(self.transforms)
        return "; ".join(parts)


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
    def derivative(self) -> Derivative | None:
        """What the node differentiates, when a derivative built it first (see ``Derivative``)."""
        return self.primary.derivative

    @property
    def is_gradient(self) -> bool:
        """True when the node was first built by a derivative (grad, Lop, Rop, a pullback or a pushforward): the one
        test every printer and drawing uses. A forward node a rewrite or fusion rebuilt stays a forward node."""
        return self.primary.derivative is not None

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
    """The notes of the transforms active now, outermost first."""
    return getattr(_state, "transforms", ())


def current_derivative() -> Derivative | None:
    """The derivative active now (None outside grad, Lop, Rop and the rules they call)."""
    return getattr(_state, "derivative", None)


def current_origin() -> Origin:
    return Origin(current_site(), current_transforms(), current_derivative())


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
                    if self.note:
                        origin = Origin(origin.site, origin.transforms + (self.note,), origin.derivative)
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
    """Tag every node built inside the block with the note ``description`` (e.g. ``"vmap of exp at f.py:3"``)."""
    previous = current_transforms()
    _state.transforms = previous + (description,)
    try:
        yield
    finally:
        _state.transforms = previous


@contextlib.contextmanager
def differentiating(derivative: Derivative | None) -> Iterator[None]:
    """Mark every node built inside the block as a gradient node with the record ``derivative`` (combined with the
    derivative already active, see ``Derivative.within``); None changes nothing."""
    previous = current_derivative()
    if derivative is not None:
        _state.derivative = derivative.within(previous)
    try:
        yield
    finally:
        _state.derivative = previous

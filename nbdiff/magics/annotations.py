"""Input declarations of a ``%%graph`` cell: ``x: vector``, ``W: matrix[float32]``, ``T: tensor3[None, 8, 8]``.

An annotation is read from the syntax tree, never evaluated. Its grammar::

    annotation := KIND | KIND "[" arguments "]"
    KIND       := scalar | vector | matrix | tensor | tensorN      (N = the rank, at most NumPy's limit: 64 in NumPy 2)
    arguments  := DTYPE | [DTYPE ","] DIM ("," DIM)*
    DTYPE      := a dtype name nbdiff supports: float32, float64, int64, bool, ... (bare, quoted or np.float32)
    DIM        := a non-negative int literal | None                 (None: known only at run time)

The dtype defaults to float64. ``scalar`` takes a dtype only; ``vector``, ``matrix`` and ``tensorN`` take no
dimensions (all unknown) or exactly 1, 2 and N of them; plain ``tensor`` takes its rank from its dimensions
(``tensor[float32, None, 3, 3]``). A malformed declaration, or a shape no NumPy array can have (too many dimensions,
too many bytes), raises ``UsageError`` naming the cell line.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from IPython.core.error import UsageError

from nbdiff.errors import ShapeError
from nbdiff.graph.basic import Variable
from nbdiff.graph.types import SUPPORTED_DTYPES, max_ndim, static_shape
from nbdiff.variables import tensor

FIXED_RANKS = {"scalar": 0, "vector": 1, "matrix": 2}
_TENSOR_KIND = re.compile(r"tensor(\d*)")
KINDS_HINT = "scalar, vector, matrix, tensor[dims] or tensorN (e.g. tensor3)"
RANK_DIGITS = 4  # a tensorN rank with more digits is over NumPy's limit anyway: never converted (int() of huge text)


@dataclass(frozen=True)
class InputSpec:
    """One declared input: its name, dtype, static shape (None = unknown dim) and the cell line declaring it."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    lineno: int

    def make(self) -> Variable:
        """The input variable; call it from the cell's line so its provenance names that line."""
        return tensor(self.name, dtype=self.dtype, shape=self.shape)


def kind_rank(kind: str) -> int | None:
    """The rank a kind name fixes (``matrix`` -> 2, ``tensor3`` -> 3), None for plain ``tensor``.

    Raises ``KeyError`` for a name that is no kind.
    """
    if kind in FIXED_RANKS:
        return FIXED_RANKS[kind]
    match = _TENSOR_KIND.fullmatch(kind)
    if match is None:
        raise KeyError(kind)
    digits = match.group(1)
    if not digits:
        return None
    return int(digits) if len(digits) <= RANK_DIGITS else 10**RANK_DIGITS


def names_a_kind(annotation: ast.expr) -> bool:
    """True when the annotation is written as an input kind (``vector``, ``matrix[...]``), well formed or not."""
    base = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    if not isinstance(base, ast.Name):
        return False
    try:
        kind_rank(base.id)
    except KeyError:
        return False
    return True


def parse_declaration(statement: ast.AnnAssign, source: str) -> InputSpec:
    """The input a ``name: annotation`` statement declares; ``UsageError`` naming the line if it is malformed."""
    segment = ast.get_source_segment(source, statement) or ""
    where = f"line {statement.lineno}: `{segment if len(segment) <= 80 else segment[:77] + '...'}`"
    if not isinstance(statement.target, ast.Name):
        raise UsageError(f"{where}: declare an input with a plain name, e.g. `x: vector`")
    annotation = statement.annotation
    base, arguments = annotation, []
    if isinstance(annotation, ast.Subscript):
        base = annotation.value
        index = annotation.slice
        arguments = list(index.elts) if isinstance(index, ast.Tuple) else [index]
    if not isinstance(base, ast.Name) or not names_a_kind(base):
        raise UsageError(f"{where}: unknown input type; use {KINDS_HINT}")
    kind = base.id
    dtype = "float64"
    if arguments and _looks_like_dtype(arguments[0]):
        dtype = _parse_dtype(arguments[0], where)
        arguments = arguments[1:]
    if len(arguments) > max_ndim():
        raise UsageError(f"{where}: {len(arguments)} dimensions, but a NumPy array has at most {max_ndim()}")
    dims = tuple(_parse_dim(node, where) for node in arguments)
    shape = _shape_for(kind, dims, where)
    try:
        static_shape(kind, shape, dtype)
    except ShapeError as exc:  # e.g. more bytes than an array can hold: the first line, without nbdiff's "at ..."
        raise UsageError(f"{where}: {str(exc).splitlines()[0].removeprefix(kind + ': ')}") from None
    return InputSpec(statement.target.id, dtype, shape, statement.lineno)


def _looks_like_dtype(node: ast.expr) -> bool:
    """A bare name, a dotted name or a string is a dtype; int literals and None are dimensions."""
    if isinstance(node, (ast.Name, ast.Attribute)):
        return True
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _parse_dtype(node: ast.expr, where: str) -> str:
    """The dtype name of ``float32``, ``"float32"`` or ``np.float32``, checked against nbdiff's dtypes."""
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    else:
        name = node.value  # type: ignore[attr-defined]
    if name not in SUPPORTED_DTYPES:
        raise UsageError(
            f"{where}: unknown dtype {name!r}; use one of {', '.join(SUPPORTED_DTYPES)} "
            f"(dimensions are int literals or None)"
        )
    return name


def _parse_dim(node: ast.expr, where: str) -> int | None:
    """One static dimension: a non-negative int literal, or None for a dimension known only at run time."""
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    text = ast.unparse(node)
    raise UsageError(f"{where}: a dimension must be a non-negative int literal or None, got `{text}`")


def _shape_for(kind: str, dims: tuple[int | None, ...], where: str) -> tuple[int | None, ...]:
    """The static shape of a declaration of ``kind`` with the given dimensions (none given: all unknown)."""
    rank = kind_rank(kind)
    if rank is not None and rank > max_ndim():
        raise UsageError(f"{where}: too many dimensions: a NumPy array has at most {max_ndim()}")
    if rank is None:
        if not dims:
            raise UsageError(f"{where}: give tensor its dimensions (tensor[None, 3]) or a rank (tensor2)")
        return dims
    if kind == "scalar" and dims:
        raise UsageError(f"{where}: scalar takes a dtype only, e.g. scalar[int64]")
    if not dims:
        return (None,) * rank
    if len(dims) != rank:
        raise UsageError(f"{where}: {kind} takes {rank} dimension(s), got {len(dims)}")
    return dims

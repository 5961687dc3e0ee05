"""Running the body of a ``%%graph`` cell under a named pseudo-file, with its inputs read from annotations.

Line numbers count the ``%%graph`` line, as the editor does: the body's first line is line 2. Run in a notebook
cell, the body is compiled under a file name IPython's compiler makes and maps to the cell's execution count (its
public ``compile.cache``), so nbdiff's labels and IPython's tracebacks both name it as IPython names every cell
(``In[15]:3``, ``Cell In[15], line 3``). Run outside a cell (``run_cell_magic`` from a script or test), it is the
pseudo-file ``<graph NAME cell>``, registered in ``linecache``. Each declaration ``x: vector`` is rewritten into a
call that builds the input variable on that very line. The cell runs in its own namespace: only the function the
magic binds reaches the user namespace.
"""

from __future__ import annotations

import ast
import linecache
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from IPython.core.error import UsageError

import nbdiff
from nbdiff.graph.basic import Variable
from nbdiff.graph.provenance import cell_name
from nbdiff.magics.annotations import InputSpec, names_a_kind, parse_declaration

_CELL_NAME = re.compile(r"In\[(\d+)\]")  # how IPython names a cell it compiled (compile.format_code_name)
DECLARE = "__nbdiff_declare__"  # the hidden callable a declaration is rewritten into
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_SCOPES += (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
YIELDING_MODULES = ("builtins", "math", "numpy")  # their functions cannot take graph variables


@dataclass
class ParsedCell:
    """A cell ready to run: its tree with declarations rewritten, its inputs, and the names it binds."""

    source: str
    filename: str
    tree: ast.Module
    inputs: list[InputSpec]
    bindings: list[tuple[int, int, str]]  # (line, column, name) of every binding, in source order

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def bound_names(self) -> list[str]:
        """Every name the cell binds, in order of first binding."""
        return list(dict.fromkeys(name for _, _, name in self.bindings))

    def last_bound(self) -> str | None:
        """The last name the cell binds (in source order): the default output."""
        return self.bindings[-1][2] if self.bindings else None

    def last_line_of(self, name: str) -> int:
        """The line of the last binding of ``name``."""
        return max(line for line, _, bound in self.bindings if bound == name)


def register_source(name: str, source: str, header: str, shell: Any = None) -> str:
    """Register the cell's text (``header``, the ``%%graph ...`` line, then ``source``) for tracebacks and return
    the file name to compile the body under.

    Inside a notebook cell of ``shell``, IPython's compiler caches the text under a name it maps to that cell's
    execution count. Otherwise it is ``<graph NAME cell>`` in ``linecache``; a different source for the same NAME
    (the cell edited and run again) gets ``<graph NAME cell #2>``, ``#3``, ..., so graphs built by an earlier
    version still show their own lines.
    """
    text = f"{header}\n{source}"
    number = _running_cell_number() if shell is not None else None
    if number is not None:
        return shell.compile.cache(text, number)
    lines = [line if line.endswith("\n") else line + "\n" for line in text.splitlines()]
    filename, version = f"<graph {name} cell>", 1
    while filename in linecache.cache and linecache.cache[filename][2] != lines:
        version += 1
        filename = f"<graph {name} cell #{version}>"
    linecache.cache[filename] = (len(text), None, lines, filename)  # mtime None: never evicted by checkcache
    return filename


def _running_cell_number() -> int | None:
    """The execution count of the notebook cell running the magic (the innermost frame whose file IPython names
    ``In[n]``), or None when the magic is not run from a cell (``run_cell_magic`` from a script or a test)."""
    frame = sys._getframe(1)
    while frame is not None:
        match = _CELL_NAME.fullmatch(cell_name(frame.f_code.co_filename) or "")
        if match is not None:
            return int(match.group(1))
        frame = frame.f_back
    return None


def parse_cell(source: str, filename: str) -> ParsedCell:
    """Parse the cell body, read its input declarations and rewrite each into a call building that input.

    The body is parsed below an empty first line, the ``%%graph`` line's place, so line numbers are the editor's.
    """
    source = "\n" + source
    tree = ast.parse(source, filename)
    if not tree.body:
        raise UsageError("%%graph: the cell is empty; declare inputs (x: vector) and compute outputs from them")
    _check_declarations_are_top_level(tree, source)
    inputs: list[InputSpec] = []
    for position, statement in enumerate(tree.body):
        if isinstance(statement, ast.AnnAssign) and statement.value is None:
            spec = parse_declaration(statement, source)
            previous = next((s for s in inputs if s.name == spec.name), None)
            if previous is not None:
                raise UsageError(
                    f"line {spec.lineno}: input {spec.name!r} is already declared on line {previous.lineno}"
                )
            tree.body[position] = _declaration_call(statement, len(inputs))
            inputs.append(spec)
    ast.fix_missing_locations(tree)
    return ParsedCell(source, filename, tree, inputs, _bindings(tree))


def _check_declarations_are_top_level(tree: ast.Module, source: str) -> None:
    """Declarations belong at the top level and take no value; anything else is a usage mistake."""
    top_level = {id(statement) for statement in tree.body}
    for node in ast.walk(tree):
        if not isinstance(node, ast.AnnAssign):
            continue
        code = ast.get_source_segment(source, node)
        if node.value is not None and names_a_kind(node.annotation):
            raise UsageError(f"line {node.lineno}: `{code}`: an input declaration takes no value (write x: vector)")
        if node.value is None and id(node) not in top_level:
            raise UsageError(f"line {node.lineno}: `{code}`: declare inputs at the top level of the cell")


def _declaration_call(statement: ast.AnnAssign, position: int) -> ast.Assign:
    """``x: vector`` -> ``x = __nbdiff_declare__(position)``, on the declaration's line."""
    call = ast.Call(ast.Name(DECLARE, ast.Load()), [ast.Constant(position)], [])
    assign = ast.Assign([ast.Name(statement.target.id, ast.Store())], call)  # type: ignore[union-attr]
    return ast.copy_location(assign, statement)


class _BindingCollector(ast.NodeVisitor):
    """Names bound at the cell's own scope: not inside functions, classes, lambdas, comprehensions or ``:=``."""

    def __init__(self) -> None:
        self.found: list[tuple[int, int, str]] = []

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.found.append((node.lineno, node.col_offset, node.id))

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)

    def generic_visit(self, node: ast.AST) -> None:
        if not isinstance(node, _SCOPES):
            super().generic_visit(node)


def _bindings(tree: ast.Module) -> list[tuple[int, int, str]]:
    collector = _BindingCollector()
    for statement in tree.body:
        collector.visit(statement)
    return sorted(collector.found)


def cell_namespace(user_ns: Mapping[str, Any]) -> dict[str, Any]:
    """The names a cell sees: nbdiff's public names, then the user's names on top.

    The user's names win (arrays, numbers, their own functions that build graphs, a variable called ``mean``),
    except where a user name holds a Python, ``math`` or NumPy function under one of nbdiff's names (``sum`` after
    ``from numpy import *``): such functions cannot take graph variables, so nbdiff's symbolic counterpart stays.
    Python builtins such as ``sum``, ``abs``, ``max`` and ``min`` are not in the user namespace and are shadowed
    by nbdiff's functions of the same name.
    """
    library = {name: getattr(nbdiff, name) for name in nbdiff.__all__}
    namespace = dict(library)
    for name, value in user_ns.items():
        if name in library and _cannot_take_variables(value):
            continue
        namespace[name] = value
    return namespace


def _cannot_take_variables(value: Any) -> bool:
    """True for a function of Python, ``math`` or NumPy (the builtin ``sum``, ``math.exp``, ``np.exp``)."""
    if not callable(value) or isinstance(value, type):
        return False
    module = getattr(value, "__module__", None) or ""
    return module in YIELDING_MODULES or module.startswith("numpy.")


def execute(cell: ParsedCell, user_ns: Mapping[str, Any]) -> tuple[dict[str, Any], list[Variable]]:
    """Run the cell; return its namespace and its input variables in order of declaration.

    Errors the cell raises (an nbdiff error naming ``<graph NAME cell>:3``, a ``NameError``) propagate unchanged.
    """
    namespace = cell_namespace(user_ns)
    inputs: list[Variable] = []

    def declare(position: int) -> Variable:
        variable = cell.inputs[position].make()
        inputs.append(variable)
        return variable

    namespace[DECLARE] = declare
    exec(compile(cell.tree, cell.filename, "exec"), namespace)
    del namespace[DECLARE]
    return namespace, inputs

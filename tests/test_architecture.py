"""The seams between ``nd.function`` and the compile targets, checked on the source (``ast``), not by convention.

- ``function.py`` imports nothing from ``nbdiff.backends`` or ``nbdiff.cuda`` (at module level or lazily) and names
  no target: it asks the registry (``nbdiff.runtime.targets``) and reports through ``CompileStatus``;
- no backend imports a private name of ``function.py`` or reaches into a ``Function``'s private attributes, and
  ``function.py`` calls no private attribute of another object (a target's or a runner's).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbdiff
from nbdiff.function import Function

PACKAGE = Path(nbdiff.__file__).parent
BACKEND_PACKAGES = ("nbdiff.backends", "nbdiff.cuda")
TARGET_NAMES = {"cpu", "cuda"}


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(module: ast.Module) -> list[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in ``module`` names (names imported from a
    package count as modules too: ``from nbdiff.backends import cpu`` gives ``nbdiff.backends.cpu``)."""
    found = []
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def backend_files() -> list[Path]:
    files = sorted((PACKAGE / "backends").glob("*.py"))
    if (PACKAGE / "cuda").is_dir():
        files += sorted((PACKAGE / "cuda").rglob("*.py"))
    return files


def function_private_names() -> set[str]:
    """The private names ``function.py`` defines: module-level ones and ``Function``'s attributes."""
    module = tree(PACKAGE / "function.py")
    names = {n.name for n in module.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name.startswith("_")}
    for node in module.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name) and t.id.startswith("_")}
    names |= {n for n in vars(Function) if n.startswith("_") and not n.startswith("__")}
    for node in ast.walk(module):  # attributes a Function sets on itself (self._single, ...)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                names.add(node.attr)
    return names


def test_function_imports_no_backend():
    imports = imported_modules(tree(PACKAGE / "function.py"))
    offending = [name for name in imports if name.startswith(BACKEND_PACKAGES)]
    assert offending == [], f"function.py imports {offending}; it must ask nbdiff.runtime.targets instead"
    assert "nbdiff.runtime.targets" in imports and "nbdiff.runtime.compile_status" in imports


def test_function_names_no_target():
    """No string literal in function.py (docstrings aside) is a target's name: it is a value the user passes."""
    module = tree(PACKAGE / "function.py")
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(module)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None
    }
    named = [
        node.value
        for node in ast.walk(module)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and node.value.lower() in TARGET_NAMES
    ]
    assert named == [], f"function.py names targets {named}"


def test_no_backend_imports_or_uses_a_private_name_of_function():
    privates = function_private_names()
    assert "_single" in privates and "_label" in privates  # the check sees what it must
    problems = []
    for path in backend_files():
        module = tree(path)
        for node in ast.walk(module):
            if isinstance(node, ast.ImportFrom) and node.module == "nbdiff.function":
                problems += [f"{path.name} imports {a.name}" for a in node.names if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr in privates:
                problems.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    assert problems == [], problems


def test_function_calls_no_private_attribute_of_another_object():
    module = tree(PACKAGE / "function.py")
    problems = [
        f"function.py:{node.lineno} uses .{node.attr}"
        for node in ast.walk(module)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert problems == [], problems


def test_the_ops_hold_no_targets_loop_text():
    """Kernels of ops that are not elementwise live in the backend packages, registered per op class."""
    from nbdiff.backends import cpu_ops
    from nbdiff.ops.nnet import LogSoftmaxTake, LogSoftmaxTakeGrad

    for path in sorted((PACKAGE / "ops").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "def kernel(" not in text and "op_kernel" not in text, f"{path.name} holds a kernel's text"
    assert {LogSoftmaxTake, LogSoftmaxTakeGrad} <= set(cpu_ops.registered())

"""Sites name notebook cells as IPython does (``In[7]:3``), asking IPython's compiler, and files as ``file:line``."""

from __future__ import annotations

import sys
import types

import pytest

import nbdiff as nd
from nbdiff.graph.printing import dprint_str
from nbdiff.graph.provenance import Site, same_cell_names

CELL_FILE = "/tmp/ipykernel_1/3049196835.py"


@pytest.fixture
def fake_ipython(monkeypatch):
    """An ``IPython`` module whose shell's compiler names one file ``In[7]`` and counts the questions."""
    asked: list[str] = []

    def format_code_name(filename):
        asked.append(filename)
        return ("Cell", "In[7]") if filename == CELL_FILE else None

    shell = types.SimpleNamespace(compile=types.SimpleNamespace(format_code_name=format_code_name))
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)
    return asked


def test_a_cell_is_named_by_ipythons_compiler(fake_ipython):
    site = Site(CELL_FILE, 3, "<module>")
    assert site.label == "In[7]:3"
    assert site.describe() == "Cell In[7], line 3"  # as IPython's traceback header names it
    assert Site("/home/me/model.py", 12, "f").label == "model.py:12"


def test_without_ipython_a_cell_file_keeps_its_file_name(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert Site(CELL_FILE, 3, "<module>").label == "3049196835.py:3"


def test_a_listing_asks_ipython_once_per_file(fake_ipython):
    code = compile("x = nd.vector('x')\ny = x\nfor _ in range(50):\n    y = nd.tanh(y) * 2.0\n", CELL_FILE, "exec")
    namespace = {"nd": nd}
    exec(code, namespace)
    fake_ipython.clear()
    listing = dprint_str(namespace["y"])
    assert "@ In[7]:4" in listing and "@ In[7]:1" in listing
    assert fake_ipython == [CELL_FILE]
    with same_cell_names():
        Site(CELL_FILE, 1, "<module>").label, Site(CELL_FILE, 2, "<module>").label
    assert len(fake_ipython) == 2  # one more question: each block asks afresh

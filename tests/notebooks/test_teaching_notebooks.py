"""The teaching notebooks' shape, as issue 11 asks it of each: nbval runs them and compares their outputs; this
checks what nbval cannot see.

- the first cell is markdown saying what the notebook teaches and how long it takes to run;
- two or three exercises, each answered in the hidden cell after it (``"jupyter": {"source_hidden": true}``), which
  asserts;
- cells assert what they teach (a notebook with no ``assert`` outside its answers teaches nothing testable);
- only single cells opt out of nbval's output comparison (``nbval-ignore-output``, fewer than half of them), never
  a whole notebook, and no cell is skipped or expected to raise (the browser test requires that no cell shows an
  error);
- the stored kernel is ``python3`` with JupyterLab's display name, so opening a notebook does not modify it;
- nothing reaches the network (no URL fetches, no pip installs, no downloads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)"}
FORBIDDEN_TAGS = {"nbval-skip", "raises-exception", "nbval-raises-exception"}
NETWORK = re.compile(r"urlopen|requests\.|urllib|https?://\S+\.(?:csv|npz|npy|json|zip|gz)|pip install|fetch_openml")
TIME_STATEMENT = re.compile(r"\b\d+\s*(?:s|seconds?|min|minutes?)\b")


def load(path: Path) -> dict:
    """The notebook as JSON (nbformat 4)."""
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    return "".join(cell["source"])


def is_answer(cell: dict) -> bool:
    return cell["cell_type"] == "code" and cell.get("metadata", {}).get("jupyter", {}).get("source_hidden") is True


def test_there_are_teaching_notebooks():
    """At least notebooks 1 to 4 exist (issue 11's list starts with them)."""
    numbers = {path.name[:2] for path in NOTEBOOKS}
    assert {"01", "02", "03", "04"} <= numbers, sorted(numbers)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_says_what_it_teaches_and_how_long(path: Path):
    first = load(path)["cells"][0]
    text = source(first)
    assert first["cell_type"] == "markdown" and text.startswith("# ")
    assert "teaches" in text, "the first cell says what the notebook teaches"
    assert TIME_STATEMENT.search(text), "the first cell says how long the notebook takes (N seconds / minutes)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_have_hidden_answers_that_assert(path: Path):
    cells = load(path)["cells"]
    answers = [position for position, cell in enumerate(cells) if is_answer(cell)]
    assert 2 <= len(answers) <= 3, f"{len(answers)} exercises with a hidden answer cell"
    for position in answers:
        exercise = cells[position - 1]
        assert exercise["cell_type"] == "markdown" and "Exercise" in source(exercise), "an answer follows its exercise"
        assert "assert " in source(cells[position]), f"the answer to {source(exercise)[-60:]!r} asserts nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_assert_what_they_teach(path: Path):
    taught = [c for c in load(path)["cells"] if c["cell_type"] == "code" and not is_answer(c)]
    asserting = [c for c in taught if re.search(r"^\s*assert ", source(c), re.MULTILINE)]
    assert len(asserting) >= 3, f"only {len(asserting)} cells assert anything"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_single_cells_opt_out_and_none_raises(path: Path):
    notebook = load(path)
    assert "nbval" not in json.dumps(notebook["metadata"]), "no notebook-wide nbval setting"
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    for cell in code:
        tags = set(cell.get("metadata", {}).get("tags", []))
        assert not tags & FORBIDDEN_TAGS, f"cell tags {sorted(tags & FORBIDDEN_TAGS)} in {source(cell)[:40]!r}"
        assert all(output["output_type"] != "error" for output in cell.get("outputs", [])), source(cell)[:60]
    ignored = [c for c in code if "nbval-ignore-output" in c.get("metadata", {}).get("tags", [])]
    assert len(ignored) < len(code) / 2, f"{len(ignored)} of {len(code)} code cells ignore their output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernel_and_no_network(path: Path):
    notebook = load(path)
    spec = notebook["metadata"]["kernelspec"]
    assert {key: spec.get(key) for key in KERNELSPEC} == KERNELSPEC
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert not NETWORK.search(source(cell)), f"network access in {source(cell)[:60]!r}"

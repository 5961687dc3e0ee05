"""The teaching notebooks in a real browser: JupyterLab runs each one and shows its widgets working, with no error.

Each test opens one notebook in Chromium with its stored outputs removed (what the page shows is what this run
produced), runs all cells through JupyterLab's own command, waits until every code cell has run, and checks what a
user sees. Which widgets to check is read from the notebook's code, so a notebook that calls them must show them:

- ``nd.draw`` or a ``%%graph`` cell: ``svg.nbdiff-graph`` visible, larger than 50x50 px, with drawn nodes;
- ``nd.status_panel`` or a ``%%graph`` cell: every ``.nbdiff-status`` panel settles on ``compiled`` (the server's
  kernel compiles with Numba into a fresh cache, so it is seen going through interpreting and compiling first);
- ``nd.rewrite_stepper``: clicking the stepper's ``next`` button moves it to the next pass (its slider's readout and
  its text change), which needs the round trip through the kernel;
- ``nd.plot``: ``.nbdiff-plot img`` visible and decoded, larger than 100x100 px;
- no cell shows an error, except cells tagged ``raises-exception`` (nbval's tag for an error the notebook teaches).

The notebooks are ``demo.ipynb`` beside this file (every widget on one small function) and the teaching notebooks
matching ``NOTEBOOK_PATTERNS`` in ``notebooks/``. Screenshots of the page and of each checked element are saved
(see conftest.py).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import nbdiff as nd

HERE = Path(__file__).parent
DEMO = HERE / "demo.ipynb"
NOTEBOOKS = HERE.parent.parent / "notebooks"
# The teaching notebooks run in the browser: derivatives as graphs, reading gradient graphs, answer now compile later.
NOTEBOOK_PATTERNS = ("01_*.ipynb", "02_*.ipynb", "05_*.ipynb")
WIDGET_FUNCTIONS = ("draw", "status_panel", "plot", "rewrite_stepper")
ALL_STATES = ("interpreting", "compiling", "compiled", "fallback")
# Polls give up after this long: generous, since compiling on a loaded 2-core machine can take tens of seconds.
RUN_TIMEOUT_S = 240.0
STEP_TIMEOUT_S = 30.0

_missing = [name for name in WIDGET_FUNCTIONS if not hasattr(nd, name)]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(bool(_missing), reason=f"nbdiff has no {', '.join(f'nd.{n}' for n in _missing)} yet"),
]


def browser_notebooks() -> list:
    """The demo, then each teaching notebook matching a pattern (a pattern nothing matches yet is a skipped case)."""
    cases = [pytest.param(DEMO, id="demo")]
    for pattern in NOTEBOOK_PATTERNS:
        matches = sorted(NOTEBOOKS.glob(pattern))
        if not matches:
            reason = f"no notebooks/{pattern} in this checkout"
            cases.append(pytest.param(None, id=pattern.split("_")[0], marks=pytest.mark.skip(reason=reason)))
        cases += [pytest.param(path, id=path.stem) for path in matches]
    return cases


@dataclass(frozen=True)
class Expected:
    """What a notebook's code asks the page to show, and which cells may show an error."""

    graph: bool
    status: bool
    stepper: bool
    plot: bool
    allowed_errors: frozenset[int]  # cell positions (among all cells) tagged raises-exception


def expected_widgets(notebook: dict) -> Expected:
    """Read from the code cells which widgets the notebook displays (``%%graph --no-widget`` displays none)."""
    sources = [(i, "".join(cell["source"])) for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"]
    code = "\n".join(source for _, source in sources)
    graph_cells = [line for line in code.splitlines() if line.startswith("%%graph") and "--no-widget" not in line]
    dashboard = bool(graph_cells) or "nd.function_widget(" in code
    allowed = frozenset(
        i for i, cell in enumerate(notebook["cells"]) if "raises-exception" in cell.get("metadata", {}).get("tags", [])
    )
    return Expected(
        graph=dashboard or "nd.draw(" in code,
        status=dashboard or "nd.status_panel(" in code,
        stepper="nd.rewrite_stepper(" in code,
        plot="nd.plot(" in code,
        allowed_errors=allowed,
    )


def without_outputs(notebook: dict) -> dict:
    """The notebook with every output and execution count removed: the page then shows only what this run made."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return notebook


def test_widgets_to_check_are_read_from_the_notebooks_code():
    """A ``%%graph`` cell means a graph and a status panel (not with --no-widget); tagged errors are allowed; the demo
    displays all four widgets, so every check runs in CI whatever the teaching notebooks display."""

    def notebook(*sources: str, tags=()) -> dict:
        cells = [{"cell_type": "markdown", "source": "# title", "metadata": {}}]
        cells += [{"cell_type": "code", "source": s, "metadata": {"tags": list(tags)}} for s in sources]
        return {"cells": cells}

    assert expected_widgets(notebook("%%graph loss --wrt w\nw: vector\nloss = sum(w)")) == Expected(
        graph=True, status=True, stepper=False, plot=False, allowed_errors=frozenset()
    )
    quiet = expected_widgets(notebook("%%graph loss --no-widget\nw: vector\nloss = sum(w)", "nd.plot(f, x=(0, 1))"))
    assert (quiet.graph, quiet.status, quiet.plot) == (False, False, True)
    assert expected_widgets(notebook("1 / 0", tags=["raises-exception"])).allowed_errors == {1}
    demo = expected_widgets(json.loads(DEMO.read_text()))
    assert demo.graph and demo.status and demo.stepper and demo.plot
    cleared = without_outputs(json.loads(DEMO.read_text()))
    assert all(
        c["outputs"] == [] and c["execution_count"] is None for c in cleared["cells"] if c["cell_type"] == "code"
    )


# Reads the open notebook through JupyterLab's own model (window.jupyterapp): its kernel's state, how many code
# cells have not run yet, and the errors cells show.
NOTEBOOK_STATE_JS = """
() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content || !panel.content.model) return null;
  const session = panel.sessionContext.session;
  const kernel = session && session.kernel;
  const state = {path: panel.context.path, kernel: kernel ? kernel.status : null, pending: 0, errors: []};
  const cells = panel.content.model.cells;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    if (cell.executionCount === null || cell.executionCount === undefined) state.pending += 1;
    for (const output of cell.outputs.toJSON()) {
      if (output.output_type === 'error') state.errors.push([i, `${output.ename}: ${output.evalue}`]);
    }
  }
  return state;
}
"""


@pytest.mark.parametrize("notebook_path", browser_notebooks())
def test_notebook_runs_in_jupyterlab_with_its_widgets(notebook_path, lab_server, lab_page, screenshot_dir):
    """Run all of one notebook in JupyterLab: no cell shows an error and every widget its code displays works."""
    page = lab_page
    notebook = json.loads(notebook_path.read_text())
    expected = expected_widgets(notebook)
    name = lab_server.add_notebook(notebook_path.name, without_outputs(notebook))
    started = time.monotonic()
    page.goto(lab_server.notebook_url(name))
    poll_notebook(page, expected, lambda s: s["path"] == name and s["kernel"] == "idle", f"{name}, kernel idle")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    poll_notebook(page, expected, lambda s: s["pending"] == 0 and s["kernel"] == "idle", "every code cell to run")

    checked = {}
    if expected.graph:
        checked["graph"] = check_graph(page)
    if expected.status:
        checked["status"] = check_status_panels(page)
    if expected.stepper:
        checked["stepper"] = check_stepper(page)
    if expected.plot:
        checked["plot"] = check_plot(page)
    poll_notebook(page, expected, lambda s: True, "a last look for errors")
    stem = notebook_path.stem
    page.screenshot(path=str(screenshot_dir / f"{stem}.png"), full_page=True)
    for label, element in checked.items():
        element.screenshot(path=str(screenshot_dir / f"{stem}-{label}.png"))
    seconds = time.monotonic() - started
    print(f"browser test: {name} ran and rendered in {seconds:.1f} s; checked {', '.join(checked) or 'no widgets'}")


def poll_notebook(page, expected: Expected, done, what: str) -> dict:
    """Poll the notebook's state until ``done(state)``; fail at once if a cell not tagged raises-exception errs."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(NOTEBOOK_STATE_JS)
        if state is not None:
            errors = [f"cell {i}: {text}" for i, text in state["errors"] if i not in expected.allowed_errors]
            assert not errors, f"a notebook cell shows an error: {errors}"
            if done(state):
                return state
        page.wait_for_timeout(250)
    pytest.fail(f"waited {RUN_TIMEOUT_S:.0f} s for {what} (last notebook state: {state})")


def check_graph(page):
    """The graph drawing: a visible ``svg.nbdiff-graph`` of a useful size with drawn nodes."""
    graph = page.locator("svg.nbdiff-graph").first
    graph.wait_for(state="visible")
    box = graph.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50, f"graph SVG is too small: {box}"
    assert graph.locator("g.nbdiff-node").count() >= 1, "the graph drawing has no nodes"
    return graph


def check_status_panels(page):
    """Every status panel shows a known state and settles on ``compiled``; the first is returned."""
    panels = page.locator(".nbdiff-status")
    panels.first.wait_for(state="visible")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    texts: list[str] = []
    while time.monotonic() < deadline:
        texts = [panels.nth(i).inner_text().strip() for i in range(panels.count())]
        for text in texts:
            assert text.startswith(ALL_STATES), f"a status panel shows {text!r}, not one of {ALL_STATES}"
            assert not text.startswith("fallback"), f"a status panel fell back: {text!r}"
        if all(text.startswith("compiled") for text in texts):
            return panels.first
        page.wait_for_timeout(250)
    pytest.fail(f"status panels did not settle on compiled within {RUN_TIMEOUT_S:.0f} s: {texts}")


def stepper_view(stepper) -> tuple[str, str]:
    """What the stepper shows: its slider's readout (the pass) and its whole text."""
    return stepper.locator(".widget-readout").first.inner_text().strip(), stepper.inner_text().strip()


def check_stepper(page):
    """The rewrite stepper: its ``next`` button moves it to the following pass, through the kernel and back."""
    stepper = page.locator(".nbdiff-stepper").first
    stepper.wait_for(state="visible")
    before = stepper_view(stepper)
    stepper.locator("button", has_text=re.compile(r"^\s*next\s*$")).first.click()
    deadline = time.monotonic() + STEP_TIMEOUT_S
    after = before
    while time.monotonic() < deadline:
        after = stepper_view(stepper)
        if after[0] != before[0] and after[1] != before[1]:
            assert int(after[0]) == int(before[0]) + 1, f"next moved the stepper from {before[0]} to {after[0]}"
            return stepper
        page.wait_for_timeout(250)
    pytest.fail(f"clicking next did not change the stepper within {STEP_TIMEOUT_S:.0f} s (readout {after[0]!r})")


def check_plot(page):
    """The plot: a visible, decoded image inside ``.nbdiff-plot``."""
    image = page.locator(".nbdiff-plot img").first
    image.wait_for(state="visible")
    size = image.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")
    assert size[0] > 100 and size[1] > 100, f"plot image is not decoded or is tiny: {size}"
    return image

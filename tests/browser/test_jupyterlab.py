"""The Jupyter layer in a real browser: JupyterLab runs ``demo.ipynb`` and shows the graph, the status and the plot.

The test opens the notebook in Chromium, runs all cells through JupyterLab's own command, and checks what a user
would see: the graph drawn as ``<svg class="nbdiff-graph">`` naming the notebook's op, a status panel
(``.nbdiff-status``) that settles on the same status the kernel's ``f.wait()`` reports, and the plot image inside
``.nbdiff-plot``. Screenshots of the page and of each element are saved (see conftest.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import nbdiff as nd

DEMO = Path(__file__).parent / "demo.ipynb"
WIDGET_FUNCTIONS = ("draw", "status_panel", "plot")
# The demo's last cell prints this marker followed by ``f.wait()``; its appearance means every cell ran.
FINAL_MARKER = "nbdiff-demo final status:"
# Where the demo's status can settle: its function has a kernel, so compiled, or a fallback that says why.
SETTLED_STATES = ("compiled", "fallback")
ALL_STATES = ("interpreting", "compiling", "compiled", "fallback")
# The demo's function is built from tanh: the graph drawing must name it.
DEMO_OP = "tanh"
RUN_TIMEOUT_S = 60.0

_missing = [name for name in WIDGET_FUNCTIONS if not hasattr(nd, name)]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(bool(_missing), reason=f"nbdiff has no {', '.join(f'nd.{n}' for n in _missing)} yet"),
]

# Reads the open notebook through JupyterLab's own model (window.jupyterapp): whether the kernel is idle, the
# errors any cell raised, and the final status the demo's last cell printed.
NOTEBOOK_STATE_JS = """
(marker) => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content || !panel.content.model) return null;
  const session = panel.sessionContext.session;
  const kernel = session && session.kernel;
  const state = {path: panel.context.path, kernel: kernel ? kernel.status : null, errors: [], finalStatus: null};
  const cells = panel.content.model.cells;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    for (const output of cell.outputs.toJSON()) {
      if (output.output_type === 'error') state.errors.push(`cell ${i}: ${output.ename}: ${output.evalue}`);
      const text = output.output_type === 'stream' ? [].concat(output.text).join('') : '';
      const at = text.indexOf(marker);
      if (at >= 0) state.finalStatus = text.slice(at + marker.length).trim();
    }
  }
  return state;
}
"""


def test_demo_notebook_shows_graph_status_and_plot(lab_server, lab_page, screenshot_dir):
    """Run all of demo.ipynb in JupyterLab; the graph SVG, the settled status panel and the plot are visible."""
    page = lab_page
    name = lab_server.add_notebook(DEMO)
    started = time.monotonic()
    page.goto(lab_server.notebook_url(name))
    wait_for_idle_kernel(page, name)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    final_status = wait_for_final_status(page)

    graph = check_graph(page)
    status = check_status_panel(page, final_status)
    plot = check_plot(page)
    page.screenshot(path=str(screenshot_dir / "notebook.png"), full_page=True)
    for label, element in (("graph", graph), ("status", status), ("plot", plot)):
        element.screenshot(path=str(screenshot_dir / f"{label}.png"))
    print(f"browser test: notebook ran and rendered in {time.monotonic() - started:.1f} s, status {final_status!r}")


def wait_for_idle_kernel(page, name: str) -> None:
    """Wait until JupyterLab shows notebook ``name`` with its kernel started and idle."""
    poll_notebook(
        page, lambda state: state["path"] == name and state["kernel"] == "idle", f"{name} with an idle kernel"
    )


def wait_for_final_status(page) -> str:
    """Wait until the last cell printed its marker and return the status printed after it."""
    return poll_notebook(page, lambda state: state["finalStatus"], "the last cell's output")


def poll_notebook(page, done, what: str):
    """Poll the notebook's state until ``done(state)`` is truthy and return that; fail at once if a cell raised."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(NOTEBOOK_STATE_JS, FINAL_MARKER)
        if state is not None:
            assert not state["errors"], f"a notebook cell raised: {state['errors']}"
            result = done(state)
            if result:
                return result
        page.wait_for_timeout(250)
    pytest.fail(f"waited {RUN_TIMEOUT_S:.0f} s for {what} (last notebook state: {state})")


def check_graph(page):
    """The graph drawing: one visible, non-empty ``svg.nbdiff-graph`` that names the demo's op."""
    graph = page.locator("svg.nbdiff-graph")
    graph.first.wait_for(state="visible")
    assert graph.count() >= 1
    box = graph.first.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50, f"graph SVG is too small: {box}"
    assert DEMO_OP in graph.first.text_content(), "the graph drawing does not name the demo's op"
    return graph.first


def check_status_panel(page, final_status: str):
    """The status panel is visible, shows a known state, and settles on the state the kernel reported."""
    final_word = final_status.split(":")[0].split()[0]
    assert final_word in SETTLED_STATES, f"f.wait() returned {final_status!r}, not compiled or a fallback"
    assert final_word == "compiled" or len(final_status) > len("fallback: "), "a fallback must say why"
    panel = page.locator(".nbdiff-status").first
    panel.wait_for(state="visible")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        text = panel.inner_text().strip()
        if text.startswith(final_word):
            return panel
        assert text.startswith(ALL_STATES), f"status panel shows {text!r}, not one of {ALL_STATES}"
        page.wait_for_timeout(250)
    pytest.fail(f"status panel shows {text!r}; the kernel reported {final_status!r}")


def check_plot(page):
    """The plot: a visible, decoded image inside ``.nbdiff-plot``."""
    image = page.locator(".nbdiff-plot img").first
    image.wait_for(state="visible")
    size = image.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")
    assert size[0] > 100 and size[1] > 100, f"plot image is not decoded or is tiny: {size}"
    return image

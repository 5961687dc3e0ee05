"""``nd.rewrite_stepper(f)``: step through a function's rewrite history, one pass at a time.

For the selected pass the widget shows its name, whether it changed the graph, its time, the node counts before
and after, each rule that fired (rule, the identity it applies, what it replaced with what, and where the replaced
node came from), and the graph before and after the pass side by side, drawn as ``nd.draw`` draws graphs (SVG), with
the ``nd.dprint`` listing folded under each drawing. It reads ``f.history``, the list of
``PassRecord`` the pipeline keeps (nbdiff/rewrite/history.py). The text it shows is built by plain functions
(``pass_summary``, ``firing_lines``), which the tests read.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any, Sequence

import ipywidgets as widgets

from nbdiff.errors import InputError, node_error
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.printing import dprint_str
from nbdiff.rewrite.fusion import kernels_of
from nbdiff.rewrite.history import PassRecord
from nbdiff.widgets.scene import build_scene
from nbdiff.widgets.svg import scene_to_svg

MAX_FIRINGS_SHOWN = 40  # a pass that fired more often lists the first ones and a count of the rest
NO_HISTORY = "no rewrite passes ran (the function was built with rewrites=False, or no pass applied)"
_SVG_STYLE = "overflow:auto;max-height:520px;border:1px solid #d1d5db"
_PRE_STYLE = (
    "margin:0;padding:4px;max-height:420px;overflow:auto;font-size:11px;"
    "font-family:var(--jp-code-font-family,monospace);border:1px solid #d1d5db"
)


def pass_summary(record: PassRecord, position: int, total: int) -> str:
    """The selected pass in a few lines: name, changed, time, node counts, and how often each rule fired."""
    state = "changed" if record.changed else "unchanged"
    lines = [
        f"pass {position + 1} of {total}: {record.name} ({state})",
        f"time: {record.seconds * 1e3:.2f} ms",
        f"nodes: {record.nodes_before} -> {record.nodes_after}",
    ]
    if record.firings:
        counts = Counter(firing.rule for firing in record.firings)
        identities = {firing.rule: firing.identity for firing in record.firings}
        lines.append(f"rules fired: {len(record.firings)}")
        lines.extend(f"  {rule} x{n}: {identities[rule]}" for rule, n in counts.items())
    else:
        lines.append("rules fired: none")
    return "\n".join(lines)


def firing_lines(record: PassRecord, limit: int = MAX_FIRINGS_SHOWN) -> list[str]:
    """One line per rule application, ``rule: before -> after  (where)``, at most ``limit`` plus a count."""
    lines = [firing.describe() for firing in record.firings[:limit]]
    if len(record.firings) > limit:
        lines.append(f"... and {len(record.firings) - limit} more")
    return lines


def graph_text(graph: Graph) -> str:
    """A graph as ``nd.dprint`` prints it."""
    return dprint_str(graph)


def _pre(text: str) -> str:
    return f'<pre style="{_PRE_STYLE}">{html.escape(text)}</pre>'


def graph_svg(graph: Graph) -> str:
    """A graph drawn as ``nd.draw`` draws it (fused kernels as compound boxes), as SVG text."""
    return scene_to_svg(build_scene(graph, kernels_of(graph)))


def count_text(count: int, noun: str) -> str:
    """``1 node``, ``3 nodes``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _graph_html(title: str, graph: Graph, nodes: int) -> str:
    """The drawing of one side, with its text listing under it (folded)."""
    return (
        f"<div><b>{html.escape(title)}</b> ({count_text(nodes, 'node')})"
        f'<div style="{_SVG_STYLE}">{graph_svg(graph)}</div>'
        f"<details><summary>text listing</summary>{_pre(graph_text(graph))}</details></div>"
    )


class RewriteStepper(widgets.VBox):
    """A slider and previous/next buttons over a rewrite history, showing the selected pass.

    The slider counts passes from 1, as the summary does ("pass 4 of 5"); ``index`` is the position from 0.
    """

    def __init__(self, history: Sequence[PassRecord], **kwargs: Any):
        self.history = list(history)
        count = len(self.history)
        self.slider = widgets.IntSlider(
            value=1, min=1, max=max(count, 1), description="pass", continuous_update=True, disabled=count < 2
        )
        self.previous_button = widgets.Button(description="previous", icon="arrow-left")
        self.next_button = widgets.Button(description="next", icon="arrow-right")
        self.summary = widgets.HTML()
        self.before = widgets.HTML(layout=widgets.Layout(width="50%"))
        self.after = widgets.HTML(layout=widgets.Layout(width="50%"))
        controls = widgets.HBox([self.previous_button, self.slider, self.next_button])
        super().__init__([controls, self.summary, widgets.HBox([self.before, self.after])], **kwargs)
        self.add_class("nbdiff-stepper")
        self.previous_button.on_click(lambda _: self.step(-1))
        self.next_button.on_click(lambda _: self.step(1))
        self.slider.observe(self._on_slider, names="value")
        self._render()

    @property
    def index(self) -> int:
        """The position of the pass shown, from 0 (the slider shows it from 1)."""
        return self.slider.value - 1

    @index.setter
    def index(self, value: int) -> None:
        if not self.history or not 0 <= value < len(self.history):
            raise IndexError(f"rewrite_stepper: pass index {value} outside 0..{len(self.history) - 1}")
        self.slider.value = value + 1

    @property
    def record(self) -> PassRecord | None:
        """The pass shown (None when the history is empty)."""
        return self.history[self.index] if self.history else None

    def step(self, delta: int) -> None:
        """Move ``delta`` passes forward (negative: back), stopping at either end."""
        if self.history:
            self.slider.value = min(max(self.index + delta, 0), len(self.history) - 1) + 1

    def text(self) -> str:
        """What the widget shows for the selected pass, as plain text: summary, then each rule application."""
        record = self.record
        if record is None:
            return NO_HISTORY
        lines = [pass_summary(record, self.index, len(self.history))]
        lines.extend(firing_lines(record))
        return "\n".join(lines)

    def _on_slider(self, change: dict) -> None:
        self._render()

    def _render(self) -> None:
        record = self.record
        self.previous_button.disabled = record is None or self.index == 0
        self.next_button.disabled = record is None or self.index == len(self.history) - 1
        if record is None:
            self.summary.value = f"<i>{html.escape(NO_HISTORY)}</i>"
            self.before.value = self.after.value = ""
            return
        summary = pass_summary(record, self.index, len(self.history))
        firings = firing_lines(record)
        self.summary.value = _pre(summary + ("\n\n" + "\n".join(firings) if firings else ""))
        self.before.value = _graph_html("before", record.before, record.nodes_before)
        self.after.value = _graph_html("after", record.after, record.nodes_after)


def rewrite_stepper(function: Any) -> RewriteStepper:
    """Step through ``function.history`` (an ``nd.function``, or a list of ``PassRecord``) pass by pass."""
    history = getattr(function, "history", function)
    if not isinstance(history, (list, tuple)) or not all(isinstance(r, PassRecord) for r in history):
        raise node_error(
            InputError, "rewrite_stepper", f"expected an nd.function or its history, got {type(function).__name__}"
        )
    return RewriteStepper(history)

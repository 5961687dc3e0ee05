"""``nd.status_panel(f)``: a live view of what the compiler is doing with each of a function's kernels.

The panel is an ``ipywidgets.HTML`` whose root element has the CSS class ``nbdiff-status``. Its first line is the
function's status (``interpreting``, ``compiling 3/5 kernels``, ``compiled (unchecked: ...)`` until the first call
checks it against the interpreter, ``compiled``, ``fallback: <why>``) and backend; below it a table lists each
kernel with its state (queued, compiling, from cache, ready, failed with the reason) and times. The panel
subscribes to the function's compile events and to the agreement check's decision, and redraws on each, also when
they come from the background worker's thread (ipykernel >= 7 sends widget updates from any thread), so the user
keeps working while it updates. The table's model is ``status_rows``; ``render_status_html`` turns it into HTML.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import ipywidgets as widgets

from nbdiff.errors import InputError, node_error
from nbdiff.function import UNCHECKED, Function
from nbdiff.runtime.events import ENTRY_POINT, EventError, KernelEvent, KernelState, count_states, kernel_states

INTERPRETED = "interpreted (NumPy)"
IN_ENTRY_POINT = "in the entry point"  # a kernel compiled as part of the whole-function entry point
STATE_LABELS = {
    "queued": "queued",
    "compiling": "compiling",
    "cached": "from cache",
    "ready": "ready",
    "failed": "failed",
}
STATE_COLORS = {  # by shown label
    "queued": "#6b7280",
    "compiling": "#b45309",
    "from cache": "#0f766e",
    "ready": "#15803d",
    "failed": "#b91c1c",
    INTERPRETED: "#374151",
}
_STYLE = (
    "<style>.nbdiff-status-body{font-family:var(--jp-code-font-family,monospace);font-size:12px}"
    ".nbdiff-status-body table{border-collapse:collapse;margin-top:4px}"
    ".nbdiff-status-body th,.nbdiff-status-body td{padding:1px 10px 1px 0;text-align:left;vertical-align:top}"
    ".nbdiff-status-line{font-weight:bold}</style>"
)


@dataclass(frozen=True)
class KernelRow:
    """One line of the panel's kernel table."""

    kernel: str
    state: str  # a STATE_LABELS value, or INTERPRETED for a kernel the compiler has not touched
    step: str  # duration of the latest step, formatted ("310 ms")
    total: str  # time since the kernel's first event, formatted
    detail: str  # members of a fused kernel, or why it failed


def format_seconds(seconds: float | None) -> str:
    """``0.42 ms``, ``310 ms`` or ``1.25 s``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def kernel_label(kernel: Any, position: int) -> str:
    """The name of one of ``f.kernels``: its ``name`` attribute, else ``k<position>``."""
    return getattr(kernel, "name", None) or f"k{position}"


def _kernel_detail(kernel: Any) -> str:
    """``fused, 5 ops (2 gradient)`` for a kernel of ``f.kernels``."""
    members = getattr(kernel, "members", None) or ()
    if not members:
        return "fused"
    gradient = sum(bool(getattr(member, "gradient", False)) for member in members)
    return f"fused, {len(members)} ops" + (f" ({gradient} gradient)" if gradient else "")


def status_rows(function: Any, events: Sequence[KernelEvent]) -> list[KernelRow]:
    """The kernel table for ``function`` given its ``events``: its fused kernels, then kernels only events name.

    A kernel without events runs in the interpreter. With no kernels and no events the table holds one row for the
    whole function, interpreted. Raises ``EventError`` for an impossible event order.
    """
    states = kernel_states(events)
    rows: list[KernelRow] = []
    known = []
    for position, kernel in enumerate(getattr(function, "kernels", None) or []):
        name = kernel_label(kernel, position)
        known.append(name)
        detail = _kernel_detail(kernel)
        if name not in states and ENTRY_POINT in states:  # compiled inside the whole-function entry point
            rows.append(KernelRow(name, IN_ENTRY_POINT, "", "", detail))
        else:
            rows.append(_row(name, states.get(name), detail))
    graph = getattr(function, "graph", None)
    op_names = {node.op.name for node in getattr(graph, "nodes", ())}  # an op compiled alone is named after it
    for name, summary in states.items():
        if name not in known:
            detail = "whole-function entry point" if name == ENTRY_POINT else ""
            if name.split("#")[0] in op_names:
                detail = "compiled op"
            rows.append(_row(name, summary, detail))
    if not rows:
        size = f"{len(graph.nodes)} nodes" if graph is not None else ""
        rows.append(KernelRow(ENTRY_POINT, INTERPRETED, "", "", size))
    return rows


def _row(name: str, summary: KernelState | None, detail: str) -> KernelRow:
    if summary is None:
        return KernelRow(name, INTERPRETED, "", "", detail)
    if summary.state == "failed":
        detail = summary.reason
    return KernelRow(
        name,
        STATE_LABELS[summary.state],
        format_seconds(summary.seconds),
        format_seconds(summary.total_seconds) if len(summary.history) > 1 else "",
        detail,
    )


def status_line(function: Any) -> str:
    """The panel's first line: the function's status (saying, while it is compiled but unchecked, what decides
    it), then its backend and name."""
    name = getattr(function, "name", None)
    about = f"backend {getattr(function, 'backend', '?')}" + (f" · function {name}" if name else "")
    status = function.status
    if status == UNCHECKED:
        status = f"{status[:-1]}: the first call checks it against the interpreter)"
    return f"{status} · {about}"


def counts_line(events: Sequence[KernelEvent]) -> str:
    """``kernels: 2 ready, 1 compiling`` from the events (empty when there are none)."""
    counts = count_states(kernel_states(events))
    if not counts:
        return ""
    return "kernels: " + ", ".join(f"{n} {STATE_LABELS[state]}" for state, n in counts.items())


def render_status_html(function: Any, events: Sequence[KernelEvent]) -> str:
    """The panel's HTML: the status line, a count of kernels per state, and the kernel table."""
    parts = ['<div class="nbdiff-status-body">']
    parts.append(f'<div class="nbdiff-status-line">{html.escape(status_line(function))}</div>')
    try:
        counts, rows = counts_line(events), status_rows(function, events)
    except EventError as exc:  # a backend bug: show it rather than break the worker's thread
        parts.append(f'<div class="nbdiff-status-error">event error: {html.escape(str(exc))}</div></div>{_STYLE}')
        return "".join(parts)
    if counts:
        parts.append(f'<div class="nbdiff-status-counts">{html.escape(counts)}</div>')
    parts.append('<table class="nbdiff-status-kernels"><thead><tr>')
    parts.extend(f"<th>{title}</th>" for title in ("kernel", "state", "step", "total", "detail"))
    parts.append("</tr></thead><tbody>")
    for row in rows:
        color = STATE_COLORS.get(row.state, "inherit")
        parts.append(
            f'<tr data-kernel="{html.escape(row.kernel)}"><td>{html.escape(row.kernel)}</td>'
            f'<td style="color:{color}">{html.escape(row.state)}</td><td>{row.step}</td><td>{row.total}</td>'
            f"<td>{html.escape(row.detail)}</td></tr>"
        )
    parts.append(f"</tbody></table></div>{_STYLE}")  # the style last: the panel's text starts with the status
    return "".join(parts)


class StatusPanel(widgets.HTML):
    """The compile-status panel of one function; redraws on each of its compile events until closed."""

    def __init__(self, function: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_class("nbdiff-status")
        self.function = function
        self._redraw_lock = threading.Lock()
        unsubscribe = function.subscribe(self._on_event), function.subscribe_status(self._on_status)
        self._unsubscribe = lambda: [stop() for stop in unsubscribe]
        self.refresh()

    def refresh(self) -> None:
        """Redraw from the function's current status and events (the lock keeps the newest snapshot last)."""
        with self._redraw_lock:
            self.value = render_status_html(self.function, self.function.events)

    def _on_event(self, event: KernelEvent) -> None:
        self.refresh()

    def _on_status(self, status: str) -> None:
        """The agreement check decided the status (no compile event says so)."""
        self.refresh()

    def close(self) -> None:
        """Stop listening to the function's events and close the widget."""
        self._unsubscribe()
        super().close()


def status_panel(function: Any) -> StatusPanel:
    """A live compile-status panel for ``function`` (an ``nd.function``): status, backend and each kernel's state."""
    if not isinstance(function, Function):
        raise node_error(InputError, "status_panel", f"expected an nd.function, got {type(function).__name__}")
    return StatusPanel(function)

"""The compile-status panel and its event model: state transitions from recorded events, the panel's HTML after
each event (also from another thread), subscribing and unsubscribing. No browser: the widget's state is read."""

from __future__ import annotations

import html
import logging
import re
import threading
from types import SimpleNamespace

import pytest

import nbdiff as nd
from nbdiff.errors import InputError
from nbdiff.runtime.events import EventError, EventLog, KernelEvent, count_states, kernel_states
from nbdiff.widgets.status_view import (
    IN_ENTRY_POINT,
    INTERPRETED,
    format_seconds,
    render_status_html,
    status_rows,
)


def event(kernel: str, state: str, at: float, seconds: float | None = None, reason: str = "") -> KernelEvent:
    return KernelEvent("function f", kernel, state, seconds=seconds, reason=reason, time=at)


def make_function(name: str = "f", rewrites: bool = False):
    """A small function; without rewrites it has no fused kernels, so the kernel table holds only what events name."""
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x) * x)
    return nd.function([x], [y, nd.grad(y, x)], name=name, rewrites=rewrites)


def panel_text(markup: str) -> str:
    """The text a browser shows for the panel's HTML (tags and the style element removed)."""
    markup = re.sub(r"<style>.*?</style>", "", markup, flags=re.S)
    markup = re.sub(r"</(div|tr)>", "\n", markup)
    markup = re.sub(r"</t[dh]>", " | ", markup)
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).strip()


def row(markup: str, kernel: str) -> list[str]:
    """The cells of the kernel table's row for ``kernel``."""
    match = re.search(rf'<tr data-kernel="{re.escape(kernel)}">(.*?)</tr>', markup, flags=re.S)
    assert match, f"no row for kernel {kernel!r} in {markup}"
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", match[1])]


class FakeBackend:
    """What the compiled backend will do: update the function's status, then emit the event."""

    def __init__(self, function, clock: float = 100.0):
        self.function = function
        self.clock = clock

    def step(self, kernel: str, state: str, status: str, seconds: float | None = None, reason: str = "") -> None:
        self.clock += 0.5
        self.function.compile_status.state = status
        self.function.compile_status.emit(
            KernelEvent(self.function.compile_status.label, kernel, state, seconds, reason, time=self.clock)
        )


# -- the event model -------------------------------------------------------------------------------------------
def test_compile_transitions_queued_compiling_ready():
    events = [event("k0", "queued", 1.0), event("k0", "compiling", 1.2), event("k0", "ready", 1.6, seconds=0.31)]
    (state,) = kernel_states(events).values()
    assert state.kernel == "k0"
    assert state.state == "ready" and state.finished
    assert state.history == ("queued", "compiling", "ready")
    assert state.seconds == pytest.approx(0.31)  # the event's own step time wins over the clock difference
    assert state.total_seconds == pytest.approx(0.6)
    assert state.reason == ""


def test_step_time_defaults_to_the_time_since_the_previous_event():
    states = kernel_states([event("k0", "queued", 1.0), event("k0", "compiling", 1.25)])
    assert states["k0"].state == "compiling" and not states["k0"].finished
    assert states["k0"].seconds == pytest.approx(0.25)
    assert kernel_states([event("k0", "queued", 1.0)])["k0"].seconds is None


def test_cached_and_failed_kernels_side_by_side():
    events = [
        event("k0", "queued", 1.0),
        event("k1", "queued", 1.0),
        event("function", "queued", 1.0),
        event("k0", "cached", 1.01, seconds=0.005),
        event("k1", "compiling", 1.1),
        event("k1", "failed", 1.4, reason="numba: cannot type erfinv"),
        event("function", "compiling", 1.5),
    ]
    states = kernel_states(events)
    assert list(states) == ["k0", "k1", "function"]  # order of first appearance
    assert states["k0"].state == "cached" and states["k0"].seconds == pytest.approx(0.005)
    assert states["k1"].state == "failed" and states["k1"].reason == "numba: cannot type erfinv"
    assert states["k1"].history == ("queued", "compiling", "failed")
    assert count_states(states) == {"compiling": 1, "cached": 1, "failed": 1}


def test_requeue_after_ready_and_retry_after_failure():
    events = [
        event("k0", "compiling", 1.0),
        event("k0", "ready", 2.0),
        event("k0", "failed", 2.1, reason="disagrees with the interpreter"),
        event("k0", "queued", 3.0),
        event("k0", "cached", 3.1),
    ]
    state = kernel_states(events)["k0"]
    assert state.history == ("compiling", "ready", "failed", "queued", "cached")
    assert state.state == "cached" and state.reason == ""


@pytest.mark.parametrize(
    "states, message",
    [
        (["ready"], "'ready' cannot follow 'no event'"),
        (["queued", "ready"], "'ready' cannot follow 'queued'"),
        (["queued", "compiling", "cached"], "'cached' cannot follow 'compiling'"),
    ],
)
def test_impossible_orders_are_rejected(states, message):
    events = [event("k2", s, float(i), reason="boom" if s == "failed" else "") for i, s in enumerate(states)]
    with pytest.raises(EventError, match=message):
        kernel_states(events)


def test_malformed_events_are_rejected():
    with pytest.raises(EventError, match="state must be one of"):
        event("k0", "done", 1.0)
    with pytest.raises(EventError, match="needs a reason"):
        event("k0", "failed", 1.0)
    with pytest.raises(EventError, match="only failed events carry a reason"):
        event("k0", "ready", 1.0, reason="fine")
    with pytest.raises(EventError, match="seconds must be"):
        event("k0", "ready", 1.0, seconds=-1.0)


def test_event_time_defaults_to_the_monotonic_clock():
    import time

    before = time.monotonic()
    emitted = KernelEvent("function f", "k0", "queued")
    assert before <= emitted.time <= time.monotonic()
    assert emitted.describe() == "k0 queued"
    assert event("k0", "failed", 1.0, 0.25, "x").describe() == "k0 failed (0.250 s): x"


# -- subscribing --------------------------------------------------------------------------------------------------
def test_function_records_events_and_notifies_until_unsubscribed():
    f = make_function()
    assert f.events == []
    received = []
    unsubscribe = f.subscribe(received.append)
    first = event("k0", "queued", 1.0)
    f.compile_status.emit(first)
    assert f.events == [first] and received == [first]
    unsubscribe()
    unsubscribe()  # a second call is harmless
    second = event("k0", "compiling", 2.0)
    f.compile_status.emit(second)
    assert f.events == [first, second]
    assert received == [first]


def test_a_failing_subscriber_is_logged_and_does_not_stop_others(caplog):
    log = EventLog()
    received = []

    def broken(_event):
        raise RuntimeError("subscriber bug")

    log.subscribe(broken)
    log.subscribe(received.append)
    with caplog.at_level(logging.ERROR, logger="nbdiff.events"):
        log.emit(event("k0", "queued", 1.0))
    assert len(received) == 1
    assert "k0 queued" in caplog.text and "subscriber bug" in caplog.text


def test_subscribe_and_emit_check_their_arguments():
    log = EventLog()
    with pytest.raises(TypeError, match="callable"):
        log.subscribe("not a function")
    with pytest.raises(TypeError, match="KernelEvent"):
        log.emit(("k0", "queued"))


# -- the panel ----------------------------------------------------------------------------------------------------
def test_panel_redraws_when_another_backend_answers():
    """What answered the last call changing (interpreted calls, then compiled ones) redraws the panel, once."""
    f = make_function()
    panel = nd.status_panel(f)
    seen: list[str] = []
    f.subscribe_status(seen.append)
    f.compile_status.answered_by("cpu")  # as a compiled call after interpreted ones reports it
    assert panel_text(panel.value).startswith("interpreting · backend cpu · function f")
    f.compile_status.answered_by("cpu")
    assert seen == ["interpreting"]  # the same backend again: nothing to redraw
    f.compile_status.answered_by("numpy")
    assert " · backend numpy · " in panel_text(panel.value) and len(seen) == 2
    panel.close()


def test_panel_without_events_shows_the_interpreter():
    f = make_function()
    assert f.kernels == []
    panel = nd.status_panel(f)
    assert "nbdiff-status" in panel._dom_classes
    assert panel_text(panel.value).startswith("interpreting · backend numpy · function f")
    assert row(panel.value, "function") == ["function", INTERPRETED, "", "", f"{len(f.graph.nodes)} nodes"]


def test_fused_kernels_are_listed_as_interpreted_until_events_arrive():
    f = make_function(rewrites=True)
    assert f.kernels, "the fusion pass makes at least one kernel of tanh, mul and their gradient"
    panel = nd.status_panel(f)
    for kernel in f.kernels:
        gradient = sum(m.gradient for m in kernel.members)
        detail = f"fused, {len(kernel.members)} ops" + (f" ({gradient} gradient)" if gradient else "")
        assert row(panel.value, kernel.name) == [kernel.name, INTERPRETED, "", "", detail]
    first = f.kernels[0].name
    f.compile_status.emit(event(first, "compiling", 1.0))
    assert row(panel.value, first)[:2] == [first, "compiling"]
    assert row(panel.value, first)[4].startswith("fused, ")


def test_rows_list_fused_kernels_then_kernels_only_events_name():
    fake = SimpleNamespace(
        kernels=[SimpleNamespace(name="k0", members=[1, 2, 3]), SimpleNamespace(members=[1])],
        graph=None,
        status="interpreting",
        backend="numpy",
    )
    rows = status_rows(fake, [event("k1", "queued", 1.0), event("k2", "queued", 1.0)])
    assert [(r.kernel, r.state, r.detail) for r in rows] == [
        ("k0", INTERPRETED, "fused, 3 ops"),
        ("k1", "queued", "fused, 1 ops"),
        ("k2", "queued", ""),
    ]


def test_rows_name_ops_compiled_alone():
    node = SimpleNamespace(op=SimpleNamespace(name="log_softmax_take"))
    fake = SimpleNamespace(kernels=[], graph=SimpleNamespace(nodes=[node]), status="compiling 0/1 kernels")
    rows = status_rows(fake, [event("log_softmax_take", "queued", 1.0)])
    assert [(r.kernel, r.state, r.detail) for r in rows] == [("log_softmax_take", "queued", "compiled op")]


def test_rows_show_kernels_compiled_inside_the_entry_point():
    fake = SimpleNamespace(kernels=[SimpleNamespace(name="k0", members=[1, 2, 3])], graph=None, status="compiled")
    rows = status_rows(fake, [event("function", "queued", 1.0)])
    assert [(r.kernel, r.state, r.detail) for r in rows] == [
        ("k0", IN_ENTRY_POINT, "fused, 3 ops"),
        ("function", "queued", "whole-function entry point"),
    ]


def test_panel_html_after_each_event():
    f = make_function()
    panel = nd.status_panel(f)
    backend = FakeBackend(f)

    backend.step("k0", "queued", "compiling 0/2 kernels")
    backend.step("k1", "queued", "compiling 0/2 kernels")
    assert panel_text(panel.value).startswith("compiling 0/2 kernels · backend numpy")
    assert "kernels: 2 queued" in panel_text(panel.value)
    assert row(panel.value, "k0")[:2] == ["k0", "queued"]

    backend.step("k0", "compiling", "compiling 0/2 kernels")
    assert row(panel.value, "k0") == ["k0", "compiling", "1.00 s", "1.00 s", ""]  # queued at 100.5, now 101.5

    backend.step("k0", "ready", "compiling 1/2 kernels", seconds=0.31)
    assert row(panel.value, "k0") == ["k0", "ready", "310 ms", "1.50 s", ""]

    backend.step("k1", "cached", "compiling 2/2 kernels", seconds=0.004)
    assert row(panel.value, "k1") == ["k1", "from cache", "4 ms", "1.50 s", ""]
    assert "kernels: 1 cached" not in panel_text(panel.value)  # states are shown by their labels
    assert "kernels: 1 from cache, 1 ready" in panel_text(panel.value)

    f.compile_status.backend = "cpu"  # what answered the last call, as a compiled call sets it
    backend.step("function", "queued", "compiled")
    backend.step("function", "compiling", "compiled")
    backend.step("function", "failed", "fallback: entry point failed to compile", reason="numba <TypingError> & co")
    text = panel_text(panel.value)
    assert text.startswith("fallback: entry point failed to compile · backend cpu · function f")
    assert row(panel.value, "function") == ["function", "failed", "500 ms", "1.00 s", "numba <TypingError> & co"]
    assert "numba &lt;TypingError&gt; &amp; co" in panel.value  # the reason is escaped


def test_panel_updates_from_worker_threads():
    f = make_function()
    panel = nd.status_panel(f)
    kernels = [f"k{i}" for i in range(8)]
    start = threading.Barrier(len(kernels))

    def worker(kernel: str) -> None:
        start.wait()
        f.compile_status.emit(KernelEvent("function f", kernel, "queued"))
        f.compile_status.emit(KernelEvent("function f", kernel, "compiling"))
        if kernel == "k3":
            f.compile_status.emit(KernelEvent("function f", kernel, "failed", reason="no loop for int8"))
        else:
            f.compile_status.emit(KernelEvent("function f", kernel, "ready", seconds=0.1))

    threads = [threading.Thread(target=worker, args=(k,)) for k in kernels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(f.events) == 3 * len(kernels)
    states = kernel_states(f.events)  # each thread's events stay in order
    assert {k: s.state for k, s in states.items()} == {k: "failed" if k == "k3" else "ready" for k in kernels}
    assert panel.value == render_status_html(f, f.events)  # the last redraw saw every event
    assert row(panel.value, "k3")[1:2] == ["failed"] and row(panel.value, "k3")[4] == "no loop for int8"
    assert "kernels: 7 ready, 1 failed" in panel_text(panel.value)


def test_closed_panel_stops_listening():
    f = make_function()
    panel = nd.status_panel(f)
    panel.close()
    before = panel.value
    f.compile_status.emit(event("k0", "queued", 1.0))
    assert panel.value == before
    assert "k0" not in panel.value


def test_impossible_event_order_shows_in_the_panel_instead_of_raising():
    f = make_function()
    panel = nd.status_panel(f)
    f.compile_status.emit(event("k0", "ready", 1.0))
    text = panel_text(panel.value)
    assert text.startswith("interpreting")
    assert "event error: kernel 'k0' of function f: 'ready' cannot follow 'no event'" in text


def test_status_panel_needs_a_function():
    with pytest.raises(InputError, match="status_panel: expected an nd.function, got Variable"):
        nd.status_panel(nd.vector("x"))


@pytest.mark.parametrize(
    "seconds, text", [(None, ""), (0.0004, "0.40 ms"), (0.0042, "4 ms"), (0.31, "310 ms"), (2.5, "2.50 s")]
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text

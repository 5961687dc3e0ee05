"""Compile events: what the background compiler reports about each kernel, and the per-kernel states they imply.

A target emits one ``KernelEvent`` per step of a kernel's life through ``CompileStatus.emit``; the compile-status
panel and any other subscriber (``f.subscribe(callback)``) receive them, possibly from a background thread.
``kernel_states(events)`` folds a recorded sequence into one ``KernelState`` per kernel: the panel's model, and
what tests check. A kernel moves through these states (``seconds`` is the duration of the step an event ends)::

    queued -> compiling -> ready            compiled now ("ready, 0.31 s": the compile took 0.31 s)
    queued -> cached                        loaded from the on-disk cache ("cached, 0.005 s": the load)
    ... -> failed (reason)                  a compile error, or a mismatch with the interpreter after loading
    ready | cached | failed -> queued       queued again (a new signature, or a retry)

Backends update ``f.status`` / ``f.backend`` before emitting, so a subscriber reading them sees the new state.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from time import monotonic
from typing import Callable, Iterable

from nbdiff.errors import NbdiffError

STATES = ("queued", "compiling", "cached", "ready", "failed")
FINISHED = ("cached", "ready", "failed")
ENTRY_POINT = "function"  # the kernel name of a whole-function entry point

# Which state may follow which; ``None`` is a kernel with no event yet.
TRANSITIONS: dict[str | None, tuple[str, ...]] = {
    None: ("queued", "compiling", "cached", "failed"),
    "queued": ("compiling", "cached", "failed"),
    "compiling": ("ready", "failed"),
    "cached": ("failed", "queued"),
    "ready": ("failed", "queued"),
    "failed": ("queued",),
}

_log = logging.getLogger("nbdiff.events")


class EventError(NbdiffError, ValueError):
    """A malformed compile event, or a sequence of events no backend may emit (e.g. ``ready`` before ``compiling``)."""


@dataclass(frozen=True)
class KernelEvent:
    """One step of one kernel: ``state`` reached at ``time`` (``time.monotonic``), after a step of ``seconds``."""

    function: str  # the function's name or label ("function f"), never an id
    kernel: str  # "k0", "k1", ... or ENTRY_POINT for the whole-function entry point
    state: str
    seconds: float | None = None
    reason: str = ""  # why it failed (required for "failed", empty otherwise)
    time: float = field(default_factory=monotonic)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise EventError(f"KernelEvent: state must be one of {', '.join(STATES)}, got {self.state!r}")
        if self.state == "failed" and not self.reason:
            raise EventError(f"KernelEvent: a failed event for kernel {self.kernel!r} needs a reason")
        if self.state != "failed" and self.reason:
            raise EventError(f"KernelEvent: only failed events carry a reason ({self.kernel!r} is {self.state!r})")
        if self.seconds is not None and not self.seconds >= 0:
            raise EventError(f"KernelEvent: seconds must be None or >= 0, got {self.seconds!r}")

    def describe(self) -> str:
        """``k0 ready (0.310 s)`` or ``k1 failed: reason``."""
        took = f" ({self.seconds:.3f} s)" if self.seconds is not None else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.kernel} {self.state}{took}{why}"


@dataclass(frozen=True)
class KernelState:
    """One kernel's current state, folded from its events."""

    kernel: str
    state: str
    reason: str  # the latest failure's reason ("" unless state is "failed")
    history: tuple[str, ...]  # every state it went through, in order
    seconds: float | None  # duration of the latest step (the event's own, else the time since the previous event)
    total_seconds: float  # from the first event to the latest
    updated: float  # monotonic time of the latest event

    @property
    def finished(self) -> bool:
        """True once the kernel is usable (ready, cached) or has failed."""
        return self.state in FINISHED


def kernel_states(events: Iterable[KernelEvent]) -> dict[str, KernelState]:
    """One ``KernelState`` per kernel, in order of first appearance; raises ``EventError`` on an impossible order."""
    first: dict[str, KernelEvent] = {}
    states: dict[str, KernelState] = {}
    for event in events:
        previous = states.get(event.kernel)
        before = previous.state if previous is not None else None
        if event.state not in TRANSITIONS[before]:
            raise EventError(
                f"kernel {event.kernel!r} of {event.function}: {event.state!r} cannot follow "
                f"{before or 'no event'!r}; allowed: {', '.join(TRANSITIONS[before])}"
            )
        start = first.setdefault(event.kernel, event)
        seconds = event.seconds
        if seconds is None and previous is not None:
            seconds = max(0.0, event.time - previous.updated)
        states[event.kernel] = KernelState(
            kernel=event.kernel,
            state=event.state,
            reason=event.reason,
            history=(previous.history if previous is not None else ()) + (event.state,),
            seconds=seconds,
            total_seconds=max(0.0, event.time - start.time),
            updated=event.time,
        )
    return states


def count_states(states: dict[str, KernelState]) -> dict[str, int]:
    """How many kernels are in each state, in ``STATES`` order, leaving out states no kernel is in."""
    counts = dict.fromkeys(STATES, 0)
    for summary in states.values():
        counts[summary.state] += 1
    return {state: n for state, n in counts.items() if n}


Listener = Callable[[KernelEvent], None]


class EventLog:
    """A thread-safe list of events with subscribers: what ``CompileStatus.events`` / ``subscribe`` / ``emit`` use.

    ``emit`` appends under a lock and then calls each subscriber outside it (in the emitting thread), so a callback
    may read the log or unsubscribe. A subscriber that raises is logged and does not stop the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[KernelEvent] = []
        self._listeners: list[Listener] = []

    @property
    def events(self) -> list[KernelEvent]:
        """A snapshot of the events so far, oldest first."""
        with self._lock:
            return list(self._events)

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(event)`` for every later event; returns a function that unsubscribes it."""
        if not callable(callback):
            raise TypeError(f"subscribe: callback must be callable, got {type(callback).__name__}")
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def emit(self, event: KernelEvent) -> None:
        """Record ``event`` and pass it to every subscriber."""
        if not isinstance(event, KernelEvent):
            raise TypeError(f"emit: expected a KernelEvent, got {type(event).__name__}")
        with self._lock:
            self._events.append(event)
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break the compiler thread
                _log.exception("nbdiff: an event subscriber raised on %s", event.describe())

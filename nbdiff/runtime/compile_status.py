"""``CompileStatus``: where a function's background compilation stands, and the one place a target reports to.

A ``Function`` owns one. The interpreter's ``plan`` answers calls until a compiled runner has been checked against
it. A target's compilation (``nbdiff/backends/compilation.py``) reports through the public methods below, from any
thread: ``progress(done, total)``, ``emit(event)`` per kernel event, and exactly one of ``ready(runner)``,
``failed(reason)`` or ``nothing_to_compile(reason)``. ``ready`` makes the runner a *candidate*: it is checked at
once on the last call's inputs when the function has been called (so the state ``wait`` returns is final), else
the state is ``compiled (unchecked)`` until the first call checks it (``decide``). Readers (``Function.status``,
``f.events``, the status panel) see ``state``, ``events``, ``subscribe``, ``subscribe_status`` and ``wait``.

A runner (``Runner``) is what a target builds from its loaded kernels; the status object only calls the methods of
that protocol, so any target (CPU, CUDA) plugs in the same way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from nbdiff.errors import NbdiffError
from nbdiff.runtime.events import EventLog, KernelEvent
from nbdiff.runtime.interpreter import Plan

_log = logging.getLogger("nbdiff.status")
INTERPRETING = "interpreting"
COMPILED = "compiled"
UNCHECKED = "compiled (unchecked)"  # compiled before any call: the first call checks it against the interpreter


class Runner(Protocol):
    """What answers calls once a target's kernels are loaded."""

    backend: str  # the target's name, what ``f.backend`` says after a call it answered
    mismatched: str | None  # the kernel the agreement check found wrong (set by ``checked_run``)
    fast: Callable[[tuple], list[np.ndarray] | None] | None  # a path for raw arguments, None when there is none

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The outputs for checked, converted inputs."""

    def checked_run(self, interpreter: Plan, arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], str | None]:
        """The outputs checked against ``interpreter`` and why they disagree (None when they agree)."""

    def learn(self, args: tuple, arrays: Sequence[np.ndarray]) -> None:
        """After a normal call: may set ``fast`` for later calls with arguments like ``args``."""


class ArgumentAdapter(Protocol):
    """What a target with memory of its own (a device) offers for arguments that are not host arrays: its arrays are
    let through checked but not copied, and copied to the host where the interpreter answers."""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is one of the target's arrays (cheap: called on every argument that is not ndarray)."""

    def argument(self, var: Any, value: Any, position: int, where: str) -> Any:
        """``value`` checked against the input variable ``var`` (dtype, rank, shape: a typed nbdiff error naming
        the argument otherwise), not copied."""

    def to_host(self, value: Any) -> np.ndarray:
        """A host copy of one of the target's arrays."""


class Compilation(Protocol):
    """What a target's background compilation offers the status object."""

    def report_mismatch(self, kernel: str, reason: str) -> None:
        """The agreement check found ``kernel`` wrong: a "failed" event says so."""


class CompileStatus:
    """The compile state of one function, its events, and the agreement check deciding between runners."""

    def __init__(self, plan: Plan, label: str = "function"):
        self.plan = plan  # the interpreter: the reference, and what answers until a compiled runner is checked
        self.label = label  # the events' function name
        self.state = INTERPRETING
        self.compilation: Compilation | None = None  # the target's compilation, told about mismatches
        self.runner: Runner | None = None  # the checked compiled runner; None: the interpreter answers
        self.backend = "numpy"  # what answered the last call (``f.backend``): set before watchers hear a decision
        self.candidate: Runner | None = None  # a compiled runner waiting for its agreement check
        self.fast: Callable[[tuple], list[np.ndarray] | None] | None = None  # the runner's raw-argument path
        self.last_arrays: list[np.ndarray] | None = None  # the last call's inputs until compiled: checked on them
        self._final = threading.Event()  # set when the state is final (compiled, fallback, nothing to do)
        self._lock = threading.Lock()
        self._watchers: list[Callable[[str], None]] = []
        self._log = EventLog()
        self._deferred_report: tuple[str, str] | None = None  # a mismatch found on ``ready``, reported after its event
        self.adapter: ArgumentAdapter | None = None  # set by a target whose own arrays calls may pass (a device's)

    # -- readers -------------------------------------------------------------------------------------------------
    @property
    def events(self) -> list[KernelEvent]:
        """The compile events so far, oldest first."""
        return self._log.events

    @property
    def is_final(self) -> bool:
        """Whether compilation has ended (compiled, fallback, nothing to compile, or never started)."""
        return self._final.is_set()

    def subscribe(self, callback: Callable[[KernelEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on each later compile event (maybe from a worker thread); returns unsubscribe."""
        return self._log.subscribe(callback)

    def subscribe_status(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(state)`` when the agreement check decides the state, or when what answers calls changes
        (``answered_by``: a compiled call after interpreted ones); returns unsubscribe."""
        with self._lock:
            self._watchers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._watchers:
                    self._watchers.remove(callback)

        return unsubscribe

    def wait(self, timeout: float | None = None) -> str:
        """Block until compilation has ended, or ``timeout`` seconds; the state then."""
        self._final.wait(timeout)
        return self.state

    # -- what a target reports -----------------------------------------------------------------------------------
    def started(self, compilation: Compilation | None) -> None:
        """A target began compiling (``compilation``), or none did (None: the interpreter is final at once)."""
        self.compilation = compilation
        if compilation is None:
            self._final.set()

    def progress(self, done: int, total: int) -> None:
        """``done`` of ``total`` kernels finished, until the state says how it ended."""
        with self._lock:
            if not self._final.is_set() and self.state.startswith((INTERPRETING, "compiling")):
                self.state = f"compiling {done}/{total} kernels"

    def emit(self, event: KernelEvent) -> None:
        """Record a compile event and notify subscribers (report the state first); a mismatch the check found as
        the runner was installed is reported after it, so a kernel's "failed" follows its "ready"."""
        self._log.emit(event)
        report, self._deferred_report = self._deferred_report, None
        if report is not None and self.compilation is not None:
            self.compilation.report_mismatch(*report)

    def ready(self, runner: Runner) -> None:
        """A compiled runner is ready: checked at once on the last call's inputs when there are some (the state
        ``wait`` then returns is final), else "compiled (unchecked)" until the first call checks it."""
        arrays, self.last_arrays = self.last_arrays, None
        with self._lock:
            self.candidate = runner
        if arrays is not None:
            try:
                self.decide(runner, arrays, installing=True)
            except NbdiffError:  # the interpreter refused those inputs: the first good call checks it
                pass
        with self._lock:
            if self.candidate is runner:
                self.state = UNCHECKED
        self._final.set()
        self.last_arrays = None  # a call racing with the lines above may have kept its inputs

    def failed(self, reason: str) -> None:
        """Compilation failed: the interpreter keeps answering, and the state says why."""
        with self._lock:
            self.candidate = None
            self.last_arrays = None
            self.state = f"fallback: {reason}"
        self._final.set()

    def nothing_to_compile(self, reason: str) -> None:
        """Nothing to compile: the interpreter is the final answer."""
        with self._lock:
            self.last_arrays = None
            self.state = f"{INTERPRETING} ({reason})"
        self._final.set()

    # -- calls ---------------------------------------------------------------------------------------------------
    def run(self, args: tuple, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
        """The outputs for ``arrays`` (``args`` as passed) and the name of what computed them: the checked runner,
        the candidate checked now, or the interpreter."""
        if self.candidate is not None:
            return self._first_compiled_call(self.host_arrays(arrays))
        runner = self.runner
        if runner is None:
            arrays = self.host_arrays(arrays)
            if not self._final.is_set():
                self.last_arrays = arrays  # by reference: the compiled runner is checked on them once ready
            return self.plan.run(arrays), "numpy"
        results = runner.run(arrays)
        runner.learn(args, arrays)
        self.fast = runner.fast
        return results, runner.backend

    def host_arrays(self, arrays: list[Any]) -> list[np.ndarray]:
        """``arrays`` with the target's own (device) arrays copied to the host, for the interpreter."""
        adapter = self.adapter
        if adapter is None:
            return arrays
        return [adapter.to_host(a) if not isinstance(a, np.ndarray) and adapter.accepts(a) else a for a in arrays]

    def _first_compiled_call(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
        """The candidate checked against the interpreter (``decide``); the interpreter's results where it
        disagrees."""
        candidate = self.candidate
        if candidate is None:  # another thread decided meanwhile
            runner = self.runner
            return (self.plan.run(arrays), "numpy") if runner is None else (runner.run(arrays), runner.backend)
        results = self.decide(candidate, arrays)
        if results is None:
            return self.plan.run(arrays), "numpy"
        return results, candidate.backend

    def decide(self, candidate: Runner, arrays: list[np.ndarray], installing: bool = False) -> list[np.ndarray] | None:
        """Check ``candidate`` against the interpreter on ``arrays``: it answers alone from now on if they agree
        (state "compiled"); otherwise the interpreter keeps answering and the state says why. The agreeing results,
        None where they disagree. A user's mistake in ``arrays`` raises and decides nothing."""
        try:
            results, problem = candidate.checked_run(self.plan, arrays)
        except NbdiffError:
            raise  # the user's input is wrong (the interpreter says so): the check waits for the next call
        except Exception as exc:
            results, problem = [], f"the compiled function raised {type(exc).__name__}: {exc}"
        with self._lock:
            if self.candidate is not candidate:  # another thread decided first
                return results or None
            self.candidate = None
            self.last_arrays = None
            if problem is not None:
                self.state = f"fallback: {problem}"
            else:
                self.runner = candidate
                self.fast = candidate.fast
                self.state = COMPILED
            if not installing:  # this call's answer: the panel redrawing on the decision shows who gave it
                self.backend = "numpy" if problem is not None else candidate.backend
        self._state_changed()
        if problem is None:
            return results
        mismatched = candidate.mismatched
        if mismatched is not None and self.compilation is not None:
            if installing:
                self._deferred_report = (mismatched, problem)
            else:
                self.compilation.report_mismatch(mismatched, problem)
        return None

    def answered_by(self, backend: str) -> None:
        """A call was answered by ``backend`` ("numpy" or a target's name), another than the last call's: record
        it and tell the watchers (the panel said "backend numpy" after compiled calls, as no decision followed)."""
        with self._lock:
            if self.backend == backend:
                return
            self.backend = backend
        self._state_changed()

    def _state_changed(self) -> None:
        with self._lock:
            watchers, state = list(self._watchers), self.state
        for callback in watchers:
            try:
                callback(state)
            except Exception:  # a broken watcher must not break the user's call
                _log.exception("nbdiff: a status watcher raised")

    def __getstate__(self) -> Any:
        raise TypeError("CompileStatus is not picklable (it holds threads' state); pickle the Function instead")

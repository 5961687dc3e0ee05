"""The target registry and the public ``CompileStatus``: a second target plugs in without touching ``function.py``.

``EchoTarget`` is a complete (synchronous) target: it reports one kernel's events and a runner that answers with
the interpreter's plan plus a configurable error, so both outcomes of the agreement check are seen through the
public status object alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import BackendError
from nbdiff.runtime import targets
from nbdiff.runtime.compile_status import UNCHECKED, CompileStatus
from nbdiff.runtime.events import KernelEvent


class EchoRunner:
    """The interpreter's plan, its outputs shifted by ``error``."""

    backend = "echo"
    fast = None

    def __init__(self, plan, error: float):
        self.plan, self.error, self.mismatched = plan, error, None

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [r + self.error for r in self.plan.run(arrays)]

    def checked_run(self, interpreter, arrays):
        expected, got = interpreter.run(arrays), self.run(arrays)
        if all(np.allclose(e, g) for e, g in zip(expected, got)):
            return got, None
        self.mismatched = "k0"
        return [], "kernel k0 disagrees with the interpreter"

    def learn(self, args, arrays) -> None:
        return None


class EchoTarget:
    """A target that compiles nothing and is ready at once."""

    name = "echo"
    error = 0.0
    available = True
    mismatches: list[tuple[str, str]] = []

    @classmethod
    def problem(cls) -> str | None:
        return None if cls.available else "needs an echo device, which this machine lacks"

    @classmethod
    def start(cls, graph, kernels, status: CompileStatus, fastmath: bool):
        compilation = cls()
        status.started(compilation)
        for state in ("queued", "compiling", "ready"):
            status.emit(KernelEvent(status.label, "k0", state))
        status.progress(1, 1)
        status.ready(EchoRunner(status.plan, cls.error))
        return compilation

    def report_mismatch(self, kernel: str, reason: str) -> None:
        type(self).mismatches.append((kernel, reason))


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setitem(targets._TARGETS, "echo", f"{__name__}:EchoTarget")
    monkeypatch.setattr(EchoTarget, "mismatches", [])
    return EchoTarget


def test_a_registered_target_compiles_and_is_checked_by_the_first_call(echo):
    x = nd.vector("x")
    f = nd.function([x], nd.tanh(x) * 2.0, backend="echo")
    assert f.wait(0) == UNCHECKED
    assert [e.state for e in f.events] == ["queued", "compiling", "ready"]
    np.testing.assert_allclose(f(np.ones(3)), np.tanh(np.ones(3)) * 2.0)
    assert (f.status, f.backend) == ("compiled", "echo")


def test_a_target_that_disagrees_falls_back_and_is_told_which_kernel(echo, monkeypatch):
    monkeypatch.setattr(echo, "error", 1.0)
    x = nd.vector("x")
    f = nd.function([x], nd.tanh(x) * 2.0, backend="echo")
    np.testing.assert_allclose(f(np.ones(3)), np.tanh(np.ones(3)) * 2.0)  # the interpreter's answer
    assert f.status == "fallback: kernel k0 disagrees with the interpreter" and f.backend == "numpy"
    assert echo.mismatches == [("k0", "kernel k0 disagrees with the interpreter")]


def test_auto_takes_the_first_target_that_can_run_here(echo, monkeypatch):
    monkeypatch.setattr(targets, "_AUTO", ("echo",))
    x = nd.vector("x")
    with nd.option_context(compile=True):
        assert nd.function([x], x * 2.0).wait(0) == UNCHECKED
        monkeypatch.setattr(echo, "available", False)
        f = nd.function([x], x * 2.0)
    assert (f.wait(0), f.events) == ("interpreting", [])
    with pytest.raises(BackendError, match="backend='echo' needs an echo device"):
        nd.function([x], x * 2.0, backend="echo")


def test_the_interpreter_and_auto_without_compiling_choose_no_target():
    assert targets.choose("numpy", True) is None and targets.choose("auto", False) is None
    assert {"auto", "numpy", "cpu", "cuda"} <= set(targets.names())


class Recorder:
    """A compilation that records the mismatches reported to it."""

    def __init__(self):
        self.reports: list[tuple[str, str]] = []

    def report_mismatch(self, kernel: str, reason: str) -> None:
        self.reports.append((kernel, reason))


def status_of_tanh() -> tuple[CompileStatus, list[np.ndarray]]:
    x = nd.vector("x")
    f = nd.function([x], nd.tanh(x), backend="numpy")
    return CompileStatus(f.compile_status.plan, "function t"), [np.linspace(-1.0, 1.0, 4)]


@pytest.mark.parametrize("error", [0.0, 1.0])
def test_ready_after_a_call_checks_the_runner_at_once_and_reports_a_mismatch_after_its_event(error):
    status, arrays = status_of_tanh()
    compilation = Recorder()
    status.started(compilation)
    status.progress(0, 1)
    assert status.state == "compiling 0/1 kernels" and not status.is_final
    results, backend = status.run((), arrays)  # kept: the runner is checked on these inputs once ready
    assert backend == "numpy" and status.last_arrays is arrays
    status.ready(EchoRunner(status.plan, error))
    assert status.is_final and status.last_arrays is None
    if error == 0.0:
        assert status.wait(0) == "compiled" and status.run((), arrays)[1] == "echo"
        assert compilation.reports == []
        return
    assert status.wait(0) == "fallback: kernel k0 disagrees with the interpreter"
    assert compilation.reports == []  # reported after the event of the unit that finished compiling
    status.emit(KernelEvent("function t", "k0", "ready"))
    assert compilation.reports == [("k0", "kernel k0 disagrees with the interpreter")]
    np.testing.assert_array_equal(status.run((), arrays)[0][0], results[0])


def test_failed_and_nothing_to_compile_are_final():
    status, arrays = status_of_tanh()
    status.started(Recorder())
    status.failed("kernel k0: compiling failed")
    assert (status.wait(0), status.run((), arrays)[1]) == ("fallback: kernel k0: compiling failed", "numpy")
    status, _ = status_of_tanh()
    status.started(Recorder())
    status.nothing_to_compile("nothing to compile")
    assert status.wait(0) == "interpreting (nothing to compile)"

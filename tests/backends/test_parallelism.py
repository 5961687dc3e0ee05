"""A kernel's parallel module runs only where the loop is large enough and the machine's cores are free."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import parallelism
from nbdiff.backends.cpu import KernelRunner
from nbdiff.backends.parallelism import (
    LOAD_CHECK_SECONDS,
    OTHERS_LIMIT_CORES,
    PARALLEL_THRESHOLD,
    CoresFree,
    CpuTimes,
    busy_ticks,
    cpu_times,
    others_cores,
)


class FakeMachine:
    """A clock and CPU-time reader advanced by hand: ``run`` lets seconds pass while other processes and this one
    use cores."""

    def __init__(self) -> None:
        self.now, self.busy, self.own = 0.0, 1000.0, 5.0
        self.readable = True

    def read(self) -> CpuTimes | None:
        return CpuTimes(self.busy, self.own) if self.readable else None

    def clock(self) -> float:
        return self.now

    def run(self, seconds: float, others: float = 0.0, own: float = 0.0) -> None:
        self.now += seconds
        self.busy += (others + own) * seconds
        self.own += own * seconds


@pytest.fixture
def machine(monkeypatch) -> FakeMachine:
    """A fake 2-core machine whose load average is low (the rule for the first reading and the fallback)."""
    monkeypatch.setattr(parallelism, "cores", lambda: 2)
    monkeypatch.setattr(parallelism, "load_average", lambda: 0.3)
    return FakeMachine()


def watching(machine: FakeMachine) -> CoresFree:
    return CoresFree(read=machine.read, clock=machine.clock)


def test_this_process_s_own_threads_leave_the_cores_free(machine, monkeypatch):
    free = watching(machine)
    assert free()
    monkeypatch.setattr(parallelism, "load_average", lambda: 3.5)  # what our own threads do to the load average
    for _ in range(3):
        machine.run(LOAD_CHECK_SECONDS, others=0.1, own=2.0)
        assert free(), free.others
    assert free.others == pytest.approx(0.1)


def test_other_processes_on_the_cores_make_them_busy(machine):
    free = watching(machine)
    assert free()
    machine.run(LOAD_CHECK_SECONDS, others=OTHERS_LIMIT_CORES + 0.1, own=0.5)
    assert not free()
    machine.run(LOAD_CHECK_SECONDS, others=OTHERS_LIMIT_CORES - 0.1, own=2.0)
    assert free(), "the others measured since the previous reading, not since the first"
    machine.run(LOAD_CHECK_SECONDS, others=2.0)
    assert not free()


def test_a_reading_is_kept_for_a_while(machine):
    free = watching(machine)
    free()
    machine.run(LOAD_CHECK_SECONDS / 2, others=2.0)
    assert free(), "read again within LOAD_CHECK_SECONDS"
    machine.run(LOAD_CHECK_SECONDS / 2, others=2.0)
    assert not free()


def test_the_first_reading_follows_the_load_average(machine, monkeypatch):
    """No interval to measure over yet: a machine loaded for the last minute starts serial, then is measured."""
    monkeypatch.setattr(parallelism, "load_average", lambda: 45.0)
    free = watching(machine)
    assert not free() and free.others is None
    machine.run(LOAD_CHECK_SECONDS, others=0.0, own=1.0)
    assert free()


def load_rule(monkeypatch, load: float | None, cores: int = 2) -> bool:
    """``cores_free()`` where /proc/stat cannot be read, at this load average."""
    monkeypatch.setattr(parallelism, "load_average", lambda: load)
    monkeypatch.setattr(parallelism, "cores", lambda: cores)
    machine = FakeMachine()
    machine.readable = False
    free = watching(machine)
    first = free()
    machine.run(LOAD_CHECK_SECONDS, others=2.0)
    assert free() == first and free.others is None
    return first


def test_without_proc_stat_the_load_average_decides(monkeypatch):
    assert load_rule(monkeypatch, 0.3)
    assert load_rule(monkeypatch, 2.5)  # this process's own parallel loop keeps the load near 2
    assert not load_rule(monkeypatch, 3.2)
    assert not load_rule(monkeypatch, 45.0)  # a shared machine: the threads would wait at the barrier
    assert load_rule(monkeypatch, None)  # no load average on this platform either
    assert not load_rule(monkeypatch, 0.1, cores=1)  # nothing to run a second thread on


def test_a_process_limited_to_one_core_runs_no_parallel_module(machine):
    """``limit_cores(1)`` (a Dask worker of one thread) keeps a process off the other cores however idle they are."""
    free = watching(machine)
    assert free()
    free.limit(1)
    assert not free() and free.cores == 1
    machine.run(LOAD_CHECK_SECONDS)
    assert not free()
    free.limit(8)  # more than there are: the cores there are
    assert free() and free.cores == 2
    free.limit(None)
    assert free()


STAT = """cpu  100 5 50 900 20 3 2 7 40 0
cpu0 60 5 30 400 10 2 1 4 40 0
cpu1 40 0 20 500 10 1 1 3 0 0
intr 12345 0 0
"""


def test_busy_ticks_are_those_of_the_process_s_cores():
    """user + nice + system + irq + softirq + steal; guest time is already in user; idle and iowait are not busy."""
    assert busy_ticks(STAT, None) == 100 + 5 + 50 + 3 + 2 + 7
    assert busy_ticks(STAT, {1}) == 40 + 20 + 1 + 1 + 3
    assert busy_ticks(STAT, {0, 1}) == busy_ticks(STAT, None)
    assert busy_ticks(STAT, {7}) == busy_ticks(STAT, None)  # no such line: the machine's
    assert busy_ticks("intr 1 2\n", None) is None


def test_the_real_reading_measures_cores():
    first = cpu_times()
    if first is None:
        pytest.skip("no /proc/stat here")
    assert first.busy > 0 and first.own > 0
    assert others_cores(first, CpuTimes(first.busy + 3.0, first.own + 1.0), 2.0) == pytest.approx(1.0)
    assert others_cores(first, CpuTimes(first.busy, first.own + 1.0), 2.0) == 0.0  # never below zero


REAL_INTERVAL = 0.2  # a short LOAD_CHECK_SECONDS, so that the tests on the real machine take a second or two


def readings_while(work_seconds: float, free: CoresFree) -> list[bool]:
    """``free()`` every 20 ms for ``work_seconds``, the first reading dropped (it follows the load average)."""
    seen, end = [], time.monotonic() + work_seconds
    while time.monotonic() < end:
        seen.append((free(), free.others))
        time.sleep(0.02)
    return [result for result, others in seen if others is not None]


def real_machine_or_skip() -> None:
    if cpu_times() is None or parallelism.cores() < 2:
        pytest.skip("needs /proc/stat and two cores")


def spinning_readings(seconds: float) -> tuple[list[bool], float]:
    """``cores_free()``'s readings while two threads of this process keep both cores busy, and the CPU seconds the
    process used meanwhile."""
    stop, x = threading.Event(), np.linspace(0, 1, 200_000)

    def spin() -> None:
        while not stop.is_set():
            np.sin(x)  # NumPy lets go of the GIL: both threads run at once

    threads = [threading.Thread(target=spin) for _ in range(2)]
    before = os.times()
    for thread in threads:
        thread.start()
    try:
        readings = readings_while(seconds, CoresFree(interval=REAL_INTERVAL))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return readings, sum(os.times()[:2]) - sum(before[:2])


def test_own_threads_busy_on_the_real_machine_leave_the_cores_free():
    """Up to three tries, each on a machine found quiet first: another process may start during one."""
    real_machine_or_skip()
    tried = []
    for _ in range(3):
        if False in readings_while(0.5, CoresFree(interval=REAL_INTERVAL)):
            continue  # other processes are using the cores now
        readings, used = spinning_readings(1.0)
        assert used > 1.0, f"this process used {used:.2f} s of CPU in 1 s: its threads did not run"
        if readings and readings.count(True) >= 0.75 * len(readings):
            return
        tried.append(readings)
    if not tried:
        pytest.skip("other processes were using this machine's cores")
    pytest.fail(f"busy while only this process's threads ran: {tried}")


BURN = "while True: pass"


def test_other_processes_busy_on_the_real_machine_make_the_cores_busy():
    real_machine_or_skip()
    children = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(parallelism.cores())]
    try:
        free, end = CoresFree(interval=REAL_INTERVAL), time.monotonic() + 4 * REAL_INTERVAL + 1.0
        while time.monotonic() < end and (free() or free.others is None):
            time.sleep(0.02)
        assert not free() and free.others is not None, free.others
    finally:
        for child in children:
            child.kill()
            child.wait()


def recording_runner() -> tuple[KernelRunner, list[str]]:
    """A runner of a real kernel whose serial and parallel modules only record that they ran."""
    x = nd.vector("x")
    (kernel,) = nd.function([x], nd.exp(x) * x, backend="numpy").kernels
    calls: list[str] = []
    return KernelRunner(kernel.op, lambda *a: calls.append("serial"), lambda *a: calls.append("parallel")), calls


def test_a_large_loop_runs_the_parallel_module_only_while_the_cores_are_free(monkeypatch):
    runner, calls = recording_runner()
    large, small = np.ones(PARALLEL_THRESHOLD), np.ones(PARALLEL_THRESHOLD - 1)
    for free in (True, False):
        monkeypatch.setattr(parallelism, "cores_free", lambda free=free: free)
        runner.compiled(large)
        runner.compiled(small)
    assert calls == ["parallel", "serial", "serial", "serial"]


class FakeBlas:
    """A BLAS library's thread count, as threadpoolctl's controllers expose it."""

    def __init__(self, threads: int):
        self.threads = threads

    def get_num_threads(self) -> int:
        return self.threads

    def set_num_threads(self, threads: int) -> None:
        self.threads = threads


def test_blas_runs_one_thread_only_while_the_cores_are_busy(monkeypatch):
    limiter, library = parallelism.SingleThreadedBlas(), FakeBlas(2)
    limiter._libraries = [library]
    seen = []
    for free in (True, False):
        monkeypatch.setattr(parallelism, "cores_free", lambda free=free: free)
        limiter.call(lambda: seen.append(library.threads))
    assert seen == [2, 1] and library.threads == 2, "lowered while busy, restored after the call"
    nested = limiter.call(lambda: limiter.call(lambda: library.threads))
    assert nested == 1 and library.threads == 2


def test_the_real_blas_thread_count_is_lowered_and_restored(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(parallelism, "cores_free", lambda: False)

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    during = parallelism.SingleThreadedBlas().call(blas_threads)
    assert during and set(during) == {1}, during
    assert blas_threads() == before

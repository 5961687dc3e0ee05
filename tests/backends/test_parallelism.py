"""A kernel's parallel module runs only where the loop is large enough and the machine's cores are free."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import parallelism
from nbdiff.backends.cpu import KernelRunner
from nbdiff.backends.parallelism import PARALLEL_THRESHOLD, CoresFree


def cores_free_at(monkeypatch, load: float | None, cores: int = 2) -> bool:
    monkeypatch.setattr(parallelism, "load_average", lambda: load)
    monkeypatch.setattr(parallelism, "cores", lambda: cores)
    return CoresFree()()


def test_the_cores_are_free_below_one_load_beyond_their_number(monkeypatch):
    assert cores_free_at(monkeypatch, 0.3)
    assert cores_free_at(monkeypatch, 2.5)  # this process's own parallel loop keeps the load near 2
    assert not cores_free_at(monkeypatch, 3.2)
    assert not cores_free_at(monkeypatch, 45.0)  # a shared machine: the threads would wait at the barrier
    assert cores_free_at(monkeypatch, None)  # no load average on this platform
    assert not cores_free_at(monkeypatch, 0.1, cores=1)  # nothing to run a second thread on


def test_a_reading_of_the_load_is_kept_for_a_while(monkeypatch):
    loads = iter([0.5, 50.0])
    monkeypatch.setattr(parallelism, "load_average", lambda: next(loads))
    free = CoresFree()
    assert free() and free(), "the load was read twice within LOAD_CHECK_SECONDS"


def test_a_process_limited_to_one_core_runs_no_parallel_module(monkeypatch):
    """``limit_cores(1)`` (a Dask worker of one thread) keeps a process off the other cores at any load."""
    monkeypatch.setattr(parallelism, "load_average", lambda: 0.1)
    monkeypatch.setattr(parallelism, "cores", lambda: 2)
    free = CoresFree()
    assert free()
    free.limit(1)
    assert not free() and free.cores == 1
    free.limit(8)  # more than there are: the cores there are
    assert free()
    free.limit(None)
    assert free()


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

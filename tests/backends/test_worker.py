"""The compile worker: its line protocol (``serve``, in this process), and ``CompileWorker``, the main process's
handle on the child process (a fresh one per test here, not the process-wide ``compile_worker()``): jobs are
compiled into Numba's disk cache and loaded here without compiling, failures are answered, and the death of a
worker fails its own jobs only.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nbdiff.backends import cache
from nbdiff.backends import worker as worker_module
from nbdiff.backends.worker import CompileJob, CompileResult, CompileWorker, compile_worker, serve

TIMEOUT = 120.0
SIGNATURE = "(int64, float64, float64[::1])"
MODULE = """\
import numba


@numba.njit(cache=True)
def kernel(n, scale, out):
    for i in range(n):
        out[i] = scale * i
"""
BROKEN = MODULE.replace("scale * i", "scale * undefined_name")


def module(directory: Path, name: str, text: str = MODULE) -> CompileJob:
    """A kernel module written under ``directory`` and the job that compiles it."""
    path = cache.write_module(directory, name, text)
    return CompileJob(str(path), name, "kernel", (SIGNATURE,), label=name)


class Answers:
    """Collects a job's ``on_start`` and ``on_done`` callbacks."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.done = threading.Event()
        self.result: CompileResult | None = None

    def on_start(self) -> None:
        self.started.set()

    def on_done(self, result: CompileResult) -> None:
        self.result = result
        self.done.set()

    def wait(self) -> CompileResult:
        assert self.done.wait(TIMEOUT), "the job was never answered"
        assert self.result is not None
        return self.result


@pytest.fixture
def worker():
    handle = CompileWorker()
    yield handle
    handle.close()


def test_serve_answers_start_and_done_per_job_and_survives_a_failing_one(tmp_path):
    jobs = [module(tmp_path, "worker_serve_good"), module(tmp_path, "worker_serve_broken", BROKEN)]
    jobs.append(module(tmp_path, "worker_serve_after"))
    requests = io.StringIO("".join(json.dumps({"id": i, **job.__dict__}) + "\n\n" for i, job in enumerate(jobs)))
    answers = io.StringIO()
    serve(requests, answers)
    messages = [json.loads(line) for line in answers.getvalue().splitlines()]
    assert [(m["id"], m["event"]) for m in messages] == [(i, e) for i in range(3) for e in ("start", "done")]
    done = [m for m in messages if m["event"] == "done"]
    assert [m["ok"] for m in done] == [True, False, True]
    assert "undefined_name" in done[1]["error"] and done[0]["error"] == ""
    assert all(m["seconds"] > 0 for m in done)
    assert cache.is_compiled(Path(jobs[0].path), [SIGNATURE])
    assert not cache.is_compiled(Path(jobs[1].path), [SIGNATURE])


def test_a_job_is_compiled_in_the_child_and_loaded_here_without_compiling(tmp_path, worker):
    job = module(tmp_path, "worker_child_good")
    answers = Answers()
    assert worker.pid() is None  # started by the first job
    worker.submit(job, answers.on_start, answers.on_done)
    result = answers.wait()
    assert answers.started.is_set()
    assert result.ok and result.error == "" and result.seconds > 0
    assert worker.starts == 1 and worker.pid() is not None
    assert cache.is_compiled(Path(job.path), [SIGNATURE])
    kernel = cache.load_compiled(Path(job.path), job.name, job.signatures)
    out = np.empty(4)
    kernel(4, 0.5, out)
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0, 1.5])
    with pytest.raises(TypeError):  # no other signature was loaded, and this process compiles nothing
        kernel(4, np.float32(0.5), np.empty(4, dtype=np.float32))


def test_a_module_not_compiled_is_a_cache_miss(tmp_path):
    job = module(tmp_path, "worker_never_compiled")
    with pytest.raises(cache.CacheMiss, match="not in Numba's cache"):
        cache.load_compiled(Path(job.path), job.name, job.signatures)


def test_threads_importing_one_module_at_once_all_get_it_complete(tmp_path):
    # CI once saw "module ... has no attribute 'kernel'": a second thread was handed the module that a first had
    # registered in sys.modules but not finished executing. The slow top level widens that window.
    slow = "import time\n\ntime.sleep(0.2)\n\n\ndef kernel():\n    return 1\n"
    path = cache.write_module(tmp_path, "worker_slow_import", slow)
    barrier = threading.Barrier(4)
    results: list[object] = []

    def load() -> None:
        barrier.wait()
        try:
            results.append(cache.import_module_from(path, "worker_slow_import").kernel())
        except Exception as error:  # recorded, so the assertion shows it
            results.append(error)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert results == [1, 1, 1, 1]


def test_a_compile_error_is_answered_and_the_worker_goes_on(tmp_path, worker):
    broken, good = Answers(), Answers()
    worker.submit(module(tmp_path, "worker_child_broken", BROKEN), broken.on_start, broken.on_done)
    worker.submit(module(tmp_path, "worker_child_after"), good.on_start, good.on_done)
    result = broken.wait()
    assert not result.ok and "undefined_name" in result.error
    assert "\x1b" not in result.error, "terminal colour codes in the error"
    assert good.wait().ok
    assert worker.starts == 1


def test_close_ends_the_worker_and_the_next_job_starts_another(tmp_path, worker):
    first = Answers()
    worker.submit(module(tmp_path, "worker_close_first"), first.on_start, first.on_done)
    assert first.wait().ok
    process = worker._process
    worker.close()
    assert worker.pid() is None and process.poll() == 0
    second = Answers()
    worker.submit(module(tmp_path, "worker_close_second"), second.on_start, second.on_done)
    assert second.wait().ok
    assert worker.starts == 2


def test_a_dead_workers_jobs_fail_and_only_its_own(tmp_path, worker, monkeypatch):
    """A job sent to the new worker before the dead one's reader thread has caught up is the new worker's: it must
    not be failed with the dead one's (its answer would then be dropped)."""
    readers: list[threading.Thread] = []

    def thread(*args, **kwargs):  # the first reader thread is held back, as a busy machine might
        real = threading.Thread(*args, **kwargs)
        if readers:
            return real
        readers.append(real)
        return SimpleNamespace(start=lambda: None)

    monkeypatch.setattr(worker_module, "threading", SimpleNamespace(Thread=thread))
    orphan, fresh = Answers(), Answers()
    worker.submit(module(tmp_path, "worker_dead_orphan"), orphan.on_start, orphan.on_done)
    dead = worker._process
    dead.kill()
    dead.wait()
    worker.submit(module(tmp_path, "worker_dead_fresh"), fresh.on_start, fresh.on_done)  # a new worker
    assert worker.starts == 2 and worker._process is not dead
    readers[0].start()  # the dead worker's reader catches up now
    result = orphan.wait()
    assert not result.ok and "compile worker process exited (code -9)" in result.error
    result = fresh.wait()
    assert result.ok, f"the new worker's job was failed by the dead worker's reader: {result.error}"
    assert fresh.started.is_set()


def test_compile_worker_is_one_handle_per_process():
    assert compile_worker() is compile_worker()

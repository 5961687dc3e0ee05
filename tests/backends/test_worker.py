"""The compile worker: its line protocol (``serve``, in this process), and ``CompileWorker``, the main process's
handle on the child process (a fresh one per test here, not the process-wide ``compile_worker()``): jobs are
compiled into Numba's disk cache and loaded here without compiling, failures are answered, a job whose worker
died or stopped is retried once on a new worker, the same job in flight is compiled once, and the worker process
is isolated: nothing imported from the working folder, Ctrl-C ignored, its files private, its log never a link.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from nbdiff.backends import cache, numba_loading
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
# A module that does something to the worker importing it: once (while the flag file is missing), or every time.
ONCE = "import os, signal\nif not os.path.exists({flag!r}):\n    open({flag!r}, 'w').close()\n    {act}\n"
ALWAYS = "import os, signal\n{act}\n"
KILL = "os.kill(os.getpid(), signal.SIGKILL)"
STOP = "os.kill(os.getpid(), signal.SIGSTOP)"


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
def worker(tmp_path):
    handle = CompileWorker(tmp_path / "worker")
    yield handle
    handle.close()


def acting(directory: Path, name: str, act: str, once: bool) -> CompileJob:
    """A job whose module does ``act`` to the worker importing it (the first time only, with ``once``)."""
    flag = str(directory / f"{name}.flag")
    prefix = (ONCE if once else ALWAYS).format(flag=flag, act=act)
    return module(directory, name, prefix + MODULE)


def submit(worker: CompileWorker, job: CompileJob, timeout: float | None = None) -> Answers:
    answers = Answers()
    worker.submit(job, answers.on_start, answers.on_done, timeout=timeout)
    return answers


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
    kernel = numba_loading.load_compiled(Path(job.path), job.name, job.signatures)
    out = np.empty(4)
    kernel(4, 0.5, out)
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0, 1.5])
    with pytest.raises(TypeError):  # no other signature was loaded, and this process compiles nothing
        kernel(4, np.float32(0.5), np.empty(4, dtype=np.float32))


def test_a_module_not_compiled_is_a_cache_miss(tmp_path):
    job = module(tmp_path, "worker_never_compiled")
    with pytest.raises(cache.CacheMiss, match="not in Numba's cache"):
        numba_loading.load_compiled(Path(job.path), job.name, job.signatures)


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
    process = worker._process.popen
    worker.close()
    assert worker.pid() is None and process.poll() == 0
    second = Answers()
    worker.submit(module(tmp_path, "worker_close_second"), second.on_start, second.on_done)
    assert second.wait().ok
    assert worker.starts == 2


def test_a_job_whose_worker_dies_is_retried_once_on_a_new_worker(tmp_path, worker):
    result = submit(worker, acting(tmp_path, "worker_dies_once", KILL, once=True)).wait()
    assert result.ok, result.error
    assert worker.starts == 2


def test_a_job_that_kills_every_worker_fails_after_one_retry_and_the_next_job_compiles(tmp_path, worker):
    result = submit(worker, acting(tmp_path, "worker_dies_always", KILL, once=False)).wait()
    assert not result.ok
    assert "compile worker process exited (code -9)" in result.error and "retried once" in result.error
    assert worker.starts == 2
    assert submit(worker, module(tmp_path, "worker_after_deaths")).wait().ok
    assert worker.starts == 3


@pytest.mark.slow
def test_a_stopped_worker_is_killed_after_the_timeout_and_the_job_retried(tmp_path, worker):
    stopped = acting(tmp_path, "worker_stops_once", STOP, once=True)
    result = submit(worker, stopped, timeout=6.0).wait()  # the retry compiles well within it (~0.5 s unloaded)
    assert result.ok, result.error
    assert worker.starts == 2


def test_a_job_timing_out_twice_fails_naming_the_timeout(tmp_path, worker):
    result = submit(worker, acting(tmp_path, "worker_stops_always", STOP, once=False), timeout=0.5).wait()
    assert not result.ok
    assert "timed out after 0.5 s" in result.error and "retried once" in result.error
    assert worker.starts == 2


def test_submissions_of_one_job_in_flight_share_one_compile(tmp_path, worker):
    job = module(tmp_path, "worker_shared")
    others = [
        submit(worker, CompileJob(job.path, job.name, job.function, job.signatures, f"copy {k}")) for k in range(5)
    ]
    results = [answers.wait() for answers in others]
    assert all(result.ok for result in results)
    assert all(answers.started.is_set() for answers in others)
    assert len({id(result) for result in results}) == 1, "the job was compiled more than once"
    assert worker._next_id == 1, "more than one job was sent to the worker"


def test_many_jobs_at_once_are_sent_by_one_writer_thread(tmp_path, worker):
    """Many submissions at once never block the submitting thread and never add a thread per job (the deadlock
    of a submitter holding the lock while blocked writing to the worker's full input)."""
    before = threading.active_count()
    jobs = [module(tmp_path, f"worker_many_{k}", MODULE.replace("scale * i", f"scale * i + {k}")) for k in range(40)]
    answers = [submit(worker, job) for job in jobs]
    assert threading.active_count() <= before + 3  # the writer, the callbacks, the reader
    assert all(a.wait().ok for a in answers)
    assert threading.active_count() <= before + 3
    assert worker.starts == 1


def test_the_worker_ignores_the_users_interrupt(tmp_path, worker):
    assert submit(worker, module(tmp_path, "worker_before_interrupt")).wait().ok
    process = worker._process.popen
    os.kill(process.pid, signal.SIGINT)  # as Ctrl-C sends it to the process group
    assert submit(worker, module(tmp_path, "worker_after_interrupt")).wait().ok
    assert process.poll() is None and worker.starts == 1
    assert os.getpgid(process.pid) != os.getpgid(0), "the worker is in the user's process group"


def test_numba_cache_files_are_private_whatever_the_umask(tmp_path, worker):
    previous = os.umask(0)
    try:
        result = submit(worker, module(tmp_path, "worker_umask")).wait()
    finally:
        os.umask(previous)
    assert result.ok, result.error
    files = [p for p in (tmp_path / "__pycache__").iterdir() if p.suffix in (".nbi", ".nbc")]
    assert {p.suffix for p in files} == {".nbi", ".nbc"}
    for path in [*files, tmp_path / "worker" / "worker.log"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path.name} is {oct(path.stat().st_mode)}"


def test_compile_worker_is_one_handle_per_process():
    assert compile_worker() is compile_worker()

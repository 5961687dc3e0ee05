"""The compile worker: one long-lived child process that compiles kernel modules into Numba's disk cache.

Compiling in a thread of the notebook's process would hold the GIL for up to seconds (DESIGN section 5 measured
stalls of 156 ms), so the main process only *loads* compiled kernels (milliseconds, ``cache.load_compiled``) and
this worker compiles them. The worker is started lazily by the first ``submit`` (``python -m
nbdiff.backends.worker``, a fresh interpreter: nothing of the notebook's state is inherited), compiles one job at
a time, and exits when its standard input closes, so it never outlives the process that started it.

The protocol is one JSON object per line. The main process writes a job ``{"id", "path", "name", "function",
"signatures"}``; the worker answers ``{"id", "event": "start"}`` when it begins and ``{"id", "event": "done", "ok",
"seconds", "error"}`` when it has compiled (and saved) every signature, or failed. If the worker dies (a crash, a
kill), every job it had is answered with a failure naming its exit code, and the next ``submit`` starts a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import IO, Callable

from nbdiff.backends import cache

WORKER_NICENESS = 10  # how much lower the worker's scheduling priority is than the notebook's


@dataclass(frozen=True)
class CompileJob:
    """Compile ``function`` of the module ``name`` at ``path`` for each of ``signatures``; ``label`` is for logs."""

    path: str
    name: str
    function: str
    signatures: tuple[str, ...]
    label: str = ""


@dataclass(frozen=True)
class CompileResult:
    """What became of one job: compiled and saved (``ok``), or the error; seconds spent in the worker."""

    ok: bool
    seconds: float
    error: str = ""


@dataclass
class _Pending:
    job: CompileJob
    on_start: Callable[[], None]
    on_done: Callable[[CompileResult], None]
    process: subprocess.Popen | None = None  # the worker process the job was sent to


class CompileWorker:
    """The main process's handle on the worker process: submit jobs, get callbacks from a reader thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self.starts = 0  # how many worker processes this handle has started (a crash makes a new one)

    # -- the main process's side -------------------------------------------------------------------------------
    def submit(
        self,
        job: CompileJob,
        on_start: Callable[[], None] = lambda: None,
        on_done: Callable[[CompileResult], None] = lambda result: None,
    ) -> None:
        """Queue ``job``; ``on_start()`` and ``on_done(result)`` are called from the reader thread."""
        with self._lock:
            process = self._running_process()
            job_id = self._next_id
            self._next_id += 1
            self._pending[job_id] = _Pending(job, on_start, on_done, process)
            message = json.dumps({"id": job_id, **asdict(job)}) + "\n"
            try:
                process.stdin.write(message)  # type: ignore[union-attr]
                process.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError, ValueError):
                pass  # the process died: its reader thread answers every pending job, this one included
        # Jobs are answered outside the lock, by the reader thread.

    def pid(self) -> int | None:
        """The worker process's id (None before the first job); for tests that kill it."""
        with self._lock:
            return None if self._process is None else self._process.pid

    def close(self) -> None:
        """Stop the worker (closing its input ends it); pending jobs are answered as failed."""
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            process.stdin.close()  # type: ignore[union-attr]
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _running_process(self) -> subprocess.Popen:
        """The live worker process, started now if there is none (called with the lock held)."""
        if self._process is not None and self._process.poll() is None:
            return self._process
        log_path = cache.cache_directory() / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "nbdiff.backends.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                env=_worker_environment(),
            )
        self._process = process
        self.starts += 1
        threading.Thread(target=self._read, args=(process,), name="nbdiff compile worker reader", daemon=True).start()
        return process

    def _read(self, process: subprocess.Popen) -> None:
        """Dispatch the worker's answers; when its output ends, fail whatever it had not answered."""
        for line in process.stdout:  # type: ignore[union-attr]
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout): ignore it
            with self._lock:
                pending = self._pending.get(message.get("id"))
                if pending is not None and message.get("event") == "done":
                    del self._pending[message["id"]]
            if pending is None:
                continue
            _call_safely(pending, message)
        code = process.wait()
        with self._lock:  # only this process's jobs: a new worker may already have others
            orphaned = [job_id for job_id, pending in self._pending.items() if pending.process is process]
            orphans = [self._pending.pop(job_id) for job_id in orphaned]
            if self._process is process:
                self._process = None
        reason = f"the compile worker process exited (code {code}) before finishing"
        for pending in orphans:
            _call_safely(pending, {"event": "done", "ok": False, "seconds": 0.0, "error": reason})


def _call_safely(pending: _Pending, message: dict) -> None:
    """Run a job's callback; a callback's bug must not kill the reader thread (the other jobs need it)."""
    try:
        if message.get("event") == "start":
            pending.on_start()
        elif message.get("event") == "done":
            seconds, error = float(message.get("seconds", 0.0)), message.get("error", "")
            pending.on_done(CompileResult(bool(message.get("ok")), seconds, error))
    except Exception:
        traceback.print_exc()


def _worker_environment() -> dict[str, str]:
    """The child's environment: this one, with nbdiff importable from wherever this process found it."""
    environment = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = package_root if not path else package_root + os.pathsep + path
    environment.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")  # no terminal colours in f.status
    return environment


_worker: CompileWorker | None = None
_worker_lock = threading.Lock()


def compile_worker() -> CompileWorker:
    """The process-wide compile worker handle (its process starts with the first job)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = CompileWorker()
            atexit.register(_worker.close)
        return _worker


# ---------------------------------------------------------------------------------------------------------------
# The worker process's side
# ---------------------------------------------------------------------------------------------------------------
def compile_job(job: CompileJob) -> CompileResult:
    """Compile every signature of ``job`` into Numba's disk cache and record them in the module's marker."""
    start = perf_counter()
    try:
        module = cache.import_module_from(Path(job.path), job.name)
        dispatcher = getattr(module, job.function)
        for signature in job.signatures:
            dispatcher.compile(cache.cache_key(signature))
        cache.mark_compiled(Path(job.path), job.signatures)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".strip()
        return CompileResult(False, perf_counter() - start, _shorten(message))
    return CompileResult(True, perf_counter() - start)


def _shorten(message: str, limit: int = 2000) -> str:
    """Numba's typing errors can run to pages: keep the start, which says what failed."""
    return message if len(message) <= limit else message[:limit] + " ..."


def serve(requests: IO[str], answers: IO[str]) -> None:
    """Answer jobs from ``requests`` until it closes."""
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        job_id = request.pop("id")
        request["signatures"] = tuple(request["signatures"])
        _answer(answers, {"id": job_id, "event": "start"})
        result = compile_job(CompileJob(**request))
        _answer(answers, {"id": job_id, "event": "done", **asdict(result)})


def _answer(answers: IO[str], message: dict) -> None:
    answers.write(json.dumps(message) + "\n")
    answers.flush()


def main() -> None:
    """The worker process: the protocol on stdin/stdout; anything else printed goes to stderr (the log)."""
    answers = sys.stdout
    sys.stdout = sys.stderr  # a library printing must not corrupt the protocol
    if hasattr(os, "nice"):
        os.nice(WORKER_NICENESS)  # the user's process wins a contended core; an idle machine compiles at full speed
    import numba  # noqa: F401  (imported once, before the first job, so the first job's time is compile time)

    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()

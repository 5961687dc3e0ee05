"""The compile worker: one long-lived child process that compiles kernel modules into Numba's disk cache.

Compiling in a thread of the notebook's process would hold the GIL for up to seconds (DESIGN section 5 measured
stalls of 156 ms), so the main process only *loads* compiled kernels (milliseconds, ``numba_loading.load_compiled``)
and this worker compiles them. The worker is started lazily by the first job, as a fresh interpreter in isolated
mode (``python -I``: neither the working folder nor ``PYTHON*`` variables reach its ``sys.path``; nbdiff's package
root and the main process's own import path, less its working folder, are passed explicitly), in a session of its
own with SIGINT ignored (Ctrl-C and Jupyter's "interrupt kernel" signal the user's process group, not the compiler),
its working folder the cache folder and its umask 077 (Numba's cache files are the user's alone). It compiles one
job at a time and exits when its standard input closes, so it never outlives the process that started it.

The protocol is one JSON object per line. The worker says ``{"event": "ready"}`` once Numba is imported; the main
process writes a job ``{"id", "path", "name", "function", "signatures"}``; the worker answers ``{"id", "event":
"start"}`` when it begins and ``{"id", "event": "done", "ok", "seconds", "error"}`` when it has compiled (and saved)
every signature, or failed.

The main process's side (``CompileWorker``) is a handful of threads whatever the number of jobs, and none of them
holds a lock across blocking I/O: ``submit`` only queues (a job already in flight for the same module and
signatures gets the new callbacks attached instead); one *writer* thread sends the jobs one at a time and waits
for each answer up to the ``compile_timeout`` option; one *reader* thread per worker process only drains its
answers; one *callback* thread runs the callbacks in order. A job whose worker died (a crash, a kill) or timed out
(the worker is then killed: a stopped or hung compiler) is retried once on a new worker, then answered as failed.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import IO, Any, Callable

from nbdiff.backends import cache, numba_loading
from nbdiff.config import options

WORKER_NICENESS = 10  # how much lower the worker's scheduling priority is than the notebook's
ATTEMPTS = 2  # a job whose worker died or timed out is retried once on a new worker
CLOSE_GRACE = 5.0  # seconds ``close`` lets the worker finish its job before killing it
START_TIMEOUT = 60.0  # seconds a new worker has at least to import Numba and say "ready" (a cold disk is slow)
_BOOT = "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); from nbdiff.backends.worker import main; main()"


@dataclass(frozen=True)
class CompileJob:
    """Compile ``function`` of the module ``name`` at ``path`` for each of ``signatures``; ``label`` is for logs."""

    path: str
    name: str
    function: str
    signatures: tuple[str, ...]
    label: str = ""
    compiler: str = ""  # "module:function" compiling the job in the worker (a target's own); "": Numba on the CPU


@dataclass(frozen=True)
class CompileResult:
    """What became of one job: compiled and saved (``ok``), or the error; seconds spent in the worker."""

    ok: bool
    seconds: float
    error: str = ""


class WorkerStartError(Exception):
    """The worker process could not be started (its log is a symbolic link, it died or hung while starting)."""


@dataclass(eq=False)
class _Process:
    """One worker process and what its reader thread learnt of it."""

    popen: subprocess.Popen
    ready: threading.Event = field(default_factory=threading.Event)  # set on its "ready", or when it ends
    exit_code: int | None = None  # set by the reader thread once the process has ended


@dataclass(eq=False)
class _Entry:
    """One compile in flight: the job, everyone waiting for it (submissions of the same job share it), and the
    state of its current attempt."""

    job: CompileJob
    timeout: float
    generation: int  # the handle's generation when submitted: ``close`` fails the jobs of earlier ones
    starts: list[Callable[[], None]]
    dones: list[Callable[[CompileResult], None]]
    started: bool = False
    process: _Process | None = None  # the worker process the current attempt was sent to
    result: CompileResult | None = None  # the worker's answer
    lost: str = ""  # why the current attempt's worker ended without answering
    answered: threading.Event = field(default_factory=threading.Event)  # the current attempt has an outcome

    @property
    def key(self) -> tuple:
        return _key(self.job)


def _key(job: CompileJob) -> tuple:
    """What makes two jobs the same compile (the label is only for logs)."""
    return (job.path, job.name, job.function, tuple(job.signatures), job.compiler)


class BackgroundThread:
    """One daemon thread, started when first needed, running queued calls in order (the callbacks' thread)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)`` (never blocks)."""
        with self._lock:
            self._calls.put((function, args))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            function, args = self._calls.get()
            try:
                function(*args)
            except Exception:  # a callback's bug must not stop the others
                traceback.print_exc()


class CompileWorker:
    """The main process's handle on the worker process: submit jobs, get callbacks from one callback thread.

    Threads: the writer (started by the first job, ended by ``close``), one reader per worker process alive, and
    the process-wide callback thread. ``_lock`` guards the fields below and is never held across blocking I/O."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder  # the worker's working folder, holding its log (None: the cache folder when it starts)
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # _Entry to send, or _STOP
        self._in_flight: dict[tuple, _Entry] = {}  # submitted and not yet answered, by ``_key``
        self._sent: dict[int, _Entry] = {}  # by the message id of the attempt sent to the worker
        self._process: _Process | None = None
        self._writer: threading.Thread | None = None
        self._next_id = 0
        self._generation = 0
        self.starts = 0  # how many worker processes this handle has started (a crash makes a new one)

    # -- the main process's side -------------------------------------------------------------------------------
    def submit(
        self,
        job: CompileJob,
        on_start: Callable[[], None] = lambda: None,
        on_done: Callable[[CompileResult], None] = lambda result: None,
        timeout: float | None = None,
    ) -> None:
        """Queue ``job`` (never blocks); ``on_start()`` and ``on_done(result)`` are called from the callback thread.
        ``timeout``: seconds an attempt may take once sent (default: the ``compile_timeout`` option)."""
        with self._lock:
            entry = self._in_flight.get(_key(job))
            if entry is not None and entry.generation == self._generation:  # the same compile is under way: share it
                entry.starts.append(on_start)
                entry.dones.append(on_done)
                if entry.started:
                    _callbacks.call(on_start)
                return
            seconds = options().compile_timeout if timeout is None else timeout
            entry = _Entry(job, float(seconds), self._generation, [on_start], [on_done])
            self._in_flight[entry.key] = entry
            self._jobs.put(entry)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="nbdiff compile writer", daemon=True)
                self._writer.start()

    def pid(self) -> int | None:
        """The worker process's id (None before the first job); for tests that kill it."""
        with self._lock:
            return None if self._process is None else self._process.popen.pid

    def close(self) -> None:
        """Stop the worker (closing its input ends it) and the writer; jobs not answered yet are answered as failed.
        A later ``submit`` starts them again."""
        with self._lock:
            self._generation += 1
            process, self._process = self._process, None
            if self._writer is not None:
                self._jobs.put(_STOP)
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            process.popen.stdin.close()  # type: ignore[union-attr]
        try:
            process.popen.wait(timeout=CLOSE_GRACE)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()

    # -- the writer thread -----------------------------------------------------------------------------------------
    def _write(self) -> None:
        """Send the queued jobs one at a time, each with its retry, until ``close`` (and the queue is empty)."""
        while True:
            entry = self._jobs.get()
            if entry is _STOP:
                with self._lock:
                    if self._jobs.empty():
                        self._writer = None
                        return
                    self._jobs.put(_STOP)  # after the jobs queued meanwhile (failed if the close was before them)
                continue
            self._serve(entry)

    def _serve(self, entry: _Entry) -> None:
        """Run ``entry``'s attempts until one is answered or ``ATTEMPTS`` have failed."""
        reasons: list[str] = []
        while len(reasons) < ATTEMPTS:
            with self._lock:
                closed = entry.generation != self._generation
            if closed:
                self._fail(entry, "the compile worker was closed before the job finished")
                return
            reason = self._attempt(entry)
            if reason is None:
                return
            reasons.append(reason)
        first, last = reasons[0], reasons[-1]
        earlier = "" if first == last else f"; the first try: {first}"
        self._fail(entry, f"{last} (retried once on a new worker{earlier})")

    def _attempt(self, entry: _Entry) -> str | None:
        """Send ``entry`` to a live worker and wait for its answer; None once answered, else why it was not."""
        try:
            process = self._live_process(entry.timeout)
        except WorkerStartError as error:
            return str(error)
        with self._lock:
            job_id, self._next_id = self._next_id, self._next_id + 1
            entry.process, entry.lost = process, ""
            entry.answered.clear()
            self._sent[job_id] = entry
            died = process.exit_code  # the reader may have seen the process end before the job was registered
        if died is not None:
            with self._lock:
                self._sent.pop(job_id, None)
            return f"the compile worker process exited (code {died}) before finishing"
        message = json.dumps({"id": job_id, **asdict(entry.job)}) + "\n"
        try:  # one line into an empty pipe: it does not block
            process.popen.stdin.write(message)  # type: ignore[union-attr]
            process.popen.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass  # the process died: its reader says so
        entry.answered.wait(entry.timeout)
        with self._lock:
            self._sent.pop(job_id, None)  # from here on, a late answer is ignored
            if entry.result is not None:
                return None
            lost = entry.lost
        if lost:
            return lost
        self._discard(process)
        return f"the compile worker timed out after {entry.timeout:g} s (the compile_timeout option) and was killed"

    def _live_process(self, timeout: float) -> _Process:
        """The running worker process, started now (and waited for, up to ``timeout``) if there is none."""
        with self._lock:
            process = self._process
        if process is not None and process.popen.poll() is None:
            return process
        process = self._start_process(timeout)
        with self._lock:
            self._process = process
        return process

    def _start_process(self, timeout: float) -> _Process:
        """A new worker process, once it has said "ready" (within ``timeout`` seconds, or ``START_TIMEOUT`` if that
        is longer: the job's timeout is for compiling); ``WorkerStartError`` when it cannot start."""
        timeout = max(timeout, START_TIMEOUT)
        try:  # the worker's folder is made private, or checked, before anything is written or run there
            root = cache.cache_root(Path(self.folder) if self.folder is not None else None)
        except (cache.CacheRefused, OSError) as error:
            raise WorkerStartError(f"the compile worker's folder cannot be used: {error}") from None
        log_path = root / "worker.log"
        log = open_log(log_path)
        try:
            popen = subprocess.Popen(
                worker_command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
                env=_worker_environment(),
                cwd=root,  # a folder of ours: the user's working folder may hold anything
                **_own_session(),
            )
        except OSError as error:
            raise WorkerStartError(f"the compile worker could not be started: {error}") from None
        finally:
            os.close(log)  # the child has its own descriptor
        process = _Process(popen)
        with self._lock:
            self.starts += 1
        threading.Thread(target=self._read, args=(process,), name="nbdiff compile reader", daemon=True).start()
        if not process.ready.wait(timeout):
            self._discard(process)
            raise WorkerStartError(f"the compile worker did not start within {timeout:g} s (see {log_path})")
        if process.exit_code is not None:
            code = process.exit_code
            raise WorkerStartError(f"the compile worker process exited (code {code}) while starting (see {log_path})")
        return process

    def _discard(self, process: _Process) -> None:
        """Kill ``process`` (stopped or hung) and forget it; its reader then fails whatever it had."""
        with self._lock:
            if self._process is process:
                self._process = None
        with contextlib.suppress(OSError):
            process.popen.kill()
        process.popen.wait()

    def _fail(self, entry: _Entry, reason: str) -> None:
        """Answer everyone waiting for ``entry`` with a failure."""
        with self._lock:
            self._finish(entry, CompileResult(False, 0.0, reason))

    def _finish(self, entry: _Entry, result: CompileResult) -> None:
        """Record ``entry``'s result and queue its callbacks (with the lock held: a submission of the same job
        either joins before this or starts a new compile after)."""
        entry.result = result
        if self._in_flight.get(entry.key) is entry:
            del self._in_flight[entry.key]
        for on_done in entry.dones:
            _callbacks.call(on_done, result)

    # -- the reader threads --------------------------------------------------------------------------------------
    def _read(self, process: _Process) -> None:
        """Dispatch one worker's answers; when its output ends, say so to the attempt it had."""
        for line in process.popen.stdout:  # type: ignore[union-attr]
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout): ignore it
            if isinstance(message, dict):
                self._dispatch(process, message)
        code = process.popen.wait()
        with self._lock:
            process.exit_code = code
            if self._process is process:
                self._process = None
            orphans = [entry for entry in self._sent.values() if entry.process is process]
            for entry in orphans:
                entry.lost = f"the compile worker process exited (code {code}) before finishing"
        process.ready.set()
        for entry in orphans:
            entry.answered.set()

    def _dispatch(self, process: _Process, message: dict) -> None:
        """One answer of ``process``: "ready", or a job's "start" or "done"."""
        event = message.get("event")
        if event == "ready":
            process.ready.set()
            return
        with self._lock:
            entry = self._sent.get(message.get("id"))  # type: ignore[arg-type]
            if entry is None or entry.process is not process:
                return
            if event == "start" and not entry.started:
                entry.started = True
                for on_start in entry.starts:
                    _callbacks.call(on_start)
            elif event == "done":
                seconds, error = float(message.get("seconds", 0.0)), str(message.get("error", ""))
                self._finish(entry, CompileResult(bool(message.get("ok")), seconds, error))
        if event == "done":
            entry.answered.set()


_STOP = object()  # tells the writer thread to end
_callbacks = BackgroundThread("nbdiff compile callbacks")  # every handle's callbacks, in order, on one thread


def open_log(path: Path) -> int:
    """A descriptor appending to the worker's log ``path``, created 0600; a symbolic link there is refused, never
    followed (``WorkerStartError``: someone else may have put it there to make nbdiff write through it)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise WorkerStartError(
                f"the compile worker's log {path} is a symbolic link: nbdiff does not follow it (remove it)"
            ) from None
        raise WorkerStartError(f"the compile worker's log {path} cannot be opened: {error}") from None
    if hasattr(os, "fchmod"):
        with contextlib.suppress(OSError):
            os.fchmod(descriptor, 0o600)  # a log made by an older nbdiff under a looser umask
    return descriptor


def worker_command() -> list[str]:
    """How the worker starts: isolated mode (no working folder, no ``PYTHON*`` variables), its import path given."""
    return [sys.executable, "-I", "-c", _BOOT, json.dumps(worker_path())]


def worker_path() -> list[str]:
    """The worker's import path: nbdiff's package root, then this process's ``sys.path`` without its working
    folder ('' or relative entries, or the folder itself): numba and its dependencies are found where they were
    found here, and nothing a stranger may have put in the working folder is."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        here = os.path.realpath(os.getcwd())
    except OSError:  # the working folder was removed
        here = None
    path = [package_root]
    for entry in sys.path:
        if not isinstance(entry, str) or not os.path.isabs(entry) or os.path.realpath(entry) == here:
            continue
        if entry not in path:
            path.append(entry)
    return path


def _own_session() -> dict[str, Any]:
    """Popen's arguments that put the worker outside the user's process group (Ctrl-C, "interrupt kernel")."""
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def _worker_environment() -> dict[str, str]:
    """The child's environment: this one (``python -I`` ignores its ``PYTHON*`` variables), without colours."""
    environment = dict(os.environ)
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


def _forget_worker() -> None:
    """In a forked child: the parent's worker, pipes and threads are not this process's; the next job starts anew."""
    global _worker
    _worker = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker)


# ---------------------------------------------------------------------------------------------------------------
# The worker process's side
# ---------------------------------------------------------------------------------------------------------------
def compile_job(job: CompileJob) -> CompileResult:
    """Compile every signature of ``job`` into Numba's disk cache and record them in the module's marker."""
    start = perf_counter()
    try:
        try:
            _compile_signatures(job)
        except Exception as exc:
            if not _damaged_cache_entry(exc):
                raise
            # Numba met a damaged cache file of this module before compiling: set its files aside, compile afresh
            dispatcher = getattr(cache.import_module_from(Path(job.path), job.name), job.function)
            done = numba_loading.quarantine(Path(job.path), dispatcher._cache)
            print(f"nbdiff worker: {job.name}: Numba's cache failed to load ({exc!r}); {done}", file=sys.stderr)
            _compile_signatures(job)
        cache.mark_compiled(Path(job.path), job.signatures)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".strip()
        return CompileResult(False, perf_counter() - start, _shorten(message))
    return CompileResult(True, perf_counter() - start)


def _compile_signatures(job: CompileJob) -> None:
    """Compile (or load from Numba's cache) every signature of ``job``'s function, as imported now: by the target's
    compiler when the job names one (``module:function``, called with the job), else as a Numba CPU dispatcher."""
    if job.compiler:
        module, _, attribute = job.compiler.partition(":")
        getattr(importlib.import_module(module), attribute)(job)
        return
    dispatcher = getattr(cache.import_module_from(Path(job.path), job.name), job.function)
    for signature in job.signatures:
        dispatcher.compile(numba_loading.cache_key(signature))


def _damaged_cache_entry(error: Exception) -> bool:
    """Whether ``error`` came from reading a damaged Numba cache file (unpickling, a truncated or foreign file),
    not from compiling the kernel (Numba's own errors: typing, lowering), which must be reported as it is."""
    from numba.core.errors import NumbaError

    if isinstance(error, (NumbaError, cache.CacheRefused, SyntaxError, ImportError)):
        return False
    return any("caching" in (frame.f_code.co_filename or "") for frame, _ in traceback.walk_tb(error.__traceback__))


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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the user's Ctrl-C is for the notebook, not its compiler
    os.umask(0o077)  # Numba's cache files (pickles it loads back) are the user's alone, whatever the caller's umask
    answers = sys.stdout
    sys.stdout = sys.stderr  # a library printing must not corrupt the protocol
    if hasattr(os, "nice"):
        os.nice(WORKER_NICENESS)  # the user's process wins a contended core; an idle machine compiles at full speed
    import numba  # noqa: F401  (imported once, before the first job, so the first job's time is compile time)

    _answer(answers, {"event": "ready"})
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()

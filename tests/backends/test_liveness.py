"""The compile pipeline's liveness: a burst of functions all compile with a handful of threads, the user's
interrupt (SIGINT to the process group) does not reach the compiler, and a stopped worker falls back after the
``compile_timeout`` option instead of blocking ``f.wait()`` for ever.

The burst and the interrupt run in a fresh process (a fresh cache, a thread count of its own, a process group of
its own); the timeout runs here with a fresh ``CompileWorker`` in place of the process-wide one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import worker as worker_module
from nbdiff.backends.worker import CompileWorker
from nbdiff.config import _seconds, option_context
from nbdiff.function import UNCHECKED
from tests.backends.cpu_support import WAIT, chain, fresh_bits, states

ROOT = Path(__file__).resolve().parents[2]

BURST = """
import json, sys, threading
from time import perf_counter
import nbdiff as nd
from nbdiff.function import UNCHECKED
from tests.backends.cpu_support import chain

count, structures = int(sys.argv[1]), int(sys.argv[2])
baseline = peak = threading.active_count()
start = perf_counter()
x = nd.vector("x", shape=(4,))
functions = []
for k in range(count):  # structures differ by their sin/cos chain; the constant is an argument, not structure
    functions.append(nd.function([x], chain(x * (k + 1.5), (1 << 6) | k % structures), backend="cpu"))
    peak = max(peak, threading.active_count())
created = perf_counter() - start
statuses = []
for f in functions:
    statuses.append(f.wait(300 - (perf_counter() - start)))
    peak = max(peak, threading.active_count())
report = {"created": created, "seconds": perf_counter() - start, "baseline": baseline, "peak": peak}
print(json.dumps({**report, "statuses": sorted(set(statuses)), "compiled": statuses.count(UNCHECKED)}))
"""

INTERRUPTED = """
import json, signal, sys, threading
import numpy as np
signal.signal(signal.SIGINT, lambda signum, frame: None)  # this process survives its group's SIGINT; its worker?
import nbdiff as nd
from tests.backends.cpu_support import chain

x = nd.vector("x")  # unknown length: a parallel=True variant too, seconds of compiling to interrupt
compiling = threading.Event()
functions = [nd.function([x], chain(x, int(bits)), backend="cpu") for bits in sys.argv[1:]]
for f in functions:
    f.subscribe(lambda event: compiling.set() if event.state == "compiling" else None)
    if "compiling" in [e.state for e in f.events]:
        compiling.set()
print("compiling" if compiling.wait(120) else "never compiling", flush=True)
sys.stdin.readline()  # the test has sent SIGINT to this process group
statuses = [f.wait(300) for f in functions]
for f in functions:
    f(np.linspace(-1.0, 1.0, 7))  # the first call checks the compiled kernels against the interpreter
print(json.dumps(statuses + [f.status for f in functions]), flush=True)
"""


def fresh_process(tmp_path: Path) -> dict:
    """Popen's arguments for a fresh interpreter running the scenarios: this checkout, an empty cache."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "NBDIFF_CACHE_DIR": str(tmp_path / "cache")}
    return {"cwd": ROOT, "env": environment, "text": True}


@pytest.mark.slow
def test_a_burst_of_two_thousand_functions_all_compile_with_a_handful_of_threads(tmp_path):
    """Once 500 functions at once deadlocked the pipeline (a submitting thread held the worker's lock while blocked
    writing to its full input; the reader waited for that lock) and each function had a thread of its own."""
    done = subprocess.run(
        [sys.executable, "-c", BURST, "2000", "20"], capture_output=True, timeout=400, **fresh_process(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [UNCHECKED] and report["compiled"] == 2000, report
    assert report["peak"] <= report["baseline"] + 6, f"{report['peak'] - report['baseline']} threads more: {report}"
    assert report["seconds"] < 240, report


def test_the_users_interrupt_to_the_process_group_does_not_stop_compiling(tmp_path):
    """Ctrl-C in a terminal and Jupyter's "interrupt kernel" signal the whole process group: the compile worker
    must survive it (its own session, SIGINT ignored), so every function still compiles."""
    bits = [str(fresh_bits()) for _ in range(3)]
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, *bits],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, whose leader it is
        **fresh_process(tmp_path),
    )
    try:
        assert process.stdout.readline().strip() == "compiling"
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate("go\n", timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    statuses = json.loads(out.strip().splitlines()[-1])
    assert statuses == [UNCHECKED] * 3 + ["compiled"] * 3, statuses


@pytest.fixture
def stopping_worker(tmp_path, monkeypatch):
    """A fresh process-wide compile worker whose every process is stopped (SIGSTOP) as soon as it is ready."""
    handle = CompileWorker(tmp_path / "worker")
    start = handle._start_process

    def started_then_stopped(timeout: float):
        process = start(timeout)
        os.kill(process.popen.pid, signal.SIGSTOP)
        return process

    monkeypatch.setattr(handle, "_start_process", started_then_stopped)
    monkeypatch.setattr(worker_module, "_worker", handle)
    yield handle
    handle.close()


def test_a_stopped_worker_falls_back_after_the_compile_timeout(tmp_path, stopping_worker):
    x = nd.vector("x", shape=(4,))
    y = chain(x, fresh_bits())
    with option_context(compile_timeout=0.5, cache_dir=str(tmp_path / "cache")):
        f = nd.function([x], y, backend="cpu")
    status = f.wait(WAIT)
    assert status.startswith("fallback: kernel k0: compiling failed: "), status
    assert "timed out after 0.5 s" in status and "retried once on a new worker" in status, status
    assert stopping_worker.starts == 4  # the kernel and the whole-plan entry point, each tried on two workers
    assert states(f, "k0") == ["queued", "failed"]
    value = np.linspace(-1.0, 1.0, 4)
    np.testing.assert_allclose(f(value), nd.function([x], y, backend="numpy")(value))
    assert f.backend == "numpy"


def test_the_compile_timeout_option_is_a_positive_number_of_seconds(monkeypatch):
    with option_context(compile_timeout=2) as current:
        assert current.compile_timeout == 2
    for bad in (0, -1, float("inf"), "10", True):
        with pytest.raises(ValueError, match="compile_timeout must be a positive number of seconds"):
            with option_context(compile_timeout=bad):
                pass
    monkeypatch.setenv("NBDIFF_COMPILE_TIMEOUT", "12.5")
    assert _seconds("NBDIFF_COMPILE_TIMEOUT", 600.0) == 12.5
    monkeypatch.setenv("NBDIFF_COMPILE_TIMEOUT", "soon")
    with pytest.warns(UserWarning, match="NBDIFF_COMPILE_TIMEOUT='soon' is not a positive number"):
        assert _seconds("NBDIFF_COMPILE_TIMEOUT", 600.0) == 600.0

"""What the CPU backend does when compiled code is wrong or missing: a kernel that disagrees with the interpreter,
one that does not compile, and a compile worker that dies. In each case the interpreter keeps answering, with
correct values, and ``f.status`` says why, naming a reproducer folder that replays the failure on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cache
from nbdiff.backends.cpu import inject_fault
from nbdiff.backends.worker import compile_worker
from nbdiff.function import UNCHECKED
from nbdiff.runtime.events import ENTRY_POINT, kernel_states
from tests.backends.cpu_support import (
    REPRODUCER_FILES,
    WAIT,
    assert_finished_events,
    call_both,
    chain,
    fresh_bits,
    reproducer_folder,
    states,
)


def array_function(backend: str = "cpu", n: int = 6) -> nd.Function:
    x = nd.vector("x", shape=(n,))
    y = nd.sum(nd.tanh(x) * nd.exp(x))
    return nd.function([x], [y, nd.grad(y, x)], backend=backend)


def scalar_function(backend: str = "cpu") -> nd.Function:
    a, b = nd.scalar("a"), nd.scalar("b")
    y = a * b + nd.sin(a)
    return nd.function([a, b], [y, *nd.grad(y, [a, b])], backend=backend)


def op_function(backend: str = "cpu") -> nd.Function:
    """Picked log-probabilities: one compiled op (log_softmax_take, made by the stability pass), no fused kernel."""
    x = nd.matrix("x", shape=(3, 4))
    labels = nd.matrix("labels", dtype="int64", shape=(3, 1))
    return nd.function([x, labels], nd.take_along_axis(nd.log_softmax(x, axis=1), labels, 1), backend=backend)


OP_ARGS = (np.arange(12.0).reshape(3, 4) / 5, np.array([[0], [3], [-1]]))
MAKERS = {
    "kernel": (array_function, (np.linspace(-1, 1, 6),), "k0"),
    "entry point": (scalar_function, (1.5, 2.0), ENTRY_POINT),
    "op": (op_function, OP_ARGS, "log_softmax_take"),
}


def replay(folder) -> subprocess.CompletedProcess:
    """``python reproduce.py`` in a reproducer folder."""
    assert folder.is_dir(), folder
    for name in REPRODUCER_FILES:
        assert (folder / name).is_file(), f"{name} missing from {folder}"
    return subprocess.run(
        [sys.executable, "reproduce.py"], cwd=folder, capture_output=True, text=True, timeout=120, check=False
    )


def test_inject_fault_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="wrong-values"):
        with inject_fault("segfault"):
            pass


# ---------------------------------------------------------------------------------------------------------------
# A kernel that disagrees with the interpreter
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_wrong_kernel_is_caught_by_the_agreement_check(kind):
    make, args, name = MAKERS[kind]
    with inject_fault("wrong-values"):
        f = make()
    reference = make("numpy")
    assert f.wait(WAIT) == UNCHECKED  # it compiled: only running it shows it wrong
    call_both(f, reference, args, "the agreement check's answer")  # the interpreter's values, not the kernel's
    status = f.status
    assert status.startswith("fallback: "), status
    if kind == "entry point":
        assert "the compiled entry point disagrees with the interpreter" in status, status
    else:
        assert f"kernel {name} disagrees with the interpreter" in status, status
    assert ("output 1" if kind == "op" else "output 0") in status  # an op's fault shifts its last output
    assert f.backend == "numpy"
    for _ in range(2):  # and from now on
        call_both(f, reference, args, "after the fallback")
        assert f.backend == "numpy" and f.status == status
    failed = [e for e in f.events if e.state == "failed"]
    assert len(failed) == 1 and failed[0].kernel == name
    assert "disagrees with the interpreter" in failed[0].reason
    kernel_states(f.events)  # a possible sequence: ready (or cached), then failed

    folder = reproducer_folder(status)
    assert folder.parent == cache.reproducers_directory()
    assert (folder / "expected.npz").is_file()
    readme = (folder / "README.txt").read_text()
    assert "value" in readme and "python reproduce.py" in readme, readme
    done = replay(folder)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISMATCH" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_mismatch_where_no_reproducer_can_be_written_still_falls_back_with_its_reason(tmp_path, kind):
    """A reproducers folder that cannot be used (others may write it) costs the reproducer, never the answer: the
    call returns the interpreter's values and the status says why there is no reproducer."""
    make, args, _ = MAKERS[kind]
    with nd.option_context(cache_dir=str(tmp_path)), inject_fault("wrong-values"):
        f = make()
    reference = make("numpy")
    assert f.wait(WAIT) == UNCHECKED
    folder = tmp_path / "reproducers"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o777)
    call_both(f, reference, args, "the agreement check's answer")
    assert f.status.startswith("fallback: ") and "disagrees with the interpreter" in f.status, f.status
    assert "(no reproducer: CacheRefused: " in f.status, f.status
    assert os.listdir(folder) == []


def test_a_correct_kernel_replays_as_agreeing(tmp_path):
    """A reproducer of a correct kernel (the same module without the fault) exits 0: the script's comparison
    is what makes a wrong kernel exit 1."""
    with inject_fault("wrong-values"):
        f = array_function()
    assert f.wait(WAIT) == UNCHECKED
    f(np.linspace(-1, 1, 6))
    folder = reproducer_folder(f.status)
    text = (folder / "kernel.py").read_text()
    fixed = text.replace(" + 1\n", "\n", 1)
    assert fixed != text
    copy = tmp_path / "fixed"
    copy.mkdir()
    for name in [*REPRODUCER_FILES, "expected.npz"]:
        (copy / name).write_bytes((folder / name).read_bytes())
    (copy / "kernel.py").write_text(fixed)
    done = replay(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("agree")


def test_reproducers_go_to_the_cache_folder_in_force_where_the_function_was_created(tmp_path):
    with nd.option_context(cache_dir=str(tmp_path)):
        with inject_fault("wrong-values"):
            wrong = array_function()
        with inject_fault("compile-error"):
            broken = array_function()
    for f in (wrong, broken):
        f.wait(WAIT)
        f(np.linspace(-1, 1, 6))
        assert f.status.startswith("fallback: "), f.status
        assert reproducer_folder(f.status).parent == cache.reproducers_directory(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# A kernel that does not compile
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_compile_error_falls_back_with_a_reproducer(kind):
    make, args, name = MAKERS[kind]
    with inject_fault("compile-error"):
        f = make()
    reasons: list[str] = []
    f.subscribe(lambda event: reasons.append(event.reason) if event.state == "failed" else None)
    reference = make("numpy")
    status = f.wait(WAIT)
    assert status.startswith("fallback: "), status
    assert f"kernel {name}: compiling failed: " in status
    assert "undefined_name_injected_by_test_hook" in status  # the compile error itself
    assert "\x1b" not in status, "terminal colour codes in the status"
    assert states(f, name) == ["queued", "compiling", "failed"]
    (failed,) = [e for e in f.events if e.state == "failed"]
    assert failed.kernel == name and failed.reason and failed.reason in status
    assert reasons == [failed.reason]  # a subscriber hears it too
    for _ in range(3):
        call_both(f, reference, args, "after the compile error")
        assert f.backend == "numpy" and f.status == status

    folder = reproducer_folder(status)
    assert folder.parent == cache.reproducers_directory()
    done = replay(folder)  # compiles the module's signatures: the same error
    assert done.returncode != 0
    assert "undefined_name_injected_by_test_hook" in done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------------------------
# A compile worker that dies
# ---------------------------------------------------------------------------------------------------------------
def test_a_killed_worker_is_replaced_and_its_function_retried_there():
    """A worker killed while compiling (a crash, the OOM killer) costs one retry on a new worker, not a fallback
    (a job that kills every worker fails after its retry: ``test_worker.py``)."""
    worker = compile_worker()
    x = nd.vector("x")  # unknown length: a parallel=True variant as well, seconds of compiling to interrupt
    y = chain(chain(x, fresh_bits()), fresh_bits())
    killed: list[int] = []
    lock = threading.Lock()

    def kill_on_compiling(event) -> None:  # in the worker's callback thread, as soon as the worker starts
        with lock:
            if event.state == "compiling" and not killed:
                killed.append(worker.pid())
                os.kill(killed[0], signal.SIGKILL)

    starts = worker.starts + (worker.pid() is None)  # the worker processes started once f's jobs are submitted
    f = nd.function([x], [y, nd.grad(nd.sum(y), x)], backend="cpu")
    f.subscribe(kill_on_compiling)
    if "compiling" in states(f):  # the event came before the subscription
        kill_on_compiling(next(e for e in f.events if e.state == "compiling"))
    status = f.wait(WAIT)
    assert killed, f"the worker was never seen compiling: {status}"
    assert status == UNCHECKED, status
    assert_finished_events(f)
    assert worker.starts == starts + 1
    assert worker.pid() not in (None, killed[0])
    reference = nd.function([x], [y, nd.grad(nd.sum(y), x)], backend="numpy")
    for n in (5, 5, 1):
        call_both(f, reference, (np.linspace(-1, 1, n),), "compiled by the new worker")
        assert f.backend == "cpu"

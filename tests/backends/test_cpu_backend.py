"""The compiled CPU backend through ``nd.function``: status and events, the disk cache, options, argument kinds
(scalars, integers, booleans, float32, broadcasting, size-1 inputs, large inputs), and bad input.

A test that must see a cold compile builds a structure no earlier run compiled (``chain(x, fresh_bits())``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from time import perf_counter

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cache, compilation, cpu
from nbdiff.backends.cpu import PROGRAM, plan_units
from nbdiff.errors import BackendError, InputError, ShapeError
from nbdiff.function import UNCHECKED
from nbdiff.runtime.events import ENTRY_POINT
from tests.backends.cpu_support import (
    WAIT,
    as_list,
    assert_agrees,
    assert_finished_events,
    call_both,
    chain,
    fresh_bits,
    states,
)

ROOT = Path(__file__).resolve().parents[2]
COMPILING = re.compile(r"compiling (\d+)/(\d+) kernels")


# ---------------------------------------------------------------------------------------------------------------
# Status and events
# ---------------------------------------------------------------------------------------------------------------
def two_kernel_function(bits: int, backend: str = "cpu") -> nd.Function:
    """Two fused kernels around a matmul (NumPy's), each with a chain of ``bits``: both fresh when ``bits`` is."""
    x = nd.vector("x", shape=(4,))
    a = nd.matrix("A", shape=(3, 4))
    y = chain(nd.tanh(a @ chain(x, bits)), bits)
    return nd.function([x, a], [y, nd.sum(y)], backend=backend)


def test_status_events_and_backend_through_a_cold_compile():
    rng = np.random.default_rng(0)
    args = (rng.normal(size=4), rng.normal(size=(3, 4)))
    bits = fresh_bits()
    seen: list[tuple[str, str, str]] = []
    f = two_kernel_function(bits)
    f.subscribe(lambda event: seen.append((event.kernel, event.state, f.status)))
    reference = two_kernel_function(bits, backend="numpy")
    start = perf_counter()
    before = f.wait(timeout=0.0)
    assert perf_counter() - start < 0.5, "wait(timeout=0.0) did not return promptly"
    assert before.startswith(("interpreting", "compiling")), before
    call_both(f, reference, args, "while compiling")
    assert f.backend == "numpy"  # the interpreter answers until the kernels are loaded

    assert f.wait(WAIT) == "compiled"
    n = len(plan_units(f, False, None))
    assert n == 3, "the matmul should separate two fused kernels (and the whole-plan entry point join them)"
    kernels = sorted({kernel for kernel, _, _ in seen})
    assert len(kernels) == n
    for kernel in kernels:  # a fresh structure: every kernel is compiled by the worker, in this order
        assert states(f, kernel) == ["queued", "compiling", "ready"], kernel
    ready = [e for e in f.events if e.state == "ready"]
    assert all(e.seconds is not None and e.seconds > 0 for e in ready)
    # What a subscriber reads on each event: "compiling i/n kernels", i counting the finished kernels, until the
    # last kernel's event, by which the status is final (backends update the status before emitting).
    *during, last = seen
    assert last[1] == "ready" and last[2] == "compiled", last
    done = []
    for kernel, state, status in during:
        match = COMPILING.fullmatch(status)
        assert match is not None, f"status {status!r} at {kernel} {state}"
        assert int(match.group(2)) == n
        done.append(int(match.group(1)))
    assert done == sorted(done) and done[-1] == n - 1, done
    if len(seen) == len(f.events):  # on a loaded machine the first events may precede ``subscribe``
        assert done[0] == 0, done

    assert f.backend == "numpy"  # nothing compiled has answered yet
    call_both(f, reference, args, "the agreement check")
    assert (f.status, f.backend) == ("compiled", "cpu")
    call_both(f, reference, args, "compiled")
    assert (f.status, f.backend) == ("compiled", "cpu")
    assert repr(f).endswith("[compiled]>")


def test_nothing_to_compile_is_final_at_once():
    x = nd.matrix("x", shape=(3, 4))
    f = nd.function([x], nd.max(x, axis=1), backend="cpu")  # one reduction: NumPy's, no fused kernel
    status = f.wait(WAIT)
    assert status.startswith("interpreting (nothing to compile"), status
    assert f.events == []
    value = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(f(value), value.max(axis=1))
    assert f.backend == "numpy"


def cross_entropy_function(backend: str = "cpu", dtype: str = "float32") -> nd.Function:
    """A classifier's loss and its gradient: the stability pass makes log_softmax_take and its gradient op of it."""
    x = nd.matrix("x", dtype=dtype)
    labels = nd.tensor("labels", dtype="int64", shape=(None, 1))
    loss = -nd.mean(nd.take_along_axis(nd.log_softmax(x, axis=1), labels, 1))
    return nd.function([x, labels], [loss, nd.grad(loss, x)], backend=backend)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ops_with_a_kernel_of_their_own_compile_and_agree(dtype):
    f, reference = cross_entropy_function(dtype=dtype), cross_entropy_function("numpy", dtype)
    units = [unit.name for unit in plan_units(f, False, None)]
    assert {"log_softmax_take", "log_softmax_take_grad"} <= set(units), units
    assert f.wait(WAIT) == UNCHECKED, f.status
    rng = np.random.default_rng(0)
    args = (rng.normal(size=(7, 5)).astype(dtype), rng.integers(-5, 5, (7, 1)))
    call_both(f, reference, args, "the agreement check")
    call_both(f, reference, args, "compiled")
    assert (f.status, f.backend) == ("compiled", "cpu")
    assert {"log_softmax_take", "log_softmax_take_grad"} <= {e.kernel for e in f.events if e.state == "ready"} | {
        e.kernel for e in f.events if e.state == "cached"
    }


def test_inputs_an_op_kernel_declines_run_the_ops_perform():
    """Labels broadcast past the logits (several read one row) do not fit the kernel's one-label-per-row loop."""
    f, reference = cross_entropy_function(), cross_entropy_function("numpy")
    assert f.wait(WAIT) == UNCHECKED, f.status
    rng = np.random.default_rng(1)
    call_both(f, reference, (rng.normal(size=(4, 3)).astype("float32"), rng.integers(0, 3, (4, 1))), "checked")
    args = (rng.normal(size=(1, 3)).astype("float32"), np.array([[2], [0], [2]]))
    call_both(f, reference, args, "declined by the kernel's adapter")
    assert (f.status, f.backend) == ("compiled", "cpu")
    with pytest.raises(ShapeError, match="log_softmax_take"):  # a label out of range, from the compiled kernel
        f(rng.normal(size=(2, 3)).astype("float32"), np.array([[0], [3]]))


# ---------------------------------------------------------------------------------------------------------------
# The disk cache
# ---------------------------------------------------------------------------------------------------------------
def constant_chain(bits: int, constant: float, backend: str = "cpu") -> nd.Function:
    x = nd.vector("x", shape=(5,))
    y = chain(x * constant, bits)
    return nd.function([x], [y, nd.grad(nd.sum(y), x)], backend=backend)


def test_a_different_constant_loads_the_same_kernel_from_the_cache():
    """Constants are kernel arguments: ``x * 3.5`` reuses the kernel compiled for ``x * 2.5``."""
    bits = fresh_bits()
    value = np.linspace(-1.0, 1.0, 5)
    first = constant_chain(bits, 2.5)
    assert first.wait(WAIT) == UNCHECKED
    assert states(first, "k0") == ["queued", "compiling", "ready"]
    second = constant_chain(bits, 3.5)
    assert second.wait(WAIT) == UNCHECKED
    assert states(second) == ["cached", "cached"], "the same structure with another constant was compiled again"
    results = {}
    for constant, f in ((2.5, first), (3.5, second)):
        for _ in range(2):  # the agreement check, then the kernel alone
            results[constant] = call_both(f, constant_chain(bits, constant, "numpy"), (value,), f"x * {constant}")
            assert (f.status, f.backend) == ("compiled", "cpu")
    assert not np.allclose(results[2.5][0], results[3.5][0]), "both functions computed with the same constant"


FRESH_PROCESS = """
import json, sys
import numpy as np
from tests.backends.cpu_support import chain
import nbdiff as nd
from numba.core import event as numba_event
from nbdiff.backends import worker

x = nd.vector("x", shape=(5,))
y = chain(x * 1.5, int(sys.argv[1]))
f = nd.function([x], [y, nd.grad(nd.sum(y), x)], backend="cpu")
with numba_event.install_recorder("numba:compile") as compiles:
    f(np.linspace(-1.0, 1.0, 5))
    status = f.wait(60)
    f(np.linspace(-1.0, 1.0, 5))
states = [e.state for e in f.events]
compiled = sorted({data["dispatcher"].py_func.__name__ for _, event in compiles.buffer for data in [event.data]})
report = {"status": status, "backend": f.backend, "states": states, "numba_compiled": compiled}
print(json.dumps({**report, "worker": worker._worker is not None}))
"""


def test_a_fresh_process_loads_the_kernels_from_the_disk_cache():
    bits = fresh_bits()
    x = nd.vector("x", shape=(5,))
    y = chain(x * 1.5, bits)
    assert nd.function([x], [y, nd.grad(nd.sum(y), x)], backend="cpu").wait(WAIT) == UNCHECKED
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(bits)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["states"] == ["cached", "cached"], report  # the kernel and the whole-plan entry point
    assert not report["worker"], "the fresh process started a compile worker"
    assert (report["status"], report["backend"]) == ("compiled", "cpu"), report
    # Numba's own cache answered too: it compiled nothing in this process (a miss would be seconds of LLVM work).
    assert report["numba_compiled"] == [], report


def test_the_cache_folder_is_the_one_in_force_where_the_function_was_created(tmp_path):
    """``option_context(cache_dir=...)`` holds in the creating thread; the compilation runs in others."""
    x = nd.vector("x", shape=(5,))
    y = nd.tanh(x) * nd.exp(x)  # a common structure, new to this empty cache folder
    with nd.option_context(cache_dir=str(tmp_path)):
        f = nd.function([x], [y, nd.grad(nd.sum(y), x)], backend="cpu")
    assert f.wait(WAIT) == UNCHECKED
    assert states(f, "k0") == ["queued", "compiling", "ready"]
    modules = list(cache.kernels_directory(tmp_path).glob("nbdiff_kernel_*.py"))
    assert len(modules) == 1
    assert cache.is_compiled(modules[0], plan_units(f, False, None)[0].modules[0].signatures)


def test_functions_of_one_structure_created_at_once_all_compile():
    """Their compilations write the same module at the same time: none may replace a file another is using."""
    bits = fresh_bits()
    x = nd.vector("x", shape=(5,))
    functions = [nd.function([x], chain(x * (k + 1.5), bits), backend="cpu") for k in range(8)]
    value = np.linspace(-1.0, 1.0, 5)
    for k, f in enumerate(functions):
        assert f.wait(WAIT) == UNCHECKED, f.status
        call_both(f, nd.function([x], chain(x * (k + 1.5), bits), backend="numpy"), (value,))
        assert (f.status, f.backend) == ("compiled", "cpu")


def test_writing_a_module_keeps_an_identical_file_written_meanwhile(tmp_path, monkeypatch):
    """Two writers of one module: the second found no file when it looked, but the first's is there when it
    writes. The file (its modification time: part of Numba's cache key) must stay the first writer's."""
    path = cache.write_module(tmp_path, "nbdiff_test_module", "x = 1\n")
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    same_text, looks = cache._same_text, []

    def first_look_finds_nothing(*args) -> bool:  # the second writer looked before the first one wrote
        looks.append(args)
        return len(looks) > 1 and same_text(*args)

    monkeypatch.setattr(cache, "_same_text", first_look_finds_nothing)
    assert cache.write_module(tmp_path, "nbdiff_test_module", "x = 1\n") == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    assert len(looks) == 2  # it looked again once the file was found in its way
    monkeypatch.undo()
    cache.write_module(tmp_path, "nbdiff_test_module", "x = 2\n")  # another text does replace it
    assert path.read_text() == "x = 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nbdiff_test_module.py"], "temporary files left"


# ---------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------
def test_cpu_backend_without_numba_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cpu, "numba_available", lambda: False)
    x = nd.vector("x", shape=(3,))
    with pytest.raises(BackendError, match=r"backend='cpu' needs Numba.*pip install numba"):
        nd.function([x], nd.tanh(x) * 2.0, backend="cpu")
    with nd.option_context(compile=True):  # "auto" quietly stays on the interpreter
        f = nd.function([x], nd.tanh(x) * 2.0, backend="auto")
    assert f.wait(0.0) == "interpreting"
    np.testing.assert_allclose(f(np.ones(3)), np.tanh(np.ones(3)) * 2.0)
    assert f.backend == "numpy" and f.events == []


def test_device_outputs_on_the_cpu_is_a_clear_error():
    x = nd.vector("x")
    with pytest.raises(BackendError, match="device_outputs=True needs a target with device memory"):
        nd.function([x], x * 2.0, backend="cpu", device_outputs=True)


def w1(dtype: str = "float64", n: int = 64) -> tuple[nd.Variable, list]:
    """The reference workload's value and gradient: sum(tanh(x) exp(-x^2) + log1p(x^2) sin(3x))."""
    x = nd.vector("x", dtype=dtype, shape=(n,))
    y = nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))
    return x, [y, nd.grad(y, x)]


def test_fastmath_compiles_and_agrees():
    x, outputs = w1()
    f = nd.function([x], outputs, backend="cpu", fastmath=True)
    assert f.wait(WAIT) == UNCHECKED
    fast = [m for u in plan_units(f, True, None) for m in u.modules]
    assert {m.name for m in fast}.isdisjoint(m.name for u in plan_units(f, False, None) for m in u.modules)
    for module in fast:  # compiled with LLVM's fast-math flags, but not nnan/ninf
        assert 'fastmath={"afn", "arcp", "contract", "nsz", "reassoc"}' in module.source
        assert cache.is_compiled(cache.kernels_directory() / f"{module.name}.py", module.signatures)
    reference = nd.function([x], outputs, backend="numpy")
    value = np.random.default_rng(1).uniform(-3, 3, 64)
    for _ in range(2):
        call_both(f, reference, (value,), "fastmath")
        assert (f.status, f.backend) == ("compiled", "cpu")


def scalar_function(backend: str = "cpu") -> nd.Function:
    a, b = nd.scalar("a"), nd.scalar("b")
    y = a * b + nd.sin(a)
    return nd.function([a, b], [y, *nd.grad(y, [a, b])], backend=backend)


def test_scalar_function_runs_as_one_entry_point():
    f = scalar_function()
    reference = scalar_function("numpy")
    assert f.wait(WAIT) == UNCHECKED
    assert {e.kernel for e in f.events} == {ENTRY_POINT}
    assert_finished_events(f)
    for args in [(1.5, 2.0), (1.5, 2.0), (-0.25, 3.0), (np.float64(0.5), np.float64(-1.0))]:
        got = call_both(f, reference, args, f"f{args}")
        assert (f.status, f.backend) == ("compiled", "cpu")
        assert all(v.dtype == np.float64 and v.shape == () for v in got)
    expected = [1.5 * 2.0 + np.sin(1.5), 2.0 + np.cos(1.5), 1.5]
    np.testing.assert_allclose(as_list(f(1.5, 2.0)), expected, rtol=1e-15)
    call_both(f, reference, (1, 2), "Python ints for float inputs")
    call_both(f, reference, (np.float32(0.5), 2), "float32 and int arguments")
    np.testing.assert_array_equal(as_list(f(1.5, b=2.0)), as_list(f(1.5, 2.0)))


def test_scalar_function_of_one_input():
    """An entry point of one argument (its Numba signature is the tuple ``(float64,)``)."""
    a = nd.scalar("a")
    outputs = [nd.cos(a), nd.grad(nd.cos(a), a)]
    f = nd.function([a], outputs, backend="cpu")
    assert f.wait(WAIT) == UNCHECKED, f.status
    reference = nd.function([a], outputs, backend="numpy")
    for value in (0.5, 0.5, -2.0):
        call_both(f, reference, (value,))
        assert (f.status, f.backend) == ("compiled", "cpu")


def test_scalar_entry_point_with_an_integer_input_gives_the_interpreters_results():
    n, a = nd.scalar("n", dtype="int64"), nd.scalar("a")
    y = n * a + nd.sin(a)
    f = nd.function([n, a], y, backend="cpu")
    reference = nd.function([n, a], y, backend="numpy")
    assert f.wait(WAIT) == UNCHECKED
    for args in [(3, 2.0), (3, 2.0), (-7, 0.5), (np.int64(4), 1.0), (True, 1.0)]:
        call_both(f, reference, args, f"f{args}")
        assert f.backend == "cpu"
    for beyond in (2**63 + 5, 2**70):  # beyond int64: the same error as the interpreter's, on the fast path too
        with pytest.raises(InputError) as error:
            f(beyond, 1.0)
        with pytest.raises(InputError) as expected:
            reference(beyond, 1.0)
        assert str(error.value).splitlines()[0] == str(expected.value).splitlines()[0]
    with pytest.raises(InputError, match="without losing information"):
        f(2.5, 1.0)


def test_keyword_calls_do_not_change_what_positional_calls_accept():
    f = scalar_function()
    assert f.wait(WAIT) == UNCHECKED
    for _ in range(3):
        f(1.5, b=2.0)
    assert f.backend == "cpu"
    with pytest.raises(InputError, match="expected 2 argument"):
        f(1.5)


def test_float32_stays_float32():
    x, outputs = w1("float32", 16)
    f = nd.function([x], outputs, backend="cpu")
    reference = nd.function([x], outputs, backend="numpy")
    assert f.wait(WAIT) == UNCHECKED
    value = np.linspace(-2, 2, 16, dtype=np.float32)
    for args in [(value,), (value,), (value.astype(np.float64),), (list(map(float, value)),)]:
        got = call_both(f, reference, args, "float32")
        assert [v.dtype for v in got] == [np.float32, np.float32]
        assert f.backend == "cpu"


def test_scalar_broadcast_against_a_vector():
    s, x = nd.scalar("s"), nd.vector("x", shape=(6,))
    y = nd.sum(s * nd.exp(x) + s * s)
    f = nd.function([s, x], [y, *nd.grad(y, [s, x])], backend="cpu")
    reference = nd.function([s, x], [y, *nd.grad(y, [s, x])], backend="numpy")
    assert f.wait(WAIT) == UNCHECKED
    for args in [(0.5, np.arange(6.0) / 3), (0.5, np.arange(6.0) / 3), (-2.0, np.ones(6))]:
        call_both(f, reference, args, "scalar times vector")
        assert f.backend == "cpu"


def test_input_layouts_and_byte_orders():
    """The kernels get flat contiguous arrays whatever the caller's layout; the inputs are left as they were."""
    x, v = nd.matrix("x", shape=(3, 4)), nd.vector("v", shape=(4,))
    y = nd.tanh(x) * nd.exp(x) + 2.0 + nd.sum(nd.sin(v))
    cost = nd.sum(y * y)
    outputs = [y, cost, *nd.grad(cost, [x, v])]
    f = nd.function([x, v], outputs, backend="cpu")
    reference = nd.function([x, v], outputs, backend="numpy")
    assert f.wait(WAIT) == UNCHECKED
    matrix, vector = np.random.default_rng(0).normal(size=(3, 4)), np.linspace(-1.0, 1.0, 4)
    read_only = matrix.copy()
    read_only.setflags(write=False)
    cases = {
        "the agreement check": (matrix, vector),
        "C order": (matrix, vector),
        "Fortran order": (np.asfortranarray(matrix), vector),
        "strided views": (np.repeat(matrix, 2, axis=1)[:, ::2], np.repeat(vector, 3)[::3]),
        "big-endian": (matrix.astype(">f8"), vector.astype(">f8")),
        "read-only": (read_only, vector),
        "float32 and int64 arrays": (matrix.astype(np.float32), np.arange(4)),
    }
    for what, args in cases.items():
        copies = [np.array(a, copy=True) for a in args]
        call_both(f, reference, args, what)
        assert (f.status, f.backend) == ("compiled", "cpu"), what
        for array, copy in zip(args, copies):
            np.testing.assert_array_equal(array, copy, err_msg=f"{what}: an input changed")


def mixed_function(backend: str = "cpu") -> nd.Function:
    """Float, integer and boolean vectors of unknown length and a float scalar (so its kernels have
    ``parallel=True`` variants too)."""
    x, n, b, s = nd.vector("x"), nd.vector("n", dtype="int64"), nd.vector("b", dtype="bool"), nd.scalar("s")
    y = nd.where(b, x * n, -x) * s + nd.sin(x)
    cost = nd.sum(y * y)
    return nd.function([x, n, b, s], [y, cost, *nd.grad(cost, [x, s])], backend=backend)


def mixed_arguments(size: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    return rng.uniform(-2, 2, size), rng.integers(-3, 4, size), rng.uniform(size=size) > 0.5, 0.75


@pytest.mark.slow
def test_integer_boolean_size_one_and_large_inputs():
    f = mixed_function()
    reference = mixed_function("numpy")
    assert f.wait(WAIT) == UNCHECKED
    units = [unit for unit in plan_units(f, False, None) if unit.name != PROGRAM]  # the entry point is serial
    assert all(len(unit.modules) == 2 for unit in units), "expected parallel variants"
    x, n, b, s = mixed_arguments(7)
    cases = {
        "the agreement check": (x, n, b, s),
        "compiled": (x, n, b, s),
        "size-1 inputs where arrays were compiled": tuple(a[:1] for a in (x, n, b)) + (s,),
        "a size-1 integer vector broadcast": (x, n[:1], b, s),
        "a list of Python ints": (x, [int(v) for v in n], b, s),
        "int32 integers": (x, n.astype(np.int32), b, s),
        "empty vectors": (x[:0], n[:0], b[:0], s),
        "the parallel variant (200001 elements)": mixed_arguments(200_001, seed=1),
    }
    for what, args in cases.items():
        got = call_both(f, reference, args, what)
        assert (f.status, f.backend) == ("compiled", "cpu"), what
        assert [v.dtype for v in got] == [np.float64] * 4


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------
def raised(f, *args):
    with pytest.raises(Exception) as info:
        f(*args)
    return info.value


def assert_same_error(f, reference, *args, error=InputError):
    got, expected = raised(f, *args), raised(reference, *args)
    assert type(got) is type(expected) is error, (type(got), type(expected), got)
    assert str(got).splitlines()[0] == str(expected).splitlines()[0]


def test_bad_input_raises_the_interpreters_errors():
    x, n = nd.vector("x", shape=(3,)), nd.vector("n", dtype="int64", shape=(3,))
    y = nd.sum(nd.tanh(x) * n + x)
    f = nd.function([x, n], [y, nd.grad(y, x)], backend="cpu")
    reference = nd.function([x, n], [y, nd.grad(y, x)], backend="numpy")
    assert f.wait(WAIT) == UNCHECKED
    good = (np.arange(3.0), np.arange(3))
    assert_same_error(f, reference, np.arange(4.0), good[1])  # wrong shape, while the check waits
    assert f.status == UNCHECKED and f.backend == "numpy"
    call_both(f, reference, good, "the agreement check")
    assert f.backend == "cpu"
    assert_same_error(f, reference, np.arange(4.0), good[1])  # wrong shape
    assert_same_error(f, reference, np.zeros((3, 1)), good[1])  # wrong number of dimensions
    assert_same_error(f, reference, good[0], np.arange(3.0))  # float for int: not a same-kind cast
    assert_same_error(f, reference, good[0].astype(complex), good[1])  # not a real number
    assert_same_error(f, reference, ["a", "b", "c"], good[1])  # not numbers
    assert_same_error(f, reference, good[0])  # a missing argument
    assert_same_error(f, reference, *good, good[0])  # one too many
    call_both(f, reference, good, "after the errors")
    assert (f.status, f.backend) == ("compiled", "cpu")


@pytest.mark.slow
def test_shapes_that_do_not_broadcast_raise_the_interpreters_error():
    f = mixed_function()
    reference = mixed_function("numpy")
    assert f.wait(WAIT) == UNCHECKED
    x, n, b, s = mixed_arguments(7)
    assert_same_error(f, reference, x, n[:5], b, s, error=ShapeError)  # while the check waits for good input
    assert f.status == UNCHECKED
    call_both(f, reference, (x, n, b, s), "the agreement check")
    assert f.backend == "cpu"
    assert_same_error(f, reference, x, n[:5], b, s, error=ShapeError)
    assert_same_error(f, reference, x[:2], n[:5], b[:3], s, error=ShapeError)


def test_calls_from_several_threads_during_the_agreement_check():
    """The first compiled call may race with others: every caller gets correct values, and the check decides
    once."""
    bits = fresh_bits()
    f = constant_chain(bits, 1.25)
    reference = constant_chain(bits, 1.25, "numpy")
    assert f.wait(WAIT) == UNCHECKED
    value = np.linspace(-1.0, 1.0, 5)
    expected = reference(value)
    failures: list[str] = []

    def call() -> None:
        for _ in range(20):
            try:
                assert_agrees(f(value), expected, "a thread's call")
            except AssertionError as error:
                failures.append(str(error))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert (f.status, f.backend) == ("compiled", "cpu")


# ---------------------------------------------------------------------------------------------------------------
# The garbage collector while Numba is imported and kernels load
# ---------------------------------------------------------------------------------------------------------------
def test_the_collector_is_paused_while_loading_and_numba_frozen_out_once(monkeypatch):
    import gc

    import numba  # noqa: F401  (freezing waits for Numba to be imported)

    pause = compilation.CollectorPause()
    frozen: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    assert gc.isenabled()
    with pause(freeze=False, loading=True):
        assert not gc.isenabled()
    assert gc.isenabled() and frozen == [] and not pause.frozen, "freeze_gc off: nothing is frozen"
    with pause(freeze=True, loading=False):  # Numba's import: frozen, and the first load still to come
        assert not gc.isenabled()
    assert gc.isenabled() and frozen == [1] and not pause.frozen
    with pause(freeze=True, loading=False):
        with pause(freeze=True, loading=True):  # nested (two threads): enabled again only when both are done
            assert not gc.isenabled()
        assert not gc.isenabled() and frozen == [1]
    assert gc.isenabled() and frozen == [1, 1] and pause.frozen  # the first load is over
    with pause(freeze=True, loading=True):
        pass
    assert frozen == [1, 1], "after the first load nothing more is frozen"


def test_the_collector_stays_off_when_the_user_had_turned_it_off():
    import gc

    pause = compilation.CollectorPause()
    gc.disable()
    try:
        with pause(freeze=True, loading=True):
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_freeze_gc_option_reaches_the_compilation():
    x = nd.vector("x")
    with nd.option_context(freeze_gc=False):
        f = nd.function([x], nd.exp(x) * 2.0, backend="cpu")
    assert f.compile_status.compilation.freeze_gc is False
    f.wait(WAIT)

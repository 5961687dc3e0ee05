"""Compiled answers are never wrong where the interpreter's are right: errors on values, every variant checked,
a final ``wait``, no lossy argument conversion on the compiled paths, and process-wide settings restored.

- Values NumPy refuses (an integer to a negative power, a class index out of range) raise the interpreter's error,
  class and message, from a fused kernel, its ``parallel=True`` variant, a compiled op and the scalar entry point
  (its fast path for raw Python scalars too); values NumPy accepts (integer division by zero) give its numbers.
- The agreement check runs every variant of a kernel, so a wrong ``parallel=True`` module is caught although the
  calls that checked it were small.
- The status ``wait`` returns is never changed by later calls, except "compiled (unchecked)".
- The switch interval set while kernels load is restored when two loads overlap.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import compilation, cpu
from nbdiff.backends.agreement import disagreement, least_precision
from nbdiff.backends.cpu import PROGRAM, inject_fault, plan_units
from nbdiff.errors import DomainError, InputError
from nbdiff.function import UNCHECKED
from nbdiff.runtime.events import kernel_states
from tests.backends.cpu_support import WAIT, call_both, chain, fresh_bits, reproducer_folder
from tests.backends.test_cpu_faults import MAKERS


def raised(f: nd.Function, *args) -> Exception:
    with pytest.raises(Exception) as info:
        f(*args)
    return info.value


def assert_same_error(f: nd.Function, reference: nd.Function, *args, error: type = DomainError) -> None:
    """``f`` raises what the interpreter raises: the class and the message (the node's line included)."""
    got, expected = raised(f, *args), raised(reference, *args)
    assert type(got) is type(expected) is error, (type(got), type(expected), got)
    assert str(got) == str(expected)


def int_power(backend: str = "cpu", shape=(2,)) -> nd.Function:
    x, y = nd.vector("x", dtype="int64", shape=shape), nd.vector("y", dtype="int64", shape=shape)
    return nd.function([x, y], x**y + 1, backend=backend)


# ---------------------------------------------------------------------------------------------------------------
# Values the interpreter refuses
# ---------------------------------------------------------------------------------------------------------------
def test_the_interpreter_raises_a_domain_error_for_integers_to_negative_powers():
    f = int_power("numpy")
    error = raised(f, np.array([2, 0]), np.array([-1, -1]))
    assert isinstance(error, DomainError) and isinstance(error, ValueError)
    assert "power" in str(error) and "negative integer powers" in str(error)
    assert "test_cpu_correctness.py" in str(error), "the error names the user's line"
    np.testing.assert_array_equal(f(np.array([2, 0]), np.array([3, 0])), [9, 2])


def test_a_fused_kernel_raises_the_interpreters_error_for_a_negative_integer_power():
    f, reference = int_power(), int_power("numpy")
    assert f.wait(WAIT) == UNCHECKED
    bad = (np.array([2, 0]), np.array([-1, -1]))
    assert_same_error(f, reference, *bad)  # while the agreement check waits for good input
    call_both(f, reference, (np.array([2, 3]), np.array([3, 0])), "the agreement check")
    assert (f.status, f.backend) == ("compiled", "cpu")
    assert_same_error(f, reference, *bad)  # from the compiled kernel, which answers alone now
    assert_same_error(f, reference, np.array([2, 5]), np.array([4, -3]))
    call_both(f, reference, (np.array([-2, 7]), np.array([5, 1])), "after the errors")
    assert (f.status, f.backend) == ("compiled", "cpu")


@pytest.mark.slow
def test_the_parallel_variant_raises_the_interpreters_error_for_a_negative_integer_power():
    f, reference = int_power(shape=(None,)), int_power("numpy", shape=(None,))
    assert len(plan_units(f, False, None)[0].modules) == 2, "expected a parallel=True variant"
    assert f.wait(WAIT) == UNCHECKED
    size = cpu.PARALLEL_THRESHOLD + 1
    base, exponent = np.arange(size) % 5, np.ones(size, dtype=np.int64)
    call_both(f, reference, (base, exponent), "the agreement check")
    assert (f.status, f.backend) == ("compiled", "cpu")
    exponent[size // 2] = -2
    assert_same_error(f, reference, base, exponent)


def int_power_scalars(backend: str = "cpu") -> nd.Function:
    x, y = nd.scalar("x", dtype="int64"), nd.scalar("y", dtype="int64")
    return nd.function([x, y], x**y + 1, backend=backend)


def test_the_scalar_entry_point_raises_the_interpreters_error_for_a_negative_integer_power():
    f, reference = int_power_scalars(), int_power_scalars("numpy")
    assert f.wait(WAIT) == UNCHECKED
    for args in [(2, 3), (2, 3), (np.int64(3), np.int64(2))]:
        call_both(f, reference, args, f"f{args}")
        assert (f.status, f.backend) == ("compiled", "cpu")
    assert f.compile_status.fast is not None, "Python ints should have taught the entry point its fast path"
    for bad in [(2, -1), (0, -1), (np.int64(2), np.int64(-1)), (np.array(5), np.array(-7))]:
        assert_same_error(f, reference, *bad)
    call_both(f, reference, (-3, 3), "after the errors")
    assert (f.status, f.backend) == ("compiled", "cpu")


def labels_function(backend: str = "cpu") -> nd.Function:
    """A compiled op with class indices: ``log_softmax_take`` (the stability pass makes it)."""
    x = nd.matrix("x", shape=(2, 3))
    labels = nd.matrix("labels", dtype="int64", shape=(2, 1))
    return nd.function([x, labels], nd.take_along_axis(nd.log_softmax(x, axis=1), labels, 1), backend=backend)


def test_a_compiled_op_raises_the_interpreters_error_for_an_index_out_of_range():
    f, reference = labels_function(), labels_function("numpy")
    assert {u.name for u in plan_units(f, False, None)} == {"log_softmax_take", PROGRAM}  # also a whole-plan step
    assert f.wait(WAIT) == UNCHECKED
    x = np.arange(6.0).reshape(2, 3) / 4
    call_both(f, reference, (x, np.array([[0], [2]])), "the agreement check")
    assert (f.status, f.backend) == ("compiled", "cpu")
    error = raised(reference, x, np.array([[0], [3]]))
    assert_same_error(f, reference, x, np.array([[0], [3]]), error=type(error))
    assert_same_error(f, reference, x, np.array([[-4], [1]]), error=type(error))


def test_integer_division_by_zero_gives_the_interpreters_numbers():
    """NumPy divides integers to floats, and by zero to inf and NaN: the compiled kernel does the same."""
    x, y = nd.vector("x", dtype="int64", shape=(4,)), nd.vector("y", dtype="int64", shape=(4,))
    f, reference = (nd.function([x, y], x / y + 1, backend=backend) for backend in ("cpu", "numpy"))
    assert f.wait(WAIT) == UNCHECKED
    args = (np.array([1, 0, -1, 6]), np.array([0, 0, 0, 3]))
    with np.errstate(divide="ignore", invalid="ignore"):
        for what in ("the agreement check", "compiled"):
            got = call_both(f, reference, args, what)
            assert (f.status, f.backend) == ("compiled", "cpu")
    np.testing.assert_array_equal(got[0], [np.inf, np.nan, -np.inf, 3.0])


# ---------------------------------------------------------------------------------------------------------------
# Every variant checked; a final wait
# ---------------------------------------------------------------------------------------------------------------
def unknown_length_function(bits: int, backend: str = "cpu") -> nd.Function:
    x = nd.vector("x")  # of unknown length: its kernel has a parallel=True variant
    y = chain(x, bits)
    return nd.function([x], [y, nd.grad(nd.sum(y), x)], backend=backend)


@pytest.mark.slow
@pytest.mark.parametrize("called_while_compiling", [True, False])
def test_a_wrong_parallel_variant_is_caught_by_small_calls(called_while_compiling):
    bits = fresh_bits()
    with inject_fault("wrong-parallel-values"):
        f = unknown_length_function(bits)
    reference = unknown_length_function(bits, "numpy")
    assert len(plan_units(f, False, None)[0].modules) == 2, "expected a parallel=True variant"
    small, large = (np.linspace(-1.0, 1.0, n) for n in (7, cpu.PARALLEL_THRESHOLD + 1))
    if called_while_compiling:
        call_both(f, reference, (small,), "while compiling")
    status = f.wait(WAIT)
    if not called_while_compiling:
        assert status == UNCHECKED
        call_both(f, reference, (small,), "the agreement check")
        status = f.status
    assert status.startswith("fallback: kernel k0 (its parallel=True module) disagrees"), status
    assert reproducer_folder(status).is_dir()
    assert kernel_states(f.events)["k0"].history[-2:] in (("ready", "failed"), ("cached", "failed"))
    for args in ((small,), (large,)):
        call_both(f, reference, args, "after the check")
        assert (f.status, f.backend) == (status, "numpy")


@pytest.mark.parametrize("fault", [None, "wrong-values"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_what_wait_returns_after_a_call_is_final(kind, fault):
    """Called while compiling, the function is checked as it becomes compiled: ``wait`` says how it ends."""
    make, args, name = MAKERS[kind]
    with inject_fault(fault) if fault else contextlib.nullcontext():
        f = make()
    reference = make("numpy")
    call_both(f, reference, args, "while compiling")
    status = f.wait(WAIT)
    if fault is None:
        assert status == "compiled", status
    else:
        assert status.startswith("fallback: ") and "disagrees with the interpreter" in status, status
        states = kernel_states(f.events)  # a possible order: the kernel's "failed" follows its "ready" or "cached"
        assert states[name].history[-1] == "failed" and states[name].history[-2] in ("ready", "cached"), states
    for _ in range(3):
        call_both(f, reference, args, "after wait")
        assert f.status == status
        assert f.backend == ("cpu" if fault is None else "numpy")


def test_an_unchecked_function_is_decided_by_its_first_call_and_the_panel_shows_it():
    pytest.importorskip("ipywidgets")
    from nbdiff.widgets.status_view import status_panel

    x = nd.vector("x", shape=(3,))
    f = nd.function([x], nd.sum(nd.tanh(x) * nd.exp(x)), backend="cpu")
    assert f.wait(WAIT) == UNCHECKED
    panel = status_panel(f)
    seen: list[str] = []
    unsubscribe = f.subscribe_status(seen.append)
    assert "compiled (unchecked" in panel.value and "first call" in panel.value
    f(np.arange(3.0))
    assert (f.status, seen) == ("compiled", ["compiled"])
    assert "compiled (unchecked" not in panel.value and "compiled · backend cpu" in panel.value  # not "numpy"
    unsubscribe()
    f(np.arange(3.0))
    assert seen == ["compiled"]
    panel.close()


def test_the_panel_says_which_backend_answered_when_compiled_calls_follow_interpreted_ones():
    """Called while compiling (the interpreter answers), checked on those inputs when ready: no call is decided
    later, so the next call, answered compiled, is what tells the panel (it kept saying "backend numpy")."""
    pytest.importorskip("ipywidgets")
    from nbdiff.widgets.status_view import status_panel

    x = nd.vector("x", shape=(4,))
    f = nd.function([x], nd.sum(nd.sinh(x) * nd.exp(x)), backend="cpu")
    panel = status_panel(f)
    seen: list[str] = []
    unsubscribe = f.subscribe_status(seen.append)
    f(np.arange(4.0))
    if f.status == "compiled":
        pytest.skip("compiled before the first call (a warm cache): the first call itself is checked")
    assert f.backend == "numpy"
    assert f.wait(WAIT) == "compiled" and f.backend == "numpy"  # checked on the last inputs: nobody called since
    assert "compiled · backend numpy" in panel.value
    heard = len(seen)
    f(np.arange(4.0))
    assert f.backend == "cpu" and "compiled · backend cpu" in panel.value
    assert len(seen) == heard + 1
    f(np.arange(4.0))
    assert len(seen) == heard + 1  # no change, no redraw
    unsubscribe()
    panel.close()


def test_the_last_inputs_are_not_kept_once_compiled():
    x = nd.vector("x", shape=(3,))
    f = nd.function([x], nd.sum(nd.sin(x) * nd.cos(x)), backend="cpu")
    f(np.arange(3.0))
    assert f.wait(WAIT) == "compiled"
    assert f.compile_status.last_arrays is None
    f(np.arange(3.0))
    assert f.compile_status.last_arrays is None


# ---------------------------------------------------------------------------------------------------------------
# Lossy conversions on the compiled paths
# ---------------------------------------------------------------------------------------------------------------
def test_lossy_conversions_are_refused_on_the_scalar_entry_points_fast_path():
    a, n = nd.scalar("a", dtype="float32"), nd.scalar("n", dtype="int64")
    y = a * 2 + nd.sin(a) * n
    f, reference = (nd.function([a, n], y, backend=backend) for backend in ("cpu", "numpy"))
    assert f.wait(WAIT) == UNCHECKED
    for args in [(np.float32(1.5), 2), (np.float32(1.5), 2), (1.5, 2), (np.float32(0.5), np.int64(3))]:
        call_both(f, reference, args, f"f{args}")
        assert (f.status, f.backend) == ("compiled", "cpu")
    assert f.compile_status.fast is not None
    for bad, value in [((1e300, 2), "1e+300"), ((np.float32(1.0), 2**63), "9223372036854775808")]:
        error = raised(f, *bad)
        assert isinstance(error, InputError) and "without losing information" in str(error)
        assert value in str(error) and str(error) == str(raised(reference, *bad))
    with np.errstate(invalid="ignore"):
        call_both(f, reference, (np.float32(np.inf), 1), "an infinity stays allowed")


def test_lossy_conversions_are_refused_for_a_fused_kernel():
    x, n = nd.vector("x", dtype="float32", shape=(2,)), nd.vector("n", dtype="int64", shape=(2,))
    y = nd.exp(x) * n
    f, reference = (nd.function([x, n], y, backend=backend) for backend in ("cpu", "numpy"))
    assert f.wait(WAIT) == UNCHECKED
    good = (np.array([0.5, 1.0]), np.array([1, 2], dtype=np.uint64))
    call_both(f, reference, good, "the agreement check")
    for bad in [(np.array([0.5, 1e300]), good[1]), (good[0], np.array([1, 2**63], dtype=np.uint64))]:
        assert_same_error(f, reference, *bad, error=InputError)
    assert (f.status, f.backend) == ("compiled", "cpu")


def test_a_float64_result_computed_through_float32_gets_float32s_tolerance():
    """NumPy's float32 ``exp`` (SIMD) and libm's may differ in the last ulp; the product with an int64 is float64."""
    expected, got = np.array([5.436563968658447]), np.array([5.436563491821289])  # 2 * exp(1) in float32, twice
    assert disagreement(expected, got) is not None
    assert disagreement(expected, got, precision="float32") is None
    assert disagreement(expected, got * 1.001, precision="float32") is not None
    assert least_precision(["int64", "float64", "float32", "bool"]) == "float32"
    assert least_precision(["int64", "bool"]) is None


# ---------------------------------------------------------------------------------------------------------------
# Process-wide settings
# ---------------------------------------------------------------------------------------------------------------
def test_the_switch_interval_is_restored_when_two_loads_overlap():
    """A enters, B enters, A leaves, B leaves: the interval the process had comes back (each thread restoring what
    it saw would leave B's, the 1 ms one)."""
    original = sys.getswitchinterval()
    steps = {name: threading.Event() for name in ("a in", "b in", "a out")}
    inside: dict[str, float] = {}

    def a() -> None:
        with compilation.gentle_switching():
            inside["a"] = sys.getswitchinterval()
            steps["a in"].set()
            steps["b in"].wait(WAIT)
        steps["a out"].set()

    def b() -> None:
        steps["a in"].wait(WAIT)
        with compilation.gentle_switching():
            inside["b"] = sys.getswitchinterval()
            steps["b in"].set()
            steps["a out"].wait(WAIT)
            inside["b after a"] = sys.getswitchinterval()

    sys.setswitchinterval(0.005)
    try:
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        loading = compilation.LOAD_SWITCH_INTERVAL
        assert inside == pytest.approx({"a": loading, "b": loading, "b after a": loading})
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(original)

"""The whole-plan entry point (``nbdiff.backends.cpu_program``): one compiled call per function call for array
functions, its buffers reused per input-shape signature without aliasing what callers keep, the mixed plan where
it does not fit, and its own agreement check and fault hooks."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cpu, cpu_program, numpy_blas
from nbdiff.backends.compilation import CompiledPlan
from nbdiff.backends.cpu import PROGRAM, inject_fault, plan_units
from nbdiff.backends.program_runner import ProgramRunner
from nbdiff.errors import DomainError
from nbdiff.function import UNCHECKED
from tests.backends.cpu_support import WAIT, call_both, reproducer_folder, states


def layer(backend: str = "cpu") -> nd.Function:
    """Matmuls (one of a transposed view), a fused kernel with a trailing sum, and the gradient."""
    A, x = nd.matrix("A"), nd.vector("x")
    y = nd.sum(nd.tanh(A @ x) ** 2)
    return nd.function([A, x], [y, nd.grad(y, x), A.T @ A], backend=backend)


def layer_args(rows: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, n)), rng.standard_normal(n)


def compiled_runner(f: nd.Function, args: tuple) -> ProgramRunner:
    """The function's runner once its first call has checked it; it must be a whole-plan runner."""
    assert f.wait(WAIT) == UNCHECKED, f.status
    f(*args)
    assert f.status == "compiled", f.status
    runner = f.compile_status.runner
    assert isinstance(runner, ProgramRunner), type(runner)
    return runner


def test_a_function_of_matmuls_and_kernels_has_a_whole_plan_unit():
    units = plan_units(layer("numpy"), False, None)
    assert [u.name for u in units][-1] == PROGRAM
    (module,) = units[-1].modules
    assert "def entry(" in module.source
    assert units[-1].optional


def test_products_call_numpys_own_blas_where_it_has_a_cblas_gemm(monkeypatch):
    """One BLAS thread pool in the process: the entry point's products call NumPy's bundled CBLAS by name; where
    NumPy has none, they stay ``np.dot`` (SciPy's BLAS through Numba)."""
    if numpy_blas.gemm_symbol("float64") is None:
        pytest.skip("this NumPy bundles no ILP64 CBLAS (a NumPy built on a system BLAS)")
    (module,) = plan_units(layer("numpy"), False, None)[-1].modules
    assert f"{numpy_blas.gemm_symbol('float64')}" in module.source and "np.dot(" not in module.source
    monkeypatch.setattr(numpy_blas, "gemm_symbol", lambda dtype: None)
    (module,) = plan_units(layer("numpy"), False, None)[-1].modules
    assert "np.dot(" in module.source and "numpy_gemm" not in module.source


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_products_of_every_layout_and_rank_equal_numpys(dtype):
    """Row-major and transposed matrices, rows and columns from vectors, a dot of two vectors: NumPy's values."""
    m, k, n = 5, 7, 3
    A, B = nd.matrix("A", dtype=dtype), nd.matrix("B", dtype=dtype)
    C, D = nd.matrix("C", dtype=dtype), nd.matrix("D", dtype=dtype)
    x, y, z = nd.vector("x", dtype=dtype), nd.vector("y", dtype=dtype), nd.vector("z", dtype=dtype)
    products = [A @ B, A.T @ C, A @ D.T, A.T @ nd.transpose(D @ A.T), x @ B, A @ x, x @ y, z @ A, A.T @ z, D @ A.T @ z]
    outputs = [*products, nd.tanh(x) * 2]  # and a fused kernel: a plan of products alone is not compiled
    inputs = [A, B, C, D, x, y, z]
    rng = np.random.default_rng(3)
    shapes = [(m, k), (k, n), (m, n), (n, k), (k,), (k,), (m,)]
    args = tuple(rng.standard_normal(shape).astype(dtype) for shape in shapes)
    f = nd.function(inputs, outputs, backend="cpu")
    runner = compiled_runner(f, args)
    assert runner.frames[tuple(a.shape for a in args)] is not None
    a, b, c, d, xv, yv, zv = args
    expected = [a @ b, a.T @ c, a @ d.T, a.T @ (d @ a.T).T, xv @ b, a @ xv, xv @ yv, zv @ a, a.T @ zv, d @ a.T @ zv]
    expected.append(np.tanh(xv) * 2)
    tolerance = 1e-5 if dtype == "float32" else 1e-13
    for got, want in zip(f(*args), expected):
        assert np.asarray(got).dtype == dtype and np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_the_whole_plan_entry_point_answers_and_agrees(monkeypatch):
    f, reference = layer(), layer("numpy")
    args = layer_args(4, 3)
    runner = compiled_runner(f, args)
    assert runner.frames[(args[0].shape, args[1].shape)] is not None, "the entry point should fit these shapes"
    mixed = []
    monkeypatch.setattr(runner.mixed, "run", lambda arrays: mixed.append(1) or CompiledPlan.run(runner.mixed, arrays))
    call_both(f, reference, args, "the entry point")
    assert mixed == [], "the mixed plan answered where the entry point fits"
    assert f.backend == "cpu"


def test_outputs_do_not_alias_the_reused_buffers_or_each_other():
    f, reference = layer(), layer("numpy")
    first_args, second_args = layer_args(4, 3, seed=1), layer_args(4, 3, seed=2)
    runner = compiled_runner(f, first_args)
    first = f(*first_args)
    kept = [a.copy() for a in first]
    second = f(*second_args)
    for was, now in zip(kept, first):
        np.testing.assert_array_equal(now, was, err_msg="a later call overwrote an earlier call's output")
    frame = runner.frames[(first_args[0].shape, first_args[1].shape)]
    assert frame.tail[1:], "the graph has intermediates: the frame should hold buffers"
    for out in first + second:
        assert not any(np.shares_memory(out, buffer) for buffer in frame.tail), "an output is a reused buffer"
    assert not any(np.shares_memory(a, b) for a in first for b in second)
    call_both(f, reference, second_args, "after another call")


def test_a_new_input_shape_gets_a_frame_and_buffers_of_its_own():
    f, reference = layer(), layer("numpy")
    small, large = layer_args(4, 3), layer_args(6, 5)
    runner = compiled_runner(f, small)
    call_both(f, reference, small, "small")
    call_both(f, reference, large, "large")
    call_both(f, reference, small, "small again")
    frames = [runner.frames[(a.shape, x.shape)] for a, x in (small, large)]
    assert all(frame is not None for frame in frames)
    shapes = [[b.shape for b in frame.tail[1:]] for frame in frames]
    assert shapes[0] != shapes[1], shapes
    assert not any(np.shares_memory(a, b) for a in frames[0].tail for b in frames[1].tail)


def test_loops_from_the_parallel_threshold_take_the_mixed_plan():
    x = nd.vector("x")
    y = nd.sum(nd.sin(x) * x)
    f, reference = (nd.function([x], [y, nd.grad(y, x)], backend=b) for b in ("cpu", "numpy"))
    runner = compiled_runner(f, (np.linspace(0, 1, 10),))
    large = np.linspace(-1, 1, cpu.PARALLEL_THRESHOLD)
    call_both(f, reference, (large,), "large")
    assert runner.frames[(large.shape,)] is None
    assert runner.frames[((10,),)] is not None


def test_buffers_beyond_the_frame_limit_take_the_mixed_plan(monkeypatch):
    f, reference = layer(), layer("numpy")
    runner = compiled_runner(f, layer_args(4, 3))
    monkeypatch.setattr(cpu_program, "FRAME_BYTES", 8)  # less than one intermediate vector
    args = layer_args(5, 3)
    call_both(f, reference, args, "beyond the limit")
    assert runner.frames[(args[0].shape, args[1].shape)] is None


def test_a_step_without_a_compiled_form_keeps_the_mixed_plan():
    x = nd.vector("x", shape=(6,))
    y = nd.sum(nd.exp(x[::2]))  # strided indexing has no compiled form in the entry point
    f, reference = (nd.function([x], [y, nd.grad(y, x)], backend=b) for b in ("cpu", "numpy"))
    assert PROGRAM not in [u.name for u in plan_units(f, False, None)]
    assert f.wait(WAIT) == UNCHECKED
    call_both(f, reference, (np.linspace(0, 1, 6),), "checked")
    call_both(f, reference, (np.linspace(0, 2, 6),), "compiled")
    assert isinstance(f.compile_status.runner, CompiledPlan)
    assert f.backend == "cpu"


def test_a_wrong_entry_point_is_caught_by_the_agreement_check():
    with inject_fault("wrong-program-values"):
        f = layer()
    reference = layer("numpy")
    assert f.wait(WAIT) == UNCHECKED
    args = layer_args(4, 3)
    call_both(f, reference, args, "the checked call")  # the interpreter's answer
    assert f.status.startswith("fallback: the whole-plan entry point disagrees with the interpreter"), f.status
    assert reproducer_folder(f.status).is_dir()
    assert states(f, PROGRAM)[-1] == "failed"
    call_both(f, reference, args, "after the fallback")
    assert f.backend == "numpy"


def test_an_entry_point_that_does_not_compile_leaves_the_mixed_plan_answering():
    with inject_fault("program-compile-error"):
        f = layer()
    reference = layer("numpy")
    assert f.wait(WAIT) == UNCHECKED, f.status
    assert states(f, PROGRAM)[-1] == "failed"
    args = layer_args(4, 3)
    call_both(f, reference, args, "the checked call")
    call_both(f, reference, args, "the compiled call")
    assert (f.status, f.backend) == ("compiled", "cpu")
    assert isinstance(f.compile_status.runner, CompiledPlan)


def int_power(backend: str) -> nd.Function:
    """A fused kernel NumPy refuses some values of (an integer to a negative power) after a matmul."""
    A, x = nd.matrix("A", shape=(2, 2)), nd.vector("x", dtype="int64", shape=(2,))
    return nd.function([A, x], [A @ A, x**x + 1], backend=backend)


def test_the_entry_point_raises_the_interpreters_error_naming_the_line():
    f, reference = int_power("cpu"), int_power("numpy")
    good = (np.eye(2), np.array([2, 3]))
    runner = compiled_runner(f, good)
    assert runner.frames[((2, 2), (2,))] is not None
    bad = (np.eye(2), np.array([2, -1]))
    with pytest.raises(DomainError) as caught:
        f(*bad)
    with pytest.raises(DomainError) as expected:
        reference(*bad)
    assert str(caught.value) == str(expected.value)
    assert "test_cpu_program.py" in str(caught.value), "the error names the user's line"
    call_both(f, reference, good, "after the error")

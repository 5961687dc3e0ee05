"""Loops beyond the flat loop: the rows-of-columns form of fused kernels (``nbdiff.backends.cpu_rows``), the
row-wise op kernels (``cpu_row_ops``: softmax, log_softmax, logsumexp, sums per row and per column) and both in
the whole-plan entry point, each compiled function checked against the interpreter on broadcasting patterns,
keepdims, ragged shapes, one row or one column, empty arrays, float32 and float64.

All the functions are created first, so their kernels queue in the one compile worker, then waited for (the
``compiled`` fixture). Each is called on several shapes: the first call is the agreement check, the later ones run
the compiled code alone, through the entry point where it fits and through the mixed plan (``runner.mixed``).
"""

from __future__ import annotations

from time import monotonic
from typing import Any, Callable

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cpu_rows
from nbdiff.backends.codegen import COLUMN, FULL, ROW, SCALAR, TOTAL, rows_form, rows_layout
from nbdiff.backends.cpu import PROGRAM, KernelRunner, OpRunner, inject_fault, plan_units
from nbdiff.backends.program_runner import ProgramRunner
from nbdiff.errors import DomainError
from nbdiff.function import UNCHECKED
from nbdiff.ops.linalg import MatMul
from tests.backends.cpu_support import WAIT, assert_agrees, reproducer_folder

GROUP_WAIT = 900.0  # seconds for every function here to compile on a cold cache


# -- the graphs: (name, builder of (inputs, outputs), shapes to call with) --------------------------------------------
def _bias_relu(dtype: str) -> tuple[list, list]:
    x, b = nd.matrix("x", dtype=dtype), nd.vector("b", dtype=dtype)
    y = nd.relu(x + b)
    return [x, b], [y, *nd.grad(nd.sum(y * y), [x, b])]


def _lone_bias(dtype: str) -> tuple[list, list]:
    x, b = nd.matrix("x", dtype=dtype), nd.vector("b", dtype=dtype)
    return [x, b], [x + b]


def _per_row(dtype: str) -> tuple[list, list]:
    x, c = nd.matrix("x", dtype=dtype), nd.tensor("c", dtype=dtype, shape=(None, 1))
    y = nd.exp(x - c) * x
    return [x, c], [y, nd.grad(nd.sum(y), x)]


def _trailing_sums(dtype: str) -> tuple[list, list]:
    x, b = nd.matrix("x", dtype=dtype), nd.vector("b", dtype=dtype)
    t = nd.tanh(x) * b
    return [x, b], [nd.sum(t, axis=1), nd.sum(t * x, axis=-1, keepdims=True)]


def _leading_sum(dtype: str) -> tuple[list, list]:
    x = nd.matrix("x", dtype=dtype)
    return [x], [nd.sum(nd.sin(x) * x, axis=0), nd.sum(x * x)]


def _three_d(dtype: str) -> tuple[list, list]:
    t, b = nd.tensor("t", dtype=dtype, ndim=3), nd.vector("b", dtype=dtype)
    y = nd.sum(nd.tanh(t + b), axis=-1)
    return [t, b], [y, *nd.grad(nd.sum(y * y), [t, b])]


def _softmax_family(dtype: str) -> tuple[list, list]:
    x = nd.matrix("x", dtype=dtype)
    s, ls = nd.softmax(x, axis=-1), nd.log_softmax(x, axis=1)
    lse, lsek = nd.logsumexp(x, axis=1), nd.logsumexp(x, axis=-1, keepdims=True)
    return [x], [s, ls, lse, lsek, nd.grad(nd.sum(lse * lse) + nd.sum(s * x), x)]


def _mlp(dtype: str) -> tuple[list, list]:
    X, labels = nd.matrix("X", dtype=dtype), nd.vector("labels", dtype="int64")
    W1, b1 = nd.matrix("W1", dtype=dtype), nd.vector("b1", dtype=dtype)
    W2, b2 = nd.matrix("W2", dtype=dtype), nd.vector("b2", dtype=dtype)
    log_probs = nd.log_softmax(nd.relu(X @ W1 + b1) @ W2 + b2, axis=1)
    loss = -nd.mean(nd.take_along_axis(log_probs, nd.expand_dims(labels, 1), axis=1))
    return [X, labels, W1, b1, W2, b2], [loss, *nd.grad(loss, [W1, b1, W2, b2])]


MATRIX_SHAPES = [(4, 3), (1, 5), (5, 1), (7, 2), (0, 3), (3, 0)]
CASES: dict[str, tuple[Callable[[str], tuple[list, list]], list[list[tuple[int, ...]]]]] = {
    "bias_relu": (_bias_relu, [[s, s[1:]] for s in MATRIX_SHAPES]),
    "lone_bias": (_lone_bias, [[s, s[1:]] for s in MATRIX_SHAPES]),
    "per_row": (_per_row, [[s, (s[0], 1)] for s in MATRIX_SHAPES]),
    "trailing_sums": (_trailing_sums, [[s, s[1:]] for s in MATRIX_SHAPES]),
    "leading_sum": (_leading_sum, [[s] for s in MATRIX_SHAPES]),
    "three_d": (_three_d, [[(2, 3, 4), (4,)], [(1, 1, 3), (3,)], [(0, 2, 3), (3,)], [(3, 2, 1), (1,)]]),
    "softmax_family": (_softmax_family, [[s] for s in MATRIX_SHAPES]),
    "mlp": (_mlp, [[(8, 5), (8,), (5, 6), (6,), (6, 3), (3,)], [(1, 4), (1,), (4, 2), (2,), (2, 3), (3,)]]),
}
DTYPES = ("float64", "float32")


def arrays_for(shapes: list[tuple[int, ...]], inputs: list, seed: int) -> list[np.ndarray]:
    """Random arrays of ``shapes`` and the inputs' dtypes (class labels in range for the MLP)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape, var in zip(shapes, inputs):
        if var.dtype == "int64":
            arrays.append(rng.integers(0, 3, shape))
        else:
            arrays.append((rng.standard_normal(shape) * 2).astype(var.dtype))
    return arrays


@pytest.fixture(scope="module")
def compiled() -> dict[str, tuple[nd.Function, nd.Function, list]]:
    """Every case and dtype compiled and interpreted, created at once and then waited for."""
    functions = {}
    for name, (build, _) in CASES.items():
        for dtype in DTYPES:
            inputs, outputs = build(dtype)
            functions[f"{name}-{dtype}"] = (
                nd.function(inputs, outputs, backend="cpu"),
                nd.function(inputs, outputs, backend="numpy"),
                inputs,
            )
    deadline = monotonic() + GROUP_WAIT
    for f, _, _ in functions.values():
        f.wait(max(0.0, deadline - monotonic()))
    return functions


@pytest.mark.parametrize("case", [f"{name}-{dtype}" for name in CASES for dtype in DTYPES])
def test_rows_kernels_agree_with_the_interpreter(compiled, case):
    f, reference, inputs = compiled[case]
    assert f.status == UNCHECKED, f.status
    name = case.rsplit("-", 1)[0]
    for seed, shapes in enumerate(CASES[name][1]):
        arrays = arrays_for(shapes, inputs, seed)
        expected = reference(*arrays)
        assert_agrees(f(*arrays), expected, f"{case} at {shapes}")
        assert f.status == "compiled", f.status
        assert_agrees(f(*arrays), expected, f"{case} at {shapes}, again")
        runner = f.compile_status.runner
        assert isinstance(runner, ProgramRunner), f"{case}: every step should have a whole-plan form"
        if seed == 0:  # the first shapes are non-empty: the entry point must answer, not fall back silently
            assert runner.frames[tuple(a.shape for a in arrays)] is not None, f"{case}: the entry point does not fit"
        assert_agrees(runner.mixed.run(arrays), expected, f"{case} at {shapes}, the mixed plan")


def _kernel_runners(f: nd.Function) -> list[Any]:
    runner = f.compile_status.runner
    mixed = runner.mixed if isinstance(runner, ProgramRunner) else runner
    return list(mixed.runners.values())


def test_a_bias_is_read_in_place_and_its_gradient_summed_per_column(compiled):
    f, _, inputs = compiled["bias_relu-float32"]
    f(*arrays_for([(4, 3), (3,)], inputs, 0))
    forms = [r.form for r in _kernel_runners(f) if isinstance(r, KernelRunner)]
    assert forms and all(form is not None for form in forms), forms
    assert any((1, COLUMN) in form.reads for form in forms), "the bias should be read at the column index"
    assert any(COLUMN in form.sums for form in forms), "the bias gradient should be a per-column sum in a kernel"


def test_the_mlp_step_has_no_numpy_step_but_its_matmuls(compiled):
    f, _, inputs = compiled["mlp-float32"]
    arrays = arrays_for(CASES["mlp"][1][0], inputs, 0)
    f(*arrays)
    runner = f.compile_status.runner
    assert isinstance(runner, ProgramRunner), type(runner)
    assert runner.frames[tuple(a.shape for a in arrays)] is not None, "the whole-plan entry point should fit"
    compiled_steps = runner.mixed.runners
    left = {n.op.name for n in f.graph.nodes if id(n) not in compiled_steps and not isinstance(n.op, MatMul)}
    assert left <= {"expand_dims", "matrix_transpose", "sum", "reduced_size", "sum_to_like"}, left
    assert any(isinstance(r, OpRunner) for r in compiled_steps.values())


def test_op_kernels_are_steps_of_the_whole_plan_entry_point():
    x = nd.matrix("x")
    f = nd.function([x], [nd.softmax(x @ x.T, axis=-1), nd.sum(nd.exp(x), axis=0)], backend="numpy")
    (unit,) = [u for u in plan_units(f, False, None) if u.name == PROGRAM]
    source = unit.modules[0].source
    assert "def op" in source and ("np.dot(" in source or "numpy_gemm_" in source), source


# -- the form, without compiling -------------------------------------------------------------------------------------
def _fused_node(f: nd.Function) -> Any:
    (kernel,) = f.kernels
    return kernel.op, [tuple(v.type.shape) for v in kernel.inputs]


def test_the_form_reads_columns_rows_and_scalars_by_their_static_shapes():
    x, b = nd.matrix("x"), nd.vector("b")
    c, s = nd.tensor("c", shape=(None, 1)), nd.scalar("s")
    f = nd.function([x, b, c, s], nd.exp(x + b) * c + s, backend="numpy")
    op, shapes = _fused_node(f)
    form = rows_form(op, shapes)
    assert form is not None and form.ndim == 2
    kinds = {f.kernels[0].inputs[r].name: kind for r, kind in form.reads}
    assert kinds == {"x": FULL, "b": COLUMN, "c": ROW, "s": SCALAR}
    assert cpu_rows.kernel_form(op, shapes) == form  # broadcast reads: the rows form, not a flat copy


def test_sums_over_the_last_axis_all_but_it_or_all_have_a_form():
    x = nd.tensor("x", ndim=3)
    expectations = {(2,): ROW, (0, 1): COLUMN, (0, 1, 2): TOTAL, (1,): None, (0,): None}
    for axes, kind in expectations.items():
        f = nd.function([x], nd.sum(nd.exp(x) * x, axis=axes), backend="numpy")
        form = rows_form(*_fused_node(f))
        assert (form.sums[0] if form else None) == kind, axes


def test_a_plain_elementwise_kernel_keeps_the_flat_loop():
    x, y = nd.matrix("x"), nd.matrix("y")
    f = nd.function([x, y], nd.sum(nd.exp(x) * y), backend="numpy")
    assert cpu_rows.kernel_form(*_fused_node(f)) is None


def test_run_time_shapes_that_break_the_form_are_refused_with_a_reason():
    x, b = nd.matrix("x"), nd.vector("b")
    f = nd.function([x, b], nd.exp(x + b) * x, backend="numpy")
    op, shapes = _fused_node(f)
    form = rows_form(op, shapes)
    layout = rows_layout(op, form, [(4, 3), (3,)])
    assert (layout.n_outer, layout.n_inner) == (4, 3)
    assert "column" in rows_layout(op, form, [(4, 3), (1,)])  # a one-element bias where a column was compiled


def test_a_column_sum_has_no_parallel_module_and_a_row_sum_has_one():
    x, b = nd.matrix("x"), nd.vector("b")
    leading = nd.function([x], nd.sum(nd.exp(x), axis=0), backend="numpy")
    trailing = nd.function([x, b], nd.sum(nd.exp(x + b), axis=1), backend="numpy")
    modules = {
        name: [u for u in plan_units(f, False, None) if u.kernel is not None][0].modules
        for name, f in (("leading", leading), ("trailing", trailing))
    }
    assert len(modules["leading"]) == 1 and "prange" not in modules["leading"][0].source
    assert len(modules["trailing"]) == 2 and "numba.prange(n_outer)" in modules["trailing"][1].source
    assert all(m.name.startswith("nbdiff_rows_") for ms in modules.values() for m in ms)


def test_a_wrong_rows_kernel_is_caught_by_the_agreement_check():
    x, b = nd.matrix("x", shape=(3, 4)), nd.vector("b", shape=(4,))
    with inject_fault("wrong-values"):
        f = nd.function([x, b], nd.tanh(x + b) * x, backend="cpu")
    assert f.wait(WAIT) == UNCHECKED, f.status
    arrays = arrays_for([(3, 4), (4,)], [x, b], 0)
    expected = nd.function([x, b], nd.tanh(x + b) * x, backend="numpy")(*arrays)
    assert_agrees(f(*arrays), expected, "the interpreter's values after the mismatch")
    assert f.status.startswith("fallback"), f.status
    assert reproducer_folder(f.status).is_dir()


def test_a_rows_kernel_raises_the_interpreters_error_for_a_value_outside_a_members_domain():
    def build(backend: str) -> nd.Function:
        x, e = nd.matrix("x", dtype="int64"), nd.vector("e", dtype="int64")
        return nd.function([x, e], [x**e + 1, nd.sum(x**e, axis=1)], backend=backend)

    f, reference = build("cpu"), build("numpy")
    assert f.wait(WAIT) == UNCHECKED, f.status
    x = np.arange(6).reshape(2, 3)
    assert_agrees(f(x, np.array([0, 1, 2])), reference(x, np.array([0, 1, 2])), "the agreement check")
    assert f.status == "compiled", f.status
    runner = f.compile_status.runner
    assert any(getattr(r, "form", None) is not None for r in runner.mixed.runners.values()), "a rows kernel"
    for args in ((x, np.array([0, -1, 2])), (x[:1], np.array([-2, 1, 2]))):
        with pytest.raises(DomainError) as got:
            f(*args)
        with pytest.raises(DomainError) as expected:
            reference(*args)
        assert str(got.value) == str(expected.value)
    assert f.status == "compiled" and f.backend == "cpu"

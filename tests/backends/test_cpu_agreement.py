"""The compiled CPU backend agrees with the interpreter on every row of the op table and on random graphs.

Each op-table row (float64 and float32) is built with ``backend="cpu"`` (values, and the gradient of their sum with
respect to the float inputs where the row is differentiable) and with ``backend="numpy"``, on static shapes so that
no kernel needs a ``parallel=True`` variant. All the functions are created first, so their kernels queue in the one
compile worker, and then waited for (the ``table`` fixture). Each is called twice: the first compiled call is the
agreement check (every kernel against the interpreter: "compiled (unchecked)" becomes "compiled"), the second
runs the kernels alone.
"""

from __future__ import annotations

from time import monotonic

import numpy as np
import pytest
from hypothesis import given, settings

import nbdiff as nd
from nbdiff.backends.agreement import outputs_disagreement
from nbdiff.backends.cpu import plan_units
from nbdiff.backends.program_runner import ProgramRunner
from nbdiff.function import UNCHECKED
from nbdiff.graph.types import is_float
from tests.backends.cpu_support import WAIT, assert_agrees, assert_finished_events
from tests.ops.table import all_cases
from tests.test_property import programs, run

ROWS = {
    f"{case.id}-{dtype}": (case, dtype)
    for case in all_cases()
    for dtype in ("float64", "float32")
    if dtype in case.dtypes
}
TABLE_WAIT = 900.0  # seconds for the whole table to compile on a cold cache (it takes about a minute)


def row_graph(case, dtype: str) -> tuple[list, list, list[np.ndarray]]:
    """The row's inputs (static shapes), outputs (and gradients of their sum), and input arrays."""
    arrays = case.arrays(dtype)
    variables = [nd.tensor(f"in{i}", dtype=a.dtype.name, shape=a.shape) for i, a in enumerate(arrays)]
    out = case.build(*variables)
    outputs = [out]
    if case.grad:
        wrt = [v for v in variables if is_float(v.dtype)]
        outputs += nd.grad(nd.sum(out), wrt, disconnected="zero")
    return variables, outputs, arrays


def row_functions(case, dtype: str) -> tuple[nd.Function, nd.Function, list[np.ndarray]]:
    """The row compiled and interpreted, and its input arrays."""
    variables, outputs, arrays = row_graph(case, dtype)
    return nd.function(variables, outputs, backend="cpu"), nd.function(variables, outputs, backend="numpy"), arrays


def gradient_scales(expected: list[np.ndarray]) -> list[float | None]:
    """The value's own scale, and for each gradient (the outputs after the first) at least the value's: a gradient
    whose terms cancel (that of ``sum(softmax(x))`` is zero in exact arithmetic, and NumPy's rounding happens to
    give exactly zero) is compared at the scale of the terms, since a compiled ``exp`` (a step's kernel, the
    mixed plan's and the entry point's alike) may round its last bit otherwise than NumPy's and each step is only
    held to its ``perform`` on the same inputs."""
    value = float(np.max(np.abs(expected[0]), initial=0.0)) if np.issubdtype(expected[0].dtype, np.floating) else 0
    scales: list[float | None] = [None]
    for gradient in expected[1:]:
        own = float(np.max(np.abs(gradient), initial=0.0)) if np.issubdtype(gradient.dtype, np.floating) else 0.0
        scales.append(max(own, value) if np.isfinite(value) else None)
    return scales


@pytest.fixture(scope="module")
def table():
    """Every row's functions, created at once and then waited for: ``{row id: (cpu, numpy, arrays)}``."""
    functions = {row: row_functions(case, dtype) for row, (case, dtype) in ROWS.items()}
    deadline = monotonic() + TABLE_WAIT
    for f, _, _ in functions.values():
        f.wait(max(0.0, deadline - monotonic()))
    return functions


@pytest.mark.slow
@pytest.mark.parametrize("row", list(ROWS))
def test_op_table_row_agrees_on_cpu(table, row):
    f, reference, arrays = table[row]
    compiles = bool(plan_units(f, False, None))  # whether the row has a kernel the backend compiles
    status = f.status
    assert not status.startswith("fallback"), status
    if compiles:
        assert status == UNCHECKED, status  # never called: the first call checks it
        assert_finished_events(f)
    else:
        assert status.startswith("interpreting"), status
        assert f.events == []
    originals = [a.copy() for a in arrays]
    expected = reference(*arrays)
    first = f(*arrays)  # the agreement check
    assert f.status == ("compiled" if compiles else status), f"the agreement check failed: {f.status}"
    assert f.backend == ("cpu" if compiles else "numpy")
    second = f(*arrays)  # the kernels alone
    assert f.backend == ("cpu" if compiles else "numpy")
    assert_agrees(first, expected, f"{row} (checked call)", gradient_scales(expected))
    assert_agrees(second, expected, f"{row} (compiled call)", gradient_scales(expected))
    for original, array in zip(originals, arrays):
        np.testing.assert_array_equal(array, original, err_msg="the compiled function changed its input")


@pytest.mark.slow
def test_whole_plan_entry_points_agree_on_many_rows(table):
    """Rows whose every step has a compiled form run as one whole-plan entry point (``cpu_program``) after the
    agreement check, and agree with the interpreter there (the entry point answers, not the mixed plan)."""
    answered = 0
    for row, (f, reference, arrays) in table.items():
        expected = reference(*arrays)
        f(*arrays)  # the agreement check, where the row's own test has not made it yet
        runner = f.compile_status.runner
        if not isinstance(runner, ProgramRunner) or runner.frames.get(tuple(a.shape for a in arrays)) is None:
            continue
        converted = [np.asarray(a, dtype=v.dtype) for a, v in zip(arrays, f.inputs)]
        got = runner.fast(tuple(converted))
        assert got is not None, f"{row}: the entry point did not answer"
        assert_agrees(got, expected, f"{row} (whole-plan entry point)", gradient_scales(expected))
        answered += 1
    assert answered >= 60, f"only {answered} of {len(ROWS)} rows ran as one entry point"


def test_op_table_compiles_kernels_of_many_rows():
    """The table exercises the backend: many rows have a fused kernel it compiles (not all do: a row of one
    reduction or indexing op is NumPy's alone), one of them a parallel variant (a value of unknown length)."""
    compiling, parallel = 0, 0
    for case, dtype in ROWS.values():
        variables, outputs, _ = row_graph(case, dtype)
        units = plan_units(nd.function(variables, outputs, backend="numpy"), False, None)
        compiling += bool(units)
        parallel += any(len(unit.modules) == 2 for unit in units)
    assert compiling >= 100, f"only {compiling} of {len(ROWS)} rows have a kernel to compile"
    assert parallel >= 1


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(programs())
def test_random_graphs_agree_on_cpu(case):
    """Hypothesis's random graphs (``tests/test_property.py``): values and gradients agree with the interpreter."""
    inputs, program = case
    variables = [nd.tensor(f"x{i}", shape=a.shape) for i, a in enumerate(inputs)]
    out = run(program, nd, variables)
    outputs = [out, *nd.grad(nd.sum(out), variables, disconnected="zero")]
    f = nd.function(variables, outputs, backend="cpu")
    reference = nd.function(variables, outputs, backend="numpy")
    status = f.wait(WAIT)
    assert status == UNCHECKED or status.startswith("interpreting"), status
    expected = reference(*inputs)
    first = f(*inputs)
    assert f.status == ("compiled" if status == UNCHECKED else status), f"the agreement check failed: {f.status}"
    second = f(*inputs)
    assert f.backend == ("cpu" if status == UNCHECKED else "numpy")
    assert_agrees(first, expected, "checked call")
    assert_agrees(second, expected, "compiled call")


def test_a_cancelling_output_is_judged_by_the_scale_of_its_terms():
    """The gradient of sum(softmax(x)) is s - s * sum(s): zero up to rounding, ~1e-17 in float64. A kernel that
    rounds differently (a GPU's fma, another summation order) gives other ~1e-17 values: that is agreement, and the
    check measures it against the terms' magnitude (``rounding_scales``), which a real error still exceeds."""
    x = nd.matrix("x")
    s = nd.softmax(x)
    f = nd.function([x], [s, nd.grad(nd.sum(s), x)], backend="numpy")
    (kernel,) = f.kernels
    op = kernel.node.op
    rng = np.random.default_rng(0)
    softmax = np.exp(rng.standard_normal((3, 4)))
    softmax /= softmax.sum(axis=1, keepdims=True)
    inputs = [softmax, softmax.sum(axis=1, keepdims=True)]
    (expected,) = op.perform(*inputs)
    rounded_otherwise = expected + 3e-17 * rng.standard_normal(expected.shape)
    wrong = expected + 1e-6
    assert outputs_disagreement([expected], [rounded_otherwise]) is not None  # by its own tiny size it would fail
    scales = op.rounding_scales(*inputs)
    assert 0.5 < scales[0] <= 1.0
    assert outputs_disagreement([expected], [rounded_otherwise], scales) is None
    assert outputs_disagreement([expected], [wrong], scales) is not None

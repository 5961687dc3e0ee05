"""Simulator tests of the CUDA target: run ONLY in a process started with ``NUMBA_ENABLE_CUDASIM=1`` (set before numba
is imported), which ``tests/cuda/test_cuda_target.py::test_simulator_suite`` does; the name keeps pytest's default
collection away from it. Every test uses grids of at most 2 blocks of 32 threads (the simulator runs one OS
thread per CUDA thread).

The op table's rows (value and gradient of each row's graph, float64 and float32) and hypothesis-drawn random
graphs are run through ``nd.function(..., backend="cuda")`` (the CUDA target: its units, its agreement check on the
first call, then its ``DevicePlan`` alone) and compared with ``backend="numpy"`` by the agreement tolerance of
``nbdiff.backends.agreement``; the other tests drive ``DevicePlan`` directly, and the target's status sequence,
fault injection and device arguments.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import nbdiff as nd
from nbdiff.backends.agreement import outputs_disagreement
from nbdiff.errors import InputError, NbdiffError, ShapeError
from nbdiff.runtime.interpreter import Plan
from tests.ops.table import all_cases
from tests.test_property import programs, run

# NBDIFF_TEST_REAL_GPU=1 runs the same suite on a real device (the small grids still cover the work in grid-stride
# loops): that is how it is run where a GPU is lent (see docs/architecture.md, "CUDA on a real GPU").
ON_REAL_GPU = os.environ.get("NBDIFF_TEST_REAL_GPU") == "1"
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and not ON_REAL_GPU:  # pragma: no cover - see the module docstring
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported", allow_module_level=True)

from numba import cuda  # noqa: E402

from nbdiff.cuda import cuda_problem  # noqa: E402
from nbdiff.cuda.device_plan import DevicePlan  # noqa: E402
from nbdiff.cuda.launch import grid_limits  # noqa: E402
from nbdiff.cuda.library import KernelLibrary  # noqa: E402
from nbdiff.cuda.target import inject_fault  # noqa: E402

CASES = all_cases()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """One kernel library (modules written and imported once) for the whole module."""
    with grid_limits(32, 2):
        yield KernelLibrary(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def tiny_grids():
    with grid_limits(32, 2):
        yield


def agree(graph, arrays, library, **kwargs):
    """Run ``graph`` on the device and by the interpreter; assert agreement; return the device plan."""
    expected = Plan(graph).run([np.asarray(a) for a in arrays])
    plan = DevicePlan(graph, library=library)
    got = plan.run(arrays, **kwargs)
    scales = [
        max(float(np.max(np.abs(e[np.isfinite(e)]), initial=0.0)), 1.0) if e.dtype.kind == "f" else None
        for e in expected
    ]
    problem = outputs_disagreement(expected, got, scales)
    assert problem is None, problem
    return plan


def test_the_simulator_is_the_device():
    assert cuda_problem() is None


def row_outputs(case, arrays):
    """The row's inputs, its value and, for differentiable rows, the gradient of its sum w.r.t. its float inputs."""
    variables = [nd.tensor(f"in{i}", dtype=a.dtype.name, ndim=a.ndim) for i, a in enumerate(arrays)]
    out = case.build(*variables)
    outputs = [out]
    wrt = [v for v in variables if v.dtype.startswith("float")]
    if case.grad and wrt and out.dtype.startswith("float"):
        outputs += nd.grad(nd.sum(out), wrt)
    return variables, outputs


def cuda_agrees(variables, outputs, arrays):
    """``backend="cuda"`` against ``backend="numpy"``: the first call (the agreement check) and the second (the
    device plan alone) both agree, and the function ends compiled on the device unless nothing was compiled."""
    expected = nd.function(variables, outputs, backend="numpy")(*arrays)
    f = nd.function(variables, outputs, backend="cuda")
    assert f.wait() in ("compiled (unchecked)",) or f.status.startswith("interpreting"), f.status
    for _ in range(2):
        got = f(*arrays)
        scales = [
            max(float(np.max(np.abs(e[np.isfinite(e)]), initial=0.0)), 1.0) if e.dtype.kind == "f" else None
            for e in expected
        ]
        problem = outputs_disagreement(expected, got, scales)
        assert problem is None, problem
    assert f.status == "compiled" or f.status.startswith("interpreting"), f.status
    assert f.backend == ("cuda" if f.status == "compiled" else "numpy")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_table_row_agrees(case, dtype, library):
    if dtype not in case.dtypes:
        pytest.skip(f"{case.id} is not defined for {dtype}")
    arrays = case.arrays(dtype)
    try:
        variables, outputs = row_outputs(case, arrays)
    except NbdiffError as exc:  # e.g. a row whose gradient is not defined at these inputs' types
        pytest.skip(f"no graph: {exc}")
    cuda_agrees(variables, outputs, arrays)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_graphs_agree(case):
    inputs, program = case
    variables = [nd.tensor(f"x{i}", ndim=a.ndim) for i, a in enumerate(inputs)]
    out = run(program, nd, variables)
    with grid_limits(32, 2):
        cuda_agrees(variables, [out, *nd.grad(nd.sum(out), variables, disconnected="zero")], inputs)


def w1(x):
    return nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_elementwise_graph_runs_without_host_round_trip(dtype, library):
    x = nd.vector("x", dtype=dtype)
    y = w1(x)
    graph = nd.function([x], [y, nd.grad(y, x)], backend="numpy").graph
    arrays = [np.random.default_rng(1).uniform(-1, 1, 200).astype(dtype)]
    plan = agree(graph, arrays, library)
    assert plan.stats.host_steps == 0 and plan.stats.to_host == 0
    assert plan.stats.kernel_steps == len(graph.nodes)


def mlp_step():
    inputs, outputs = mlp_variables()
    return nd.function(inputs, outputs, backend="numpy").graph


def mlp_variables():
    """An MLP training step's inputs and outputs (the loss and its gradients)."""
    X = nd.matrix("X", dtype="float32")
    labels = nd.vector("labels", dtype="int64")
    W1 = nd.matrix("W1", dtype="float32")
    b1 = nd.vector("b1", dtype="float32")
    W2 = nd.matrix("W2", dtype="float32")
    b2 = nd.vector("b2", dtype="float32")
    hidden = nd.relu(X @ W1 + b1)
    log_probs = nd.log_softmax(hidden @ W2 + b2, axis=1)
    loss = -nd.mean(nd.take_along_axis(log_probs, nd.expand_dims(labels, 1), axis=1))
    return [X, labels, W1, b1, W2, b2], [loss, *nd.grad(loss, [W1, b1, W2, b2])]


def mlp_arrays(rng, batch=6, n_in=9, n_hidden=5, n_out=4):
    return [
        rng.standard_normal((batch, n_in)).astype("float32"),
        rng.integers(0, n_out, batch),
        (rng.standard_normal((n_in, n_hidden)) * 0.5).astype("float32"),
        rng.standard_normal(n_hidden).astype("float32"),
        (rng.standard_normal((n_hidden, n_out)) * 0.5).astype("float32"),
        rng.standard_normal(n_out).astype("float32"),
    ]


def test_mlp_step_runs_without_host_round_trip(library):
    graph = mlp_step()
    plan = agree(graph, mlp_arrays(np.random.default_rng(2)), library)
    assert plan.stats.host_steps == 0 and plan.stats.to_host == 0, plan.stats
    assert plan.stats.kernel_steps == len(graph.nodes)


def test_device_inputs_and_device_outputs(library):
    graph = mlp_step()
    arrays = mlp_arrays(np.random.default_rng(3))
    plan = DevicePlan(graph, library=library)
    outputs = plan.run([cuda.to_device(a) for a in arrays], device_outputs=True)
    assert plan.stats.inputs == 0 and plan.stats.outputs == 0
    assert all(hasattr(out, "copy_to_host") for out in outputs)
    expected = Plan(graph).run(arrays)
    problem = outputs_disagreement(expected, [out.copy_to_host() for out in outputs])
    assert problem is None, problem


def test_class_index_out_of_bounds_raises(library):
    graph = mlp_step()
    arrays = mlp_arrays(np.random.default_rng(4))
    arrays[1][0] = 99
    with pytest.raises(ShapeError, match="out of bounds"):
        DevicePlan(graph, library=library).run(arrays)


def test_op_without_kernel_runs_on_the_host(library):
    x = nd.matrix("x")
    graph = nd.function([x], nd.max(nd.exp(x), axis=0), backend="numpy").graph
    plan = agree(graph, [np.random.default_rng(5).standard_normal((3, 4))], library)
    assert plan.stats.host_steps >= 1 and plan.stats.to_host >= 1


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gather_and_repeated_index_scatter_run_on_the_device(dtype, library):
    """``x[idx]`` and ``take_along_axis`` and their gradients (atomic adds: repeated indices accumulate)."""
    x = nd.matrix("x", dtype=dtype)
    idx = nd.vector("idx", dtype="int64")
    cols = nd.matrix("cols", dtype="int64")
    y = nd.sum(nd.tanh(x[idx]) * 2.0) + nd.sum(nd.take_along_axis(x, cols, axis=1) ** 2)
    graph = nd.function([x, idx, cols], [y, nd.grad(y, x)], backend="numpy").graph
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal((4, 3)).astype(dtype), np.array([0, 2, 2, -1, 0]), rng.integers(-3, 3, (4, 5))]
    plan = agree(graph, arrays, library)
    assert plan.stats.host_steps == 0, [n.op.describe() for n in graph.nodes]


# ---------------------------------------------------------------------------------------------------------------
# The CUDA target through nd.function
# ---------------------------------------------------------------------------------------------------------------
def test_status_sequence_of_the_cuda_target():
    x = nd.vector("x")
    y = w1(x)
    f = nd.function([x], [y, nd.grad(y, x)], backend="cuda")
    assert f.wait() == "compiled (unchecked)" and f.backend == "numpy"
    kernels = {e.kernel for e in f.events}
    for kernel in kernels:
        assert [e.state for e in f.events if e.kernel == kernel] == ["queued", "compiling", "ready"]
    a = np.random.default_rng(7).uniform(-1, 1, 40)
    expected = nd.function([x], [y, nd.grad(y, x)], backend="numpy")(a)
    for _ in range(2):
        got = f(a)
        assert (f.status, f.backend) == ("compiled", "cuda")
        assert outputs_disagreement(expected, got) is None


def test_a_wrong_cuda_kernel_is_caught_by_the_agreement_check():
    x = nd.vector("x")
    with inject_fault("wrong-values"):
        f = nd.function([x], nd.tanh(x) * 2.0, backend="cuda")
    assert f.wait() == "compiled (unchecked)"
    a = np.linspace(-1.0, 1.0, 9)
    np.testing.assert_allclose(f(a), np.tanh(a) * 2.0)  # the interpreter's answer
    assert f.status.startswith("fallback: kernel k0 disagrees with the interpreter: output 0"), f.status
    assert "(reproducer: " in f.status and f.backend == "numpy"
    assert [e.state for e in f.events] == ["queued", "compiling", "ready", "failed"]
    np.testing.assert_allclose(f(a), np.tanh(a) * 2.0)
    assert f.backend == "numpy"


def test_a_wrong_summed_output_is_caught_too():
    """The hook changes a kernel whose first output is a block-reduced sum (its atomic add), not only ``out0[i]``."""
    x = nd.vector("x")
    cost = nd.sum(nd.tanh(x) * 2.0)
    with inject_fault("wrong-values"):
        f = nd.function([x], [cost, nd.grad(cost, x)], backend="cuda")
    assert f.wait() == "compiled (unchecked)"
    a = np.linspace(-1.0, 1.0, 9)
    np.testing.assert_allclose(f(a)[0], np.sum(np.tanh(a) * 2.0))  # the interpreter's answer
    assert f.status.startswith("fallback: kernel k0 disagrees with the interpreter: output 0"), f.status


def test_device_inputs_and_outputs_through_nd_function():
    graph_inputs, graph_outputs = mlp_variables()
    arrays = mlp_arrays(np.random.default_rng(8))
    expected = nd.function(graph_inputs, graph_outputs, backend="numpy")(*arrays)
    f = nd.function(graph_inputs, graph_outputs, backend="cuda", device_outputs=True)
    f.wait()
    devices = [cuda.to_device(a) for a in arrays]
    first = f(*devices)  # the agreement check (on host copies), outputs uploaded
    assert f.status == "compiled" and all(hasattr(out, "copy_to_host") for out in first)
    runner = f.compile_status.runner
    runner.device.stats.reset()
    got = f(*devices)
    assert runner.device.stats.inputs == 0 and runner.device.stats.outputs == 0, runner.device.stats
    assert all(hasattr(out, "copy_to_host") for out in got) and f.backend == "cuda"
    assert outputs_disagreement(expected, [out.copy_to_host() for out in got]) is None
    g = nd.function(graph_inputs, graph_outputs, backend="cuda")
    g.wait()
    mixed = [devices[0], *arrays[1:]]
    assert outputs_disagreement(expected, g(*mixed)) is None and g.backend == "cuda"  # host arrays back


def test_device_inputs_are_checked_not_cast():
    x = nd.vector("x")
    f = nd.function([x], nd.tanh(x), backend="cuda")
    f.wait()
    with pytest.raises(InputError, match="device arrays are not cast"):
        f(cuda.to_device(np.ones(3, dtype="float32")))
    with pytest.raises(InputError, match="dimension"):
        f(cuda.to_device(np.ones((3, 2))))
    np.testing.assert_allclose(f(cuda.to_device(np.ones(3))), np.tanh(np.ones(3)))  # the interpreter, host copy

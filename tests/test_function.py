"""The nd.function contract (DESIGN section 2): calling, status, backend, wait, graph, kernels, history."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd


def test_single_output_returns_an_array_and_a_list_returns_a_list():
    x = nd.vector("x")
    single = nd.function([x], nd.exp(x))
    listed = nd.function([x], [nd.exp(x)])
    xv = np.array([0.0, 1.0])
    assert isinstance(single(xv), np.ndarray)
    assert isinstance(listed(xv), list) and len(listed(xv)) == 1
    np.testing.assert_allclose(single(xv), np.exp(xv))


def test_status_backend_wait_before_any_compiler():
    x = nd.vector("x")
    f = nd.function([x], nd.sum(nd.tanh(x)))
    assert f.status.startswith("interpreting")
    assert f.backend == "numpy"
    assert f.wait() == f.status
    assert f.wait(timeout=0.1) == "interpreting"
    assert [record.name for record in f.history][:2] == ["merge", "fold"]
    assert all(isinstance(record.seconds, float) for record in f.history)
    f(np.zeros(3))
    assert f.backend == "numpy"


def test_graph_is_the_graph_that_runs():
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x))
    f = nd.function([x], [y, nd.grad(y, x)])
    assert f.graph.inputs == [x] and f.graph_as_written.inputs == [x]
    assert f.graph_as_written.outputs[0] is y
    assert {node.op.name for node in f.graph_as_written.nodes} >= {"tanh", "sum"}
    assert len(f.graph.nodes) <= len(f.graph_as_written.nodes)


def test_keyword_arguments_by_input_name():
    a, b = nd.scalar("a"), nd.scalar("b")
    f = nd.function([a, b], a - b)
    assert f(b=1.0, a=3.0) == 2.0
    assert f(3.0, b=1.0) == 2.0
    with pytest.raises(nd.errors.InputError, match="unexpected keyword"):
        f(3.0, c=1.0)
    with pytest.raises(nd.errors.InputError, match="twice"):
        f(3.0, a=1.0)


def test_same_kind_casts_are_accepted_and_lossy_ones_refused():
    x = nd.vector("x", dtype="float32")
    k = nd.vector("k", dtype="int64")
    f = nd.function([x, k], x * k)
    out = f([1.5, 2.5], np.array([1, 2], dtype="int32"))
    assert out.dtype == np.float64  # float32 * int64 promotes as in NumPy
    np.testing.assert_allclose(out, [1.5, 5.0])
    with pytest.raises(nd.errors.InputError, match="without losing information"):
        f([1.0, 2.0], [1.5, 2.5])


@pytest.mark.parametrize(
    ("dtype", "value", "shown"),
    [
        ("int64", np.array([1, 2**63], dtype=np.uint64), "9223372036854775808"),  # would wrap to -2**63
        ("int64", 2**63, "9223372036854775808"),  # a Python int NumPy holds as uint64
        ("int8", np.array([5, -129]), "-129"),
        ("uint8", np.array([255, 256], dtype=np.uint16), "256"),
        ("float32", np.array([1.0, 1e300]), "1e+300"),  # would become inf
        ("float32", -1e39, "-1e+39"),
    ],
)
def test_conversions_that_lose_values_are_refused(dtype, value, shown):
    x = nd.tensor("x", dtype=dtype, ndim=np.ndim(value))
    f = nd.function([x], x + x)
    with pytest.raises(nd.errors.InputError) as error:
        f(value)
    message = str(error.value)
    first = message.splitlines()[0]
    assert first.startswith(f"function: argument 0 (x: {dtype}") and "without losing information" in first
    assert f"the value {shown} is outside {dtype}'s range" in first
    assert "declared at test_function.py" in message


def test_narrowing_conversions_that_keep_values_are_accepted():
    big, f32 = nd.vector("big", dtype="int64"), nd.vector("f32", dtype="float32")
    small = nd.vector("small", dtype="int8")
    f = nd.function([big, small, f32], [big + 0, small + 0, f32 + 0])
    values = (
        np.array([0, 2**63 - 1], dtype=np.uint64),
        np.array([-128, 127, 0]),
        np.array([np.inf, -np.inf, np.nan, 3.4028234e38, 1e-300]),  # infinities and NaN stay; tiny values round
    )
    got = f(*values)
    assert [g.dtype for g in got] == [np.int64, np.int8, np.float32]
    np.testing.assert_array_equal(got[0], [0, 2**63 - 1])
    np.testing.assert_array_equal(got[1], [-128, 127, 0])
    np.testing.assert_array_equal(got[2], values[2].astype(np.float32))
    assert [g.size for g in f(*(v[:0] for v in values))] == [0, 0, 0]


def test_static_shape_is_checked_at_call_time():
    x = nd.vector("x", shape=(3,))
    f = nd.function([x], x * 2)
    with pytest.raises(nd.errors.InputError, match=r"float64\[3\]"):
        f(np.ones(4))


def test_unknown_backend_and_device_outputs_without_a_device_are_clear_errors():
    x = nd.vector("x")
    with pytest.raises(nd.errors.BackendError, match="one of"):
        nd.function([x], x, backend="gpu")
    for backend in ("numpy", "auto"):
        with pytest.raises(nd.errors.BackendError, match="device_outputs=True needs a target with device memory"):
            nd.function([x], x, backend=backend, device_outputs=True)


def test_numpy_backend_is_the_interpreter():
    x = nd.vector("x")
    f = nd.function([x], nd.exp(x), backend="numpy")
    np.testing.assert_allclose(f(np.zeros(2)), np.ones(2))
    assert f.backend == "numpy"


def test_rewrites_can_be_turned_off_or_chosen():
    x = nd.vector("x")
    y = nd.log(1 + nd.exp(x))
    written = nd.function([x], y, rewrites=False)
    assert written.history == [] and written.graph.nodes == written.graph_as_written.nodes
    chosen = nd.function([x], y, rewrites=["stability"])
    assert [record.name for record in chosen.history] == ["stability"]
    with pytest.raises(nd.NbdiffError, match="unknown rewrite pass"):
        nd.function([x], y, rewrites=["no-such-pass"])


def test_repr_names_inputs_outputs_and_status():
    x = nd.vector("x")
    text = repr(nd.function([x], nd.exp(x)))
    assert "x" in text and "exp" in text and "interpreting" in text

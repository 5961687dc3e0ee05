"""Table-driven op tests: every row of ``all_cases()`` is checked for value, types, float32, gradients, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.graph.basic import registered_ops
from nbdiff.graph.traversal import toposort
from nbdiff.runtime.interpreter import Plan
from tests.ops.table import all_cases

CASES = all_cases()
GRAD_CASES = [c for c in CASES if c.grad]
BAD_CASES = [(c, b) for c in CASES for b in c.bad]


def variables_for(case, arrays, static=None):
    static = case.static_shapes if static is None else static
    return [
        nd.tensor(f"in{i}", dtype=a.dtype.name, shape=a.shape if static else (None,) * a.ndim)
        for i, a in enumerate(arrays)
    ]


def run(case, arrays, static=None, check_types=True):
    variables = variables_for(case, arrays, static)
    out = case.build(*variables)
    f = nd.function(variables, out)
    f.compile_status.plan = Plan(f.graph, check_types=check_types)  # the verifier: every result matches its static type
    return out, f(*arrays)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_matches_numpy(case, dtype):
    if dtype not in case.dtypes:
        pytest.skip(f"{case.id} is not defined for {dtype}")
    arrays = case.arrays(dtype)
    expected = np.asarray(case.reference(*arrays))
    out, got = run(case, arrays)
    assert got.dtype == expected.dtype, f"{case.id}: dtype {got.dtype} != NumPy's {expected.dtype}"
    assert out.dtype == expected.dtype.name
    assert got.shape == expected.shape
    rtol = 1e-12 if dtype == "float64" else case.rtol32
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_static_shape_inference(case):
    """With fully known input shapes, the inferred output shape is exactly NumPy's."""
    arrays = case.arrays()
    expected = np.asarray(case.reference(*arrays))
    out, got = run(case, arrays, static=True)
    assert out.shape == expected.shape, f"{case.id}: static shape {out.shape} != {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_gradients(case):
    nd.check_grads(
        case.build,
        case.arrays(),
        order=case.order,
        atol=case.grad_atol,
        rtol=case.grad_rtol,
        static_shapes=case.static_shapes,
    )


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_float32_gradient_stays_float32(case):
    if "float32" not in case.dtypes:
        pytest.skip("float64 only")
    arrays = case.arrays("float32")
    variables = variables_for(case, arrays)
    out = case.build(*variables)
    if not out.dtype == "float32":
        pytest.skip(f"output is {out.dtype}")
    wrt = [v for v in variables if v.dtype == "float32"]
    grads = nd.grad(nd.sum(out), wrt, disconnected="zero")
    for g in grads:
        assert g.dtype == "float32", f"{case.id}: gradient dtype {g.dtype}"
    values = nd.function(variables, grads)(*arrays)
    for value in values:
        assert value.dtype == np.float32


@pytest.mark.parametrize("case,bad", BAD_CASES, ids=lambda x: getattr(x, "id", None) or x.description)
def test_bad_input(case, bad):
    with pytest.raises(bad.error) as info:
        bad.build()
    message = str(info.value)
    assert isinstance(info.value, nd.NbdiffError), f"{type(info.value)} is not an nbdiff error"
    assert bad.match in message
    # the user's line is in the cases module, or in table.py's call_on_unknown_shapes for run-time errors
    assert "cases_" in message or "table.py:" in message, f"the message does not name the user's line:\n{message}"


def test_every_registered_op_is_exercised_by_the_table():
    """Each op class appears in some row's graph, gradient graph or rewritten graph (so every op is tested)."""
    seen = set()
    for case in CASES:
        arrays = case.arrays()
        variables = variables_for(case, arrays)
        out = case.build(*variables)
        outputs = [out]
        if case.grad:
            wrt = [v for v in variables if v.dtype.startswith("float")]
            outputs += nd.grad(nd.sum(out), wrt, disconnected="zero")
        seen.update(type(node.op).__name__ for node in toposort(outputs))
        rewritten = nd.function(variables, outputs).graph  # ops that only rewrites create (fused kernels)
        seen.update(type(node.op).__name__ for node in rewritten.nodes)
    missing = sorted(set(registered_ops()) - seen)
    assert not missing, f"ops never exercised by the op table: {missing}"

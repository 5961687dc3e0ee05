"""Jacobians and Hessians of unknown size: a batched pullback (reverse) or pushforward (forward), no unrolling."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import GradientError
from nbdiff.graph.traversal import toposort
from nbdiff.testing import check_grads

N = 5
A = np.random.default_rng(1).normal(size=(3, N))
IDX = np.array([4, 0, 2, 2])

# Vector-valued functions of a vector: elementwise, reductions, matmul, softmax, indexing, a 2-d output.
VECTOR_FUNCTIONS = {
    "elementwise": lambda x: nd.tanh(x) * nd.exp(-(x**2)) + nd.sin(3 * x),
    "reduction": lambda x: x * nd.sum(x**2) - nd.max(x),
    "matmul": lambda x: nd.tanh(nd.constant(A) @ x),
    "softmax": lambda x: nd.softmax(x) * x,
    "log_softmax": lambda x: nd.log_softmax(x**2),
    "indexing": lambda x: x[IDX] * x[1:3].sum() + x[::-1][:4],
    "outer": lambda x: nd.outer(nd.tanh(x), x),
}

# Scalar costs for Hessians.
COSTS = {
    "W1": lambda x: nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x)),
    "reduction": lambda x: nd.prod(x) + nd.max(x) ** 2 + nd.mean(x) ** 3,
    "matmul": lambda x: nd.sum(nd.exp(nd.constant(A) @ x)) + nd.sum(nd.sin(x) * x),
    "logsumexp": lambda x: nd.logsumexp(x) + nd.sum(nd.softmax(x) * x),
    "indexing": lambda x: nd.sum(x[IDX] ** 3) + x[0] * x[-1],
}

X = np.random.default_rng(2).uniform(0.3, 1.5, N)


def _evaluate(build, mode, static):
    x = nd.vector("x", shape=(N,) if static else None)
    return nd.function([x], build(x, mode))(X)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
@pytest.mark.parametrize("name", VECTOR_FUNCTIONS)
def test_jacobian_of_unknown_size_equals_unrolled(name, mode):
    fn = VECTOR_FUNCTIONS[name]
    expected = _evaluate(lambda x, _: nd.jacobian(fn(x), x, mode="unroll"), None, static=True)
    got = _evaluate(lambda x, m: nd.jacobian(fn(x), x, mode=m), mode, static=False)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
@pytest.mark.parametrize("name", COSTS)
def test_hessian_of_unknown_size_equals_unrolled(name, mode):
    fn = COSTS[name]
    expected = _evaluate(lambda x, _: nd.hessian(fn(x), x, mode="unroll"), None, static=True)
    got = _evaluate(lambda x, m: nd.hessian(fn(x), x, mode=m), mode, static=False)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)


def test_batched_jacobian_has_no_unrolled_rows():
    """The graph does not grow with the size: no node per row (the unrolled one indexes y once per row)."""
    x = nd.vector("x")
    jac = nd.jacobian(VECTOR_FUNCTIONS["elementwise"](x), x)
    ops = [node.op.name for node in toposort([jac])]
    assert "stack" not in ops and len(ops) < 60


def test_hessian_matches_finite_differences_of_the_gradient():
    x = nd.vector("x")
    cost = COSTS["matmul"](x)
    gradient = nd.function([x], nd.grad(cost, x))
    hess = nd.function([x], nd.hessian(cost, x))(X)
    eps = 1e-6
    numeric = np.stack([(gradient(X + eps * e) - gradient(X - eps * e)) / (2 * eps) for e in np.eye(N)])
    np.testing.assert_allclose(hess, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["elementwise", "softmax", "indexing"])
def test_batched_jacobian_passes_check_grads(name):
    """The batched Jacobian is a graph like any: its own derivatives agree with finite differences."""
    fn = VECTOR_FUNCTIONS[name]
    check_grads(lambda x: nd.jacobian(fn(x), x, mode="reverse"), [X], order=1)
    check_grads(lambda x: nd.jacobian(fn(x), x, mode="forward"), [X], order=1, modes=("rev",))


def test_auto_mode_unrolls_small_static_sizes_only():
    small, large, unknown = nd.vector("s", shape=(3,)), nd.vector("l", shape=(8,)), nd.vector("u")
    assert "stack" in [n.op.name for n in toposort([nd.jacobian(nd.tanh(small), small)])]
    for x in (large, unknown):
        assert "stack" not in [n.op.name for n in toposort([nd.jacobian(nd.tanh(x), x)])]


def test_hessian_errors_name_hessian():
    x = nd.vector("x")
    with pytest.raises(GradientError, match="hessian.*scalar"):
        nd.hessian(nd.tanh(x), x)
    with pytest.raises(GradientError, match="mode"):
        nd.jacobian(nd.tanh(x), x, mode="sideways")


def test_disconnected_jacobian_raises_in_both_modes():
    x, z = nd.vector("x"), nd.vector("z")
    for mode in ("reverse", "forward"):
        with pytest.raises(GradientError, match="does not depend"):
            nd.jacobian(nd.tanh(z), x, mode=mode)


@pytest.mark.slow
def test_hessian_of_unknown_size_fuses_and_compiles():
    x = nd.vector("x")
    f = nd.function([x], nd.hessian(COSTS["W1"](x), x), backend="cpu")
    assert f.wait() == "compiled (unchecked)"
    np.testing.assert_allclose(f(X), nd.function([x], nd.hessian(COSTS["W1"](x), x, mode="forward"))(X), rtol=1e-12)
    assert f.status == "compiled"
    assert any("gradient" in repr(k) for k in f.kernels)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_float32_hessian_of_unknown_size_stays_float32(mode):
    x = nd.vector("x", dtype="float32")
    f = nd.function([x], nd.hessian(COSTS["W1"](x), x, mode=mode))
    got = f(X.astype("float32"))
    assert got.dtype == np.float32
    assert all(v.dtype == "float32" for node in f.graph.nodes for v in node.outputs if v.dtype.startswith("float"))
    x64 = nd.vector("x")
    expected = nd.function([x64], nd.hessian(COSTS["W1"](x64), x64))(X)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

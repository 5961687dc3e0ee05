"""Numerical behaviour of the reduce and softmax families at the edges the op table does not reach.

logsumexp / softmax / log_softmax at extreme inputs (values and gradients finite and exact), prod's derivatives
with exact zeros, max/min with ties, and mean's run-time element count.
"""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd

EXTREME = np.array([1000.0, -1000.0])


def evaluate(build, *arrays):
    """Build a graph over variables shaped like ``arrays`` (dims unknown) and run it."""
    variables = [nd.tensor(f"in{i}", dtype=a.dtype.name, shape=(None,) * a.ndim) for i, a in enumerate(arrays)]
    outputs = build(*variables)
    return nd.function(variables, list(outputs))(*arrays)


def assert_finite(values):
    for value in values:
        assert np.all(np.isfinite(value)), value


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_logsumexp_extreme_values_and_gradients(dtype):
    x = EXTREME.astype(dtype)
    out, g, jvp = evaluate(
        lambda v: [
            nd.logsumexp(v),
            nd.grad(nd.logsumexp(v), v),
            nd.Rop(nd.logsumexp(v), v, nd.constant(np.ones(2, dtype))),
        ],
        x,
    )
    assert out.dtype == g.dtype == jvp.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, 1000.0)
    np.testing.assert_allclose(g, [1.0, 0.0])
    np.testing.assert_allclose(jvp, 1.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_logsumexp_extreme_axis_and_hessian(dtype):
    x = np.array([[1000.0, -1000.0], [1000.0, 1000.0]], dtype=dtype)

    def build(v):
        out = nd.logsumexp(v, axis=1)
        g = nd.grad(nd.sum(out), v)
        return [out, g, nd.grad(nd.sum(g * g), v)]

    out, g, gg = evaluate(build, x)
    np.testing.assert_allclose(out, [1000.0, 1000.0 + np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(g, [[1.0, 0.0], [0.5, 0.5]])
    assert_finite([gg])
    # d/dx sum(s*s) with s = softmax: 2 s * (s - sum(s*s)) per row; zero in both rows here.
    np.testing.assert_allclose(gg, 0.0, atol=1e-6)


def test_logsumexp_infinities_and_empty():
    (out,) = evaluate(lambda v: [nd.logsumexp(v, axis=1)], np.array([[-np.inf, 0.0], [-np.inf, -np.inf]]))
    np.testing.assert_array_equal(out, [0.0, -np.inf])
    (empty,) = evaluate(lambda v: [nd.logsumexp(v, axis=1)], np.zeros((2, 0)))
    np.testing.assert_array_equal(empty, [-np.inf, -np.inf])  # log(sum(exp([]))) = log(0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_extreme_values_and_gradients(dtype):
    x = EXTREME.astype(dtype)
    w = np.array([2.0, -1.0], dtype=dtype)

    def build(v):
        s = nd.softmax(v)
        cost = nd.sum(s * nd.constant(w))
        return [s, nd.grad(cost, v), nd.Rop(s, v, nd.constant(np.ones(2, dtype))), nd.hessian(cost, v)]

    variables = [nd.vector("x", dtype=dtype, shape=(2,))]
    s, g, jvp, hess = nd.function(variables, build(*variables))(x)
    assert s.dtype == g.dtype == jvp.dtype == hess.dtype == np.dtype(dtype)
    np.testing.assert_allclose(s, [1.0, 0.0])
    assert_finite([g, jvp, hess])
    np.testing.assert_allclose(g, 0.0)  # s*(w - s.w) vanishes when s is one-hot
    np.testing.assert_allclose(jvp, 0.0)  # softmax is shift invariant: J @ ones = 0


def test_softmax_shift_invariance_gradients_match_moderate_inputs():
    base = np.array([[0.3, -1.2, 0.5], [2.0, 0.1, -0.4]])
    w = np.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]])

    def build(v):
        s = nd.softmax(v, axis=1)
        return [s, nd.grad(nd.sum(s * nd.constant(w)), v)]

    s0, g0 = evaluate(build, base)
    s1, g1 = evaluate(build, base + 1000.0)
    np.testing.assert_allclose(s1, s0, rtol=1e-10)
    np.testing.assert_allclose(g1, g0, rtol=1e-9, atol=1e-12)
    expected = s0 * (w - np.sum(w * s0, axis=1, keepdims=True))
    np.testing.assert_allclose(g0, expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_log_softmax_extreme_values_and_gradients(dtype):
    x = EXTREME.astype(dtype)
    w = np.array([2.0, -1.0], dtype=dtype)

    def build(v):
        out = nd.log_softmax(v)
        return [out, nd.grad(nd.sum(out * nd.constant(w)), v), nd.Rop(out, v, nd.constant(np.ones(2, dtype)))]

    out, g, jvp = evaluate(build, x)
    assert out.dtype == g.dtype == jvp.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, [0.0, -2000.0])
    np.testing.assert_allclose(g, w - np.array([1.0, 0.0]) * w.sum())  # w - softmax * sum(w)
    np.testing.assert_allclose(jvp, 0.0)


def test_check_grads_at_large_offsets():
    x = np.array([[1000.3, 999.1, 1001.0], [-1000.0, -999.5, -1000.7]])
    for fn in (lambda v: nd.logsumexp(v, axis=1), lambda v: nd.softmax(v, axis=1), lambda v: nd.log_softmax(v)):
        nd.check_grads(fn, [x], order=2, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# prod with zeros, max/min ties, mean count
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, gradient, hessian",
    [
        ([2.0, 0.0, 3.0], [0.0, 6.0, 0.0], [[0, 3, 0], [3, 0, 2], [0, 2, 0]]),
        ([0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [[0, 3, 0], [3, 0, 0], [0, 0, 0]]),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]),
        ([2.0, 5.0, 3.0], [15.0, 6.0, 10.0], [[0, 3, 5], [3, 0, 2], [5, 2, 0]]),
    ],
)
def test_prod_gradient_and_hessian_are_exact_with_zeros(x, gradient, hessian):
    v = nd.vector("x", shape=(3,))
    g, h = nd.function([v], [nd.grad(nd.prod(v), v), nd.hessian(nd.prod(v), v)])(np.array(x))
    np.testing.assert_array_equal(g, gradient)
    np.testing.assert_array_equal(h, hessian)


def test_prod_third_order_without_zeros():
    rng = np.random.default_rng(3)
    x = rng.choice([-1.0, 1.0], (3, 4)) * rng.uniform(0.5, 2.0, (3, 4))
    nd.check_grads(lambda v: nd.prod(v, axis=1), [x], order=3)


@pytest.mark.parametrize(
    "fn, x, expected",
    [
        (nd.max, [1.0, 3.0, 3.0, -2.0], [0.0, 0.5, 0.5, 0.0]),
        (nd.min, [1.0, -2.0, 3.0, -2.0], [0.0, 0.5, 0.0, 0.5]),
        (nd.max, [4.0, 4.0, 4.0, 4.0], [0.25, 0.25, 0.25, 0.25]),
    ],
)
def test_max_min_ties_split_the_gradient_equally(fn, x, expected):
    (g,) = evaluate(lambda v: [nd.grad(fn(v), v)], np.array(x))
    np.testing.assert_array_equal(g, expected)


def test_mean_counts_elements_at_run_time():
    x = np.arange(12.0).reshape(3, 4)
    out, g = evaluate(lambda v: [nd.mean(v, axis=(0, 1)), nd.grad(nd.mean(v), v)], x)
    assert out == x.mean()
    np.testing.assert_array_equal(g, np.full((3, 4), 1 / 12))

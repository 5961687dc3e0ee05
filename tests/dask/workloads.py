"""The graphs the Dask tests share: W1 (the benchmarks' reference workload) and a logistic-regression loss."""

from __future__ import annotations

import numpy as np

import nbdiff as nd


def w1(x: nd.Variable) -> nd.Variable:
    """``sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x))``: benchmarks/bench_cpu.py's W1."""
    return nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))


def w1_function(backend: str) -> nd.Function:
    """W1's value and its gradient with respect to the data, elementwise per chunk."""
    x = nd.vector("x")
    value = w1(x)
    return nd.function([x], [value, nd.grad(value, x)], backend=backend, name="w1")


def logistic_terms(features: int | None = None):
    """Per-row logistic losses ``softplus(X @ w) - y * (X @ w)`` and the variables (X, y, w)."""
    X = nd.matrix("X", shape=(None, features))
    y = nd.vector("y")
    w = nd.vector("w", shape=(features,))
    z = X @ w
    return nd.softplus(z) - y * z, X, y, w


def in_memory_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, v: np.ndarray, reduce: str = "mean") -> list:
    """The loss, gradient and HVP over all rows at once (the interpreter, one call): what chunks must reproduce."""
    terms, Xv, yv, wv = logistic_terms()
    vv = nd.vector("v")
    cost = nd.mean(terms) if reduce == "mean" else nd.sum(terms)
    gradient = nd.grad(cost, wv)
    f = nd.function([Xv, yv, wv, vv], [cost, gradient, nd.Rop(gradient, wv, vv)], backend="numpy")
    return f(X, y, w, v)


def assert_close(got: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Equal up to ``rtol`` relative to the largest magnitude (float rounding of sums taken in another order)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)

"""Elementwise ops at extreme arguments (sigmoid and softplus at +-1000: finite values and derivatives, no
overflow warnings) and at the kinks of piecewise ops (where the gradient goes on ties)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbdiff as nd

EXTREMES = np.array([-1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0])


def exact_sigmoid(x: np.ndarray) -> np.ndarray:
    """Reference without overflow: both forms, each used where it cannot overflow."""
    with np.errstate(over="ignore", invalid="ignore"):  # the branch not chosen may be inf / inf
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def evaluate(build, x: np.ndarray, dtype: str = "float64") -> list[np.ndarray]:
    """Values of ``build(v)`` at ``x``, with overflow, invalid values and division by zero turned into errors
    (underflow to 0 is the right answer for ``exp(-1000)``)."""
    v = nd.vector("v", dtype=dtype)
    f = nd.function([v], build(v))
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        warnings.simplefilter("error")
        return f(x.astype(dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_is_finite_and_correct_at_extremes(dtype):
    (y,) = evaluate(lambda v: [nd.sigmoid(v)], EXTREMES, dtype)
    assert y.dtype == dtype and np.all(np.isfinite(y))
    np.testing.assert_allclose(y, exact_sigmoid(EXTREMES), rtol=1e-6 if dtype == "float32" else 1e-15, atol=0)
    assert y[0] == 0.0 and y[-1] == 1.0
    assert y[1] == pytest.approx(np.exp(-40.0), rel=1e-6)  # tiny, but not flushed to 0 by 1 - (1 - e)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softplus_is_finite_and_correct_at_extremes(dtype):
    (y,) = evaluate(lambda v: [nd.softplus(v)], EXTREMES, dtype)
    assert y.dtype == dtype and np.all(np.isfinite(y))
    expected = np.maximum(EXTREMES, 0.0) + np.log1p(np.exp(-np.abs(EXTREMES)))
    np.testing.assert_allclose(y, expected, rtol=1e-6 if dtype == "float32" else 1e-15, atol=0)
    assert y[-1] == 1000.0 and y[0] == 0.0


@pytest.mark.parametrize("name", ["sigmoid", "softplus"])
def test_first_and_second_derivatives_are_finite_at_extremes(name):
    op = getattr(nd, name)

    def derivatives(v):
        g = nd.grad(nd.sum(op(v)), v)
        return [g, nd.grad(nd.sum(g), v), nd.Rop(op(v), v, nd.ones_like(v))]

    g, gg, jvp = evaluate(derivatives, EXTREMES)
    s = exact_sigmoid(EXTREMES)
    if name == "sigmoid":
        expected_g, expected_gg = s * (1 - s), s * (1 - s) * (1 - 2 * s)
    else:
        expected_g, expected_gg = s, s * (1 - s)
    for value in (g, gg, jvp):
        assert np.all(np.isfinite(value))
    np.testing.assert_allclose(g, expected_g, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(jvp, expected_g, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(gg, expected_gg, rtol=1e-12, atol=1e-17)


def test_maximum_and_minimum_send_tied_gradients_to_the_first_input():
    a, b = nd.vector("a"), nd.vector("b")
    values = [np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 5.0])]
    for op, expected_a in ((nd.maximum, [1.0, 1.0, 0.0]), (nd.minimum, [1.0, 0.0, 1.0])):
        ga, gb = nd.function([a, b], nd.grad(nd.sum(op(a, b)), [a, b]))(*values)
        np.testing.assert_array_equal(ga, expected_a)
        np.testing.assert_array_equal(ga + gb, [1.0, 1.0, 1.0])  # exactly one input gets each element


def test_clip_gradient_is_one_inside_including_the_bounds():
    x, low, high = nd.vector("x"), nd.vector("low"), nd.vector("high")
    values = [np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5]), np.full(6, -1.0), np.array([1.0] * 5 + [-1.0])]
    gx, glow, ghigh = nd.function([x, low, high], nd.grad(nd.sum(nd.clip(x, low, high)), [x, low, high]))(*values)
    np.testing.assert_array_equal(gx, [0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(glow, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ghigh, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # last: low > high gives high


def test_where_masks_the_gradient_of_the_branch_not_taken():
    """An infinite incoming gradient on one branch does not turn into NaN (inf * 0) on the other."""
    c, a, b = nd.vector("c", dtype="bool"), nd.vector("a"), nd.vector("b")
    chosen = nd.where(c, a, b)
    f = nd.function([c, a, b], nd.grad(nd.sum(nd.log(chosen)), [a, b]))
    with np.errstate(divide="ignore"):  # log(0) and 1 / 0 on purpose
        ga, gb = f(np.array([True, False]), np.array([2.0, 3.0]), np.array([7.0, 0.0]))
    np.testing.assert_array_equal(ga, [0.5, 0.0])
    np.testing.assert_array_equal(gb, [0.0, np.inf])

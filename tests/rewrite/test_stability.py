"""The stability pass at extreme inputs (x = +-1000, 1e-20, ...), for values *and* gradients, in float64 and float32.

Each case first shows that the graph as written (``rewrites=False``) overflows, gives inf/nan or loses every digit
at its points, so the test means something; then that the default pipeline gives finite values and gradients
matching references written by hand (closed forms over ``math``), that ``f.history`` shows the stability rule,
and that the node it built carries the user's line (the case's one-line lambda).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

import nbdiff as nd

HERE = Path(__file__).name
TOLERANCE = {"float64": 1e-12, "float32": 2e-6}


def sigmoid(t: float) -> float:
    """``1 / (1 + exp(-t))`` without overflow."""
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    z = math.exp(t)
    return z / (1.0 + z)


def softplus(t: float) -> float:
    """``log(1 + exp(t))`` without overflow."""
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def log_one_minus(t: float) -> float:
    """``log(1 - t)``, accurate for tiny t."""
    return math.log1p(-t)


def log_sigmoid(t: float) -> float:
    """``log(sigmoid(t)) = -softplus(-t)``."""
    return -softplus(-t)


def log_one_minus_sigmoid(t: float) -> float:
    """``log(1 - sigmoid(t)) = -softplus(t)``."""
    return -softplus(t)


def logsumexp(x: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """``m + log(sum(exp(x - m)))`` in float64, m the slice maximum."""
    x = np.asarray(x, dtype=np.float64)
    top = np.max(x, axis=axis, keepdims=True)
    out = top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax(x: np.ndarray, axis) -> np.ndarray:
    """``exp(x - logsumexp(x))`` in float64."""
    return np.exp(np.asarray(x, dtype=np.float64) - logsumexp(x, axis, True))


@dataclass(frozen=True)
class Case:
    """A formula of ``x`` (a one-line lambda), the points where its written form fails, and exact references."""

    build: Callable[[nd.Variable], nd.Variable]
    points: tuple[float, ...]
    value: Callable[[float], float]
    derivative: Callable[[float], float]
    rules: tuple[str, ...]  # the value rule first, then gradient rules expected to fire

    @property
    def line(self) -> int:
        return self.build.__code__.co_firstlineno

    def __str__(self) -> str:
        return self.rules[0]


EXTREMES = (1000.0, -1000.0, 1e-20)
LOG1MS, LOG1PMS, RECIPROCAL = "log_one_minus_sigmoid", "log1p_minus_sigmoid", "reciprocal_one_plus_exp"
CASES = [
    Case(lambda x: nd.log(1 + x), (1e-20, -3e-17, 1000.0), math.log1p, lambda t: 1 / (1 + t), ("log_one_plus",)),
    Case(lambda x: nd.log(x + 1.0), (1e-20, 1000.0), math.log1p, lambda t: 1 / (1 + t), ("log_one_plus",)),
    Case(lambda x: nd.log(1 - x), (1e-20, -1000.0), log_one_minus, lambda t: 1 / (t - 1), ("log_one_minus",)),
    Case(lambda x: nd.exp(x) - 1, (1e-20, -1e-20, -1000.0), math.expm1, math.exp, ("exp_minus_one",)),
    Case(lambda x: nd.log(1 + nd.exp(x)), EXTREMES + (-50.0,), softplus, sigmoid, ("log_one_plus_exp",)),
    Case(lambda x: nd.log(nd.exp(x) + 1), EXTREMES, softplus, sigmoid, ("log_one_plus_exp",)),
    Case(lambda x: nd.log1p(nd.exp(x)), EXTREMES, softplus, sigmoid, ("log1p_exp",)),
    Case(lambda x: nd.log(nd.sigmoid(x)), EXTREMES, log_sigmoid, lambda t: sigmoid(-t), ("log_sigmoid",)),
    Case(lambda x: nd.log(1 - nd.sigmoid(x)), EXTREMES, log_one_minus_sigmoid, lambda t: -sigmoid(t), (LOG1MS,)),
    Case(lambda x: nd.log1p(-nd.sigmoid(x)), EXTREMES, log_one_minus_sigmoid, lambda t: -sigmoid(t), (LOG1PMS,)),
    Case(lambda x: 1 / (1 + nd.exp(-x)), EXTREMES, sigmoid, lambda t: sigmoid(t) * sigmoid(-t), (RECIPROCAL,)),
]
GRADIENT_RULES = {  # the gradient rules that must fire for the derivative to be finite
    "log_one_plus_exp": ("reciprocal_one_plus_exp", "exp_times_sigmoid_of_negation"),
    "log1p_exp": ("reciprocal_one_plus_exp", "exp_times_sigmoid_of_negation"),
    "log_sigmoid": ("cancel_reciprocal",),
    "log_one_minus_sigmoid": ("cancel_reciprocal",),
    "log1p_minus_sigmoid": ("cancel_reciprocal",),
    "reciprocal_one_plus_exp": ("exp_times_sigmoid_of_negation",),
}


def fired_rules(f) -> list[str]:
    """The names of the stability rules that fired while ``f`` was built."""
    return [firing.rule for record in f.history if record.name == "stability" for firing in record.firings]


def stability_record(f):
    (record,) = [r for r in f.history if r.name == "stability"]
    return record


def broken(actual: np.ndarray, expected: np.ndarray) -> bool:
    """Whether some entry is inf/nan or has lost every digit (relative error above one half)."""
    actual = np.asarray(actual, dtype=np.float64)
    if not np.all(np.isfinite(actual)):
        return True
    return bool(np.any(np.abs(actual - expected) > 0.5 * np.abs(expected)))


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    assert actual.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(actual)), actual
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=TOLERANCE[dtype], atol=0)


def value_and_gradient(build: Callable, inputs: Sequence[nd.Variable], rewrites: bool, weights=None):
    """``nd.function`` of ``[y, grad(sum(weights * y), inputs)...]`` for ``y = build(*inputs)``."""
    y = build(*inputs)
    cost = nd.sum(y if weights is None else y * nd.constant(weights, y.dtype))
    return nd.function(list(inputs), [y, *nd.grad(cost, list(inputs))], rewrites=rewrites)


def run_written(f, *arrays) -> list[np.ndarray]:
    with np.errstate(all="ignore"):  # the written graph overflows on purpose
        return f(*arrays)


def run_rewritten(f, *arrays) -> list[np.ndarray]:
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # nothing may overflow, not even unused
        return f(*arrays)


# ---------------------------------------------------------------------------------------------------------------
# Elementwise forms
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_elementwise_form_is_finite_and_correct_where_the_written_graph_fails(case, dtype):
    x = nd.vector("x", dtype=dtype)
    points = np.array(case.points, dtype=dtype)
    value = np.array([case.value(float(t)) for t in points])
    derivative = np.array([case.derivative(float(t)) for t in points])

    written = run_written(value_and_gradient(case.build, [x], False), points)
    assert broken(written[0], value) or broken(written[1], derivative), f"{written} is fine: the case tests nothing"

    f = value_and_gradient(case.build, [x], True)
    y, dy = run_rewritten(f, points)
    assert_close(y, value, dtype)
    assert_close(dy, derivative, dtype)
    fired = fired_rules(f)
    for name in case.rules + GRADIENT_RULES.get(case.rules[0], ()):
        assert name in fired, f"{name} did not fire: {fired}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_node_built_by_a_stability_rule_names_the_users_line(case):
    x = nd.vector("x")
    f = value_and_gradient(case.build, [x], True)
    record = stability_record(f)
    rule = case.rules[0]
    built = [
        node
        for node in record.after.nodes
        if any(f"rewrite {rule}" in origin.transforms for origin in node.provenance.origins)
    ]
    assert built, f"no node of the graph after the stability pass was built by {rule}"
    for node in built:
        sites = {(origin.site.filename, origin.site.lineno) for origin in node.provenance.origins if origin.site}
        assert any(Path(name).name == HERE and line == case.line for name, line in sites), sites
    assert any(f"{HERE}:{case.line}" in firing.where for firing in record.firings if firing.rule == rule)


def test_softplus_wins_over_log1p_for_log_of_one_plus_exp():
    x = nd.vector("x")
    f = nd.function([x], nd.log(1 + nd.exp(x)))
    assert "log_one_plus" not in fired_rules(f)
    assert [node.op.name for node in stability_record(f).after.nodes] == ["softplus"]


def test_rewritten_outputs_keep_dtype_and_static_shape():
    X = nd.matrix("X", dtype="float32", shape=(2, 3))
    outputs = [nd.log(1 + X), nd.log(nd.sigmoid(X)), nd.log(nd.sum(nd.exp(X), axis=0, keepdims=True))]
    f = nd.function([X], outputs + nd.grad(nd.sum(outputs[1]), [X]))
    assert [v.type for v in f.graph.outputs] == [v.type for v in f.graph_as_written.outputs]
    assert all(a.dtype == np.float32 for a in f(np.ones((2, 3), dtype="float32")))


# ---------------------------------------------------------------------------------------------------------------
# Reductions and two-argument forms
# ---------------------------------------------------------------------------------------------------------------
ROWS = np.array([[1000.0, -1000.0, 1e-20], [-1000.0, -1000.0, -999.0], [1e-20, 3e-20, 0.0]])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("axis, keepdims", [(1, False), (1, True), (0, False), (None, False), ((0, 1), True)])
def test_log_sum_exp_becomes_logsumexp_with_a_softmax_gradient(axis, keepdims, dtype):
    X = nd.matrix("X", dtype=dtype)
    data = ROWS.astype(dtype)

    def build(X):
        return nd.log(nd.sum(nd.exp(X), axis=axis, keepdims=keepdims))

    value, gradient = logsumexp(data, axis, keepdims), softmax(data, axis)
    written = run_written(value_and_gradient(build, [X], False), data)
    assert broken(written[0], value) and not np.all(np.isfinite(written[1]))

    f = value_and_gradient(build, [X], True)
    y, dy = run_rewritten(f, data)
    assert_close(y, value, dtype)
    assert_close(dy, gradient, dtype)
    assert {"log_sum_exp", "exp_over_sum_exp"} <= set(fired_rules(f))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("form", ["log_softmax", "minus_logsumexp"])
def test_log_of_softmax_becomes_log_softmax_with_a_stable_gradient(form, dtype):
    X = nd.matrix("X", dtype=dtype)
    data = ROWS.astype(dtype)
    weights = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [1.0, 1.0, -4.0]])

    def build(X):
        if form == "log_softmax":
            return nd.log(nd.softmax(X, axis=1))
        return X - nd.log(nd.sum(nd.exp(X), axis=1, keepdims=True))

    value = np.asarray(data, np.float64) - logsumexp(data, 1, True)
    gradient = weights - softmax(data, 1) * weights.sum(axis=1, keepdims=True)
    written = run_written(value_and_gradient(build, [X], False, weights), data)
    assert broken(written[0], value) and not np.all(np.isfinite(written[1]))

    f = value_and_gradient(build, [X], True, weights)
    y, dy = run_rewritten(f, data)
    assert_close(y, value, dtype)
    assert_close(dy, gradient, dtype)
    if form == "log_softmax":
        assert {"log_softmax", "cancel_reciprocal"} <= set(fired_rules(f))
    else:
        assert {"minus_logsumexp", "exp_over_sum_exp"} <= set(fired_rules(f))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binary_cross_entropy_through_sigmoid_has_a_finite_gradient_where_the_sigmoid_saturates(dtype):
    """-(y log(sigmoid(x)) + (1 - y) log(1 - sigmoid(x))): both logs become softplus, and the gradient, whose
    written form is (y / s - (1 - y) / (1 - s)) * s * (1 - s) with s = sigmoid(x) (0 * inf = nan where s is 0 or 1),
    becomes y (1 - s) - (1 - y) s by distributing the product over the sum so each term cancels a factor."""
    x, labels = nd.vector("x", dtype=dtype), nd.vector("y", dtype=dtype)
    points = np.array([1000.0, -1000.0, 1000.0, -1000.0, 1e-20, 3.0], dtype=dtype)
    targets = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.25], dtype=dtype)

    def build(x, y):
        return -(y * nd.log(nd.sigmoid(x)) + (1 - y) * nd.log(1 - nd.sigmoid(x)))

    pairs = [(float(t), float(y)) for t, y in zip(points, targets)]
    value = np.array([y * softplus(-t) + (1 - y) * softplus(t) for t, y in pairs])
    derivative = np.array([sigmoid(t) - y for t, y in pairs])
    written = run_written(value_and_gradient(build, [x, labels], False), points, targets)
    assert not np.all(np.isfinite(written[0])) and not np.all(np.isfinite(written[1]))

    f = value_and_gradient(build, [x, labels], True)
    y, dx, _ = run_rewritten(f, points, targets)
    assert_close(y, value, dtype)
    assert_close(dx, derivative, dtype)
    assert {"log_sigmoid", "log_one_minus_sigmoid", "distribute_to_cancel"} <= set(fired_rules(f))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_log_of_exp_plus_exp_is_stable_in_both_arguments(dtype):
    a, b = nd.vector("a", dtype=dtype), nd.vector("b", dtype=dtype)
    left = np.array([1000.0, -1000.0, 1e-20, 1000.0, -1000.0], dtype=dtype)
    right = np.array([999.0, -1000.0, 0.0, -1000.0, -998.0], dtype=dtype)

    def build(a, b):
        return nd.log(nd.exp(a) + nd.exp(b))

    pairs = [(float(s), float(t)) for s, t in zip(left, right)]
    value = np.array([max(s, t) + math.log1p(math.exp(-abs(s - t))) for s, t in pairs])
    da = np.array([sigmoid(s - t) for s, t in pairs])
    db = np.array([sigmoid(t - s) for s, t in pairs])
    written = run_written(value_and_gradient(build, [a, b], False), left, right)
    assert broken(written[0], value) and not np.all(np.isfinite(written[1]))

    f = value_and_gradient(build, [a, b], True)
    y, ga, gb = run_rewritten(f, left, right)
    assert_close(y, value, dtype)
    assert_close(ga, da, dtype)
    assert_close(gb, db, dtype)
    assert {"log_exp_plus_exp", "exp_over_exp_sum"} <= set(fired_rules(f))

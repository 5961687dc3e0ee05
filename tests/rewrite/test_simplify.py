"""Algebraic simplification: each rule fires on its pattern (recorded in ``f.history``), stays away where it would
change a dtype or a shape, never changes a value, keeps float32, and shrinks the W1 value+gradient graph."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.ops.broadcast import BroadcastLike, FillLike, SumToLike
from nbdiff.ops.elemwise import Cast
from nbdiff.rewrite.simplify import SIMPLIFY_RULES
from nbdiff.rewrite.simplify_indexing import INDEXING_RULES

PASSES = ["merge", "fold", "simplify"]
RNG = np.random.default_rng(0)
X = RNG.uniform(0.5, 2.0, 5)  # positive, for log
M = RNG.normal(size=(3, 5))
T = RNG.normal(size=(2, 3, 4))


def firings(f) -> list:
    return [firing for record in f.history for firing in record.firings]


def rule_names(f) -> list[str]:
    return [firing.rule for firing in firings(f)]


def both(inputs, outputs):
    """The function with this module's passes, and the same function as written."""
    return nd.function(inputs, outputs, rewrites=PASSES), nd.function(inputs, outputs, rewrites=False)


def assert_same_values(f, f0, *args) -> None:
    got, want = f(*args), f0(*args)
    got, want = (got, want) if isinstance(got, list) else ([got], [want])
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@dataclass
class Case:
    rule: str
    build: Callable  # () -> (inputs, output, arguments)
    before: str
    after: str
    op_kinds_left: list = field(default_factory=list)


def vector_case(expression: Callable) -> Callable:
    def build():
        x = nd.vector("x")
        return [x], expression(x), [X]

    return build


def matrix_case(expression: Callable) -> Callable:
    def build():
        m = nd.matrix("m")
        return [m], expression(m), [M]

    return build


def tensor_case(expression: Callable) -> Callable:
    def build():
        t = nd.tensor("t", ndim=3)
        return [t], expression(t), [T]

    return build


def two_vectors(expression: Callable) -> Callable:
    def build():
        x, y = nd.vector("x"), nd.vector("y")
        return [x, y], expression(x, y), [X, X[::-1].copy()]

    return build


CASES = [
    Case("mul_by_one", vector_case(lambda x: nd.exp(x) * 1.0), "mul(exp, 1.0)", "exp(x)"),
    Case("mul_by_one", vector_case(lambda x: 1.0 * nd.exp(x)), "mul(1.0, exp)", "exp(x)"),
    Case("mul_by_one", vector_case(lambda x: nd.ones_like(x) * nd.exp(x)), "mul(ones_like, exp)", "exp(x)"),
    Case("add_zero", vector_case(lambda x: nd.exp(x) + 0.0), "add(exp, 0.0)", "exp(x)"),
    Case("add_zero", vector_case(lambda x: nd.zeros_like(x) + nd.exp(x)), "add(zeros_like, exp)", "exp(x)"),
    Case("sub_zero", vector_case(lambda x: nd.exp(x) - 0.0), "sub(exp, 0.0)", "exp(x)"),
    Case("zero_sub", vector_case(lambda x: 0.0 - nd.exp(x)), "sub(0.0, exp)", "negative(exp)"),
    Case(
        "mul_by_zero", vector_case(lambda x: nd.exp(x) * 0.0), "mul(exp, 0.0)", "zeros_like{value=0.0, dtype=None}(exp)"
    ),
    Case("div_by_one", vector_case(lambda x: nd.exp(x) / 1.0), "true_divide(exp, 1.0)", "exp(x)"),
    Case("double_negation", vector_case(lambda x: nd.negative(nd.negative(nd.exp(x)))), "negative(negative)", "exp(x)"),
    Case("mul_by_minus_one", vector_case(lambda x: nd.exp(x) * -1.0), "mul(exp, -1.0)", "negative(exp)"),
    Case("exp_of_log", vector_case(lambda x: nd.exp(nd.log(nd.abs(x)))), "exp(log)", "abs(x)"),
    Case("exp_of_log", vector_case(lambda x: nd.exp(nd.log(nd.square(x)))), "exp(log)", "square(x)"),
    Case("log_of_exp", vector_case(lambda x: nd.log(nd.exp(x))), "log(exp)", "x"),
    Case("add_negative", two_vectors(lambda x, y: x + -y), "add(x, negative)", "sub(x, y)"),
    Case("add_negative", two_vectors(lambda x, y: -x + y), "add(negative, y)", "sub(y, x)"),
    Case("sub_negative", two_vectors(lambda x, y: x - -y), "sub(x, negative)", "add(x, y)"),
    Case("power_of_small_integer", vector_case(lambda x: nd.exp(x) ** 2), "power(exp, 2.0)", "square(exp)"),
    Case("power_of_small_integer", vector_case(lambda x: nd.exp(x) ** 1), "power(exp, 1.0)", "exp(x)"),
    Case("mul_constants", vector_case(lambda x: 2.0 * (3.0 * x)), "mul(2.0, mul)", "mul(6.0, x)"),
    Case("mul_by_reciprocal", two_vectors(lambda x, y: x * (1.0 / y)), "mul(x, true_divide)", "true_divide(x, y)"),
    Case("mul_by_reciprocal", two_vectors(lambda x, y: (1.0 / y) * x), "mul(true_divide, x)", "true_divide(x, y)"),
    Case(
        "sum_of_sum",
        tensor_case(lambda t: nd.sum(nd.sum(t, axis=0), axis=1)),
        "sum{axes=(1,), keepdims=False}(sum)",
        "sum{axes=(0, 2), keepdims=False}(t)",
    ),
    Case(
        "sum_of_sum",
        tensor_case(lambda t: nd.sum(nd.sum(t, axis=1, keepdims=True), axis=(0, 1), keepdims=True)),
        "sum{axes=(0, 1), keepdims=True}(sum)",
        "sum{axes=(0, 1), keepdims=True}(t)",
    ),
    Case(
        "sum_of_sum",
        tensor_case(lambda t: nd.sum(nd.sum(t, axis=1, keepdims=True), axis=(1, 2))),
        "sum{axes=(1, 2), keepdims=False}(sum)",
        "sum{axes=(1, 2), keepdims=False}(t)",
    ),
    Case(
        "sum_no_axes", vector_case(lambda x: nd.sum(nd.exp(x), axis=())), "sum{axes=(), keepdims=False}(exp)", "exp(x)"
    ),
    Case(
        "transpose_of_transpose",
        tensor_case(lambda t: nd.transpose(nd.transpose(t, (1, 2, 0)), (2, 0, 1))),
        "transpose{axes=(2, 0, 1)}(transpose)",
        "t",
    ),
    Case(
        "transpose_of_transpose",
        tensor_case(lambda t: nd.transpose(nd.transpose(t, (1, 2, 0)), (1, 2, 0))),
        "transpose{axes=(1, 2, 0)}(transpose)",
        "transpose{axes=(2, 0, 1)}(t)",
    ),
    Case("cast_noop", vector_case(lambda x: Cast("float64")(nd.exp(x))), "astype{dtype='float64'}(exp)", "exp(x)"),
    Case(
        "broadcast_like_noop",
        vector_case(lambda x: nd.broadcast_like(nd.exp(x), x)),
        "broadcast_like(exp, x)",
        "exp(x)",
    ),
    Case(
        "implicit_broadcast",
        vector_case(lambda x: nd.broadcast_like(nd.sum(x), x) * x),
        "mul(broadcast_like, x)",
        "mul(sum, x)",
    ),
    Case("sum_to_like_noop", vector_case(lambda x: nd.sum_to_like(nd.exp(x), x)), "sum_to_like(exp, x)", "exp(x)"),
    Case(
        "sum_to_like_as_sum",
        matrix_case(lambda m: nd.sum_to_like(nd.exp(m), nd.sum(m, axis=0))),
        "sum_to_like(exp, sum)",
        "sum{axes=(0,), keepdims=False}(exp)",
    ),
    Case(
        "sum_to_like_as_sum",
        matrix_case(lambda m: nd.sum_to_like(nd.exp(m), nd.sum(m, axis=1, keepdims=True))),
        "sum_to_like(exp, sum)",
        "sum{axes=(1,), keepdims=True}(exp)",
    ),
    Case(
        "sum_of_broadcast",
        vector_case(lambda x: nd.sum(nd.broadcast_like(nd.sum(x), x))),
        "sum{axes=(0,), keepdims=False}(broadcast_like)",
        "mul(sum, reduced_size)",
    ),
    Case(
        "fill_of_same_shape",
        vector_case(lambda x: nd.ones_like(nd.exp(nd.tanh(x)))),
        "ones_like{value=1.0, dtype=None}(exp)",
        "ones_like{value=1.0, dtype=None}(tanh)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}-{c.before}" for c in CASES])
def test_rule_fires_on_its_pattern_and_keeps_values(case: Case):
    inputs, output, arguments = case.build()
    f, f0 = both(inputs, output)
    matching = [fi for fi in firings(f) if fi.rule == case.rule]
    assert matching, f"{case.rule} did not fire; fired: {rule_names(f)}"
    assert any(fi.before == case.before and fi.after == case.after for fi in matching), [
        (fi.before, fi.after) for fi in matching
    ]
    rule = next(r for r in SIMPLIFY_RULES if r.name == case.rule)
    assert matching[0].identity == rule.identity and "->" in rule.identity
    assert len(f.graph.nodes) <= len(f.graph_as_written.nodes)
    assert_same_values(f, f0, *arguments)


def test_every_simplification_rule_has_a_case():
    covered = {case.rule for case in CASES} | {"fold_constants", "cast_of_cast"}
    covered |= {r.name for r in INDEXING_RULES}  # their cases are in test_simplify_indexing.py
    assert {r.name for r in SIMPLIFY_RULES} <= covered


# -- where a rule must not fire, or must keep the broadcast ---------------------------------------------------------
def test_dropping_a_one_keeps_the_shape_it_broadcast_to():
    x = nd.vector("x", shape=(5,))
    ones = nd.constant(np.ones((3, 5)))
    f, f0 = both([x], x * ones)
    assert "mul_by_one" in rule_names(f)
    assert [type(node.op) for node in f.graph.nodes] == [BroadcastLike]
    assert f.graph.outputs[0].type == f0.graph.outputs[0].type
    assert_same_values(f, f0, X)


def test_ones_like_a_bigger_variable_keeps_its_shape():
    m, y = nd.matrix("m"), nd.vector("y")
    f, f0 = both([m, y], nd.ones_like(m) * y)
    assert [type(node.op) for node in f.graph.nodes] == [BroadcastLike]  # broadcast_like(y, m): no fill left
    assert_same_values(f, f0, M, X)


def test_exp_of_log_keeps_nan_where_x_may_be_negative():
    x = nd.vector("x")
    f, f0 = both([x], nd.exp(nd.log(x)))
    assert "exp_of_log" not in rule_names(f)
    values = np.array([-2.0, 0.0, 3.0])
    with np.errstate(all="ignore"):
        got, want = f(values), f0(values)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0])


def test_no_rule_changes_a_dtype():
    x32 = nd.vector("x", dtype="float32")
    i = nd.vector("i", dtype="int64")
    outputs = [
        x32 * nd.constant(1.0),  # a float64 one makes the product float64
        i / 1,  # true division of integers gives floats
        nd.exp(nd.log(i)),
        x32 + np.float64(0.0),
    ]
    f, f0 = both([x32, i], outputs)
    fired = set(rule_names(f))
    assert not fired & {"mul_by_one", "div_by_one", "exp_of_log", "add_zero"}
    assert [v.dtype for v in f.graph.outputs] == ["float64", "float64", "float64", "float64"]
    assert_same_values(f, f0, X.astype("float32"), np.array([1, 2, 3]))


def test_fill_values_are_read_in_the_fill_dtype():
    x = nd.vector("x")
    truth = nd.full_like(x, -1.0, dtype="bool")  # stores True, so x * truth is x, not -x
    f, f0 = both([x], x * truth)
    assert "mul_by_minus_one" not in rule_names(f)
    assert_same_values(f, f0, X)


def test_casts_that_lose_values_are_kept():
    x, i = nd.vector("x"), nd.vector("i", dtype="int64")
    outputs = [x.astype("float32").astype("float64"), i.astype("float64").astype("int64")]
    f, f0 = both([x, i], outputs)
    assert "cast_of_cast" not in rule_names(f)
    assert_same_values(f, f0, np.array([0.1, 1e-50]), np.array([2**53 + 1, 3]))


def test_lossless_cast_chain_is_shortened():
    i = nd.vector("i", dtype="int32")
    f, f0 = both([i], i.astype("int64").astype("float64"))
    (firing,) = [fi for fi in firings(f) if fi.rule == "cast_of_cast"]
    assert firing.before == "astype{dtype='float64'}(astype)" and firing.after == "astype{dtype='float64'}(i)"
    assert_same_values(f, f0, np.array([-(2**31), 7, 2**31 - 1], dtype="int32"))


def test_sums_with_mixed_keepdims_that_need_a_reshape_are_kept():
    t = nd.tensor("t", ndim=3)
    f, f0 = both([t], nd.sum(nd.sum(t, axis=0), axis=0, keepdims=True))
    assert "sum_of_sum" not in rule_names(f)
    assert_same_values(f, f0, T)


def test_broadcasts_that_may_change_the_shape_are_kept():
    x, y = nd.vector("x"), nd.vector("y")  # unrelated unknown lengths: x may be broadcast to y's length
    m = nd.matrix("m")
    outputs = [nd.broadcast_like(x, y), nd.broadcast_like(y, m) * x, nd.sum_to_like(nd.exp(m), y)]
    f, f0 = both([x, y, m], outputs)
    assert not set(rule_names(f)) & {"broadcast_like_noop", "implicit_broadcast", "sum_to_like_noop"}
    assert_same_values(f, f0, np.array([2.0]), X, M)
    assert f(np.array([2.0]), X, M)[0].shape == (5,)


def test_sum_of_a_broadcast_needs_proof_of_which_axes_were_broadcast():
    y, m = nd.vector("y"), nd.matrix("m")
    unknown = nd.sum(nd.broadcast_like(y, m), axis=0)  # y's length and m's columns are not provably equal
    y5, m35 = nd.vector("y5", shape=(5,)), nd.matrix("m35", shape=(3, 5))
    static = nd.sum(nd.broadcast_like(y5, m35), axis=0)  # = 3 * y5
    f, f0 = both([y, m, y5, m35], [unknown, static])
    (firing,) = [fi for fi in firings(f) if fi.rule == "sum_of_broadcast"]
    assert firing.after == "mul(y5, 3.0)"
    assert_same_values(f, f0, X, M, X, M)


def test_a_reciprocal_of_a_broadcast_one_keeps_its_shape():
    y = nd.vector("y", shape=(5,))
    x = nd.vector("x", shape=(5,))
    f, f0 = both([x, y], x * (nd.constant(np.ones((3, 5))) / y))
    assert "mul_by_reciprocal" not in rule_names(f)
    assert f.graph.outputs[0].shape == (3, 5)
    assert_same_values(f, f0, X, X + 1.0)


def test_broadcasts_between_two_unknown_lengths_are_recognised_wherever_they_meet():
    """broadcast(broadcast(x, y), x) is broadcast(x, y): the symbolic shapes say so without knowing either length."""
    x, y = nd.vector("x"), nd.vector("y")
    z = x * y
    outputs = [nd.broadcast_like(nd.exp(z) + x, z), nd.sum_to_like(nd.tanh(z) * y, z)]
    f, f0 = both([x, y], outputs)
    assert {"broadcast_like_noop", "sum_to_like_noop"} <= set(rule_names(f))
    assert not any(isinstance(node.op, (BroadcastLike, SumToLike)) for node in f.graph.nodes)
    assert_same_values(f, f0, X, X[::-1].copy())
    assert_same_values(f, f0, np.array([2.0]), X)  # x broadcast to y's length


def test_times_zero_replaces_nan_and_inf_by_zero():
    """The documented choice (as in PyTensor): x * 0 -> 0 even where x is inf or NaN."""
    x = nd.vector("x")
    f = nd.function([x], x * 0.0, rewrites=PASSES)
    np.testing.assert_array_equal(f(np.array([np.inf, np.nan, 1.0])), [0.0, 0.0, 0.0])


# -- float32, provenance --------------------------------------------------------------------------------------------
def w1(dtype: str = "float64"):
    x = nd.vector("x", dtype=dtype)
    y = nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))
    return x, y


def test_float32_graphs_stay_float32():
    x, y = w1("float32")
    f, f0 = both([x], [y, nd.grad(y, x)])
    assert all(out.dtype == "float32" for node in f.graph.nodes for out in node.outputs)
    value, grad = f(X.astype("float32"))
    want_value, want_grad = f0(X.astype("float32"))
    assert value.dtype == grad.dtype == np.float32
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)


def caller_line() -> int:
    return sys._getframe(1).f_lineno


def test_a_node_built_by_a_rule_carries_the_replaced_nodes_line():
    x = nd.vector("x")
    y, line = 0.0 - nd.exp(x), caller_line()
    f = nd.function([x], y, rewrites=PASSES)
    node = f.graph.outputs[0].owner
    assert node.op.name == "negative"
    assert node.provenance.site.lineno == line and node.provenance.site.filename == __file__
    assert "rewrite zero_sub" in node.provenance.transforms


# -- the W1 workload ------------------------------------------------------------------------------------------------
def test_w1_value_and_gradient_graph_shrinks():
    x, y = w1()
    grad, line = nd.grad(y, x), caller_line()
    f, f0 = both([x], [y, grad])
    before, after = len(f.graph_as_written.nodes), len(f.graph.nodes)
    assert (before, after) == (39, 24), (before, after)
    kinds = (BroadcastLike, SumToLike, FillLike)
    assert any(isinstance(node.op, kinds) for node in f.graph_as_written.nodes)
    assert not any(isinstance(node.op, kinds) for node in f.graph.nodes)
    assert [record.name for record in f.history] == PASSES
    assert f.history[-1].nodes_before > f.history[-1].nodes_after
    xs = np.linspace(-3.0, 3.0, 11)
    assert_same_values(f, f0, xs)
    rewritten = [node for node in f.graph.nodes if any(t.startswith("rewrite ") for t in node.provenance.transforms)]
    # A rewritten node names the line of what it replaced: the gradient's line, or w1's for x**2 -> square(x).
    forward_line = w1.__code__.co_firstlineno + 2
    lines = {node.op.name: node.provenance.site.lineno for node in rewritten}
    assert lines.pop("square") == forward_line
    assert lines and set(lines.values()) == {line}


def test_w1_hessian_vector_product_shrinks():
    x, y = w1()
    v = nd.vector("v")
    hvp = nd.Rop(nd.grad(y, x), x, v)
    f, f0 = both([x, v], hvp)
    before, after = len(f.graph_as_written.nodes), len(f.graph.nodes)
    assert after < 0.6 * before, (before, after)
    assert not any(isinstance(node.op, (BroadcastLike, FillLike)) for node in f.graph.nodes)
    xs = np.linspace(-3.0, 3.0, 11)
    assert_same_values(f, f0, xs, np.cos(xs))

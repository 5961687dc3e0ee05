"""The merge and constant-folding passes: what merges and folds, what must not, and that values never change."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import ShapeError
from nbdiff.ops.broadcast import FillLike
from nbdiff.ops.elemwise import Mul
from nbdiff.rewrite.fold import FOLD_MAX_ELEMENTS

LARGE = 5000  # over the 4096 elements up to which constants are hash-consed by value


def rule_names(f) -> list[str]:
    return [firing.rule for record in f.history for firing in record.firings]


def assert_same_values(f, f0, *args) -> None:
    for got, want in zip(f(*args), f0(*args)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# -- merge ------------------------------------------------------------------------------------------------------
def test_equal_subgraphs_with_large_equal_constants_become_one():
    x = nd.vector("x", shape=(LARGE,))
    data = np.linspace(-1.0, 1.0, LARGE)
    first = nd.sum(nd.exp(x * nd.constant(data)))
    second = nd.sum(nd.exp(x * nd.constant(data.copy())))  # built separately: a distinct Constant object
    outputs = [first, second]
    f = nd.function([x], outputs, rewrites=["merge"])
    assert len(f.graph_as_written.nodes) == 6
    assert len(f.graph.nodes) == 3
    assert f.graph.outputs[0] is f.graph.outputs[1]
    assert len(f.graph.constants) == 1
    assert rule_names(f) == ["merge_constants"]
    assert_same_values(f, nd.function([x], outputs, rewrites=False), np.linspace(0.0, 2.0, LARGE))


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda d: np.where(np.arange(LARGE) == 7, 0.5, d), id="one-element-differs"),
        pytest.param(lambda d: d.astype("float32"), id="other-dtype"),
        pytest.param(lambda d: d.reshape(100, 50), id="other-shape"),
        pytest.param(lambda d: -d, id="negative-zero"),
    ],
)
def test_constants_that_differ_do_not_merge(other):
    data = np.zeros(LARGE)
    x = nd.vector("x")
    a = nd.sum(x * nd.sum(nd.constant(data)))
    b = nd.sum(x * nd.sum(nd.constant(other(data))))
    f = nd.function([x], [a, b], rewrites=["merge"])
    assert "merge_constants" not in rule_names(f)
    assert len(f.graph.constants) == 2


def test_constants_with_different_names_stay_apart():
    data = np.ones(3)
    x = nd.vector("x")
    f = nd.function([x], [x * nd.constant(data, name="w"), x * nd.constant(data, name="v")], rewrites=["merge"])
    assert len(f.graph.constants) == 2
    same = nd.function([x], [x * nd.constant(data, name="w"), x * nd.constant(data, name="w")], rewrites=["merge"])
    assert len(same.graph.constants) == 1 and len(same.graph.nodes) == 1


def test_commutative_twins_merge_and_others_do_not():
    x, y = nd.vector("x"), nd.vector("y")
    outputs = [nd.exp(x * y), nd.exp(y * x), x - y, y - x, nd.maximum(x, y) + nd.maximum(y, x)]
    f = nd.function([x, y], outputs, rewrites=["merge"])
    assert f.graph.outputs[0] is f.graph.outputs[1]
    assert f.graph.outputs[2] is not f.graph.outputs[3]
    assert rule_names(f).count("merge_commutative") == 2
    maximum_node = f.graph.outputs[4].owner
    assert maximum_node.inputs[0] is maximum_node.inputs[1]
    xv, yv = np.array([1.0, -2.0, 3.0]), np.array([0.5, 4.0, -1.0])
    assert_same_values(f, nd.function([x, y], outputs, rewrites=False), xv, yv)


def test_merge_firing_records_what_it_merged():
    x = nd.vector("x")
    data = np.arange(float(LARGE))
    f = nd.function([x], [nd.sum(nd.constant(data)) * x, nd.sum(nd.constant(data.copy())) * x], rewrites=["merge"])
    (firing,) = [fi for record in f.history for fi in record.firings]
    assert firing.before == firing.after == "constantfloat64[5000]"
    assert "test_merge_fold.py" in firing.where
    assert f.history[0].name == "merge" and f.history[0].changed


def test_default_pipeline_merges():
    x = nd.vector("x")
    data = np.arange(float(LARGE))
    f = nd.function([x], [x + nd.sum(nd.constant(data)), x + nd.sum(nd.constant(data.copy()))])
    assert len(f.graph.constants) <= 1
    assert f.graph.outputs[0] is f.graph.outputs[1]


# -- fold -------------------------------------------------------------------------------------------------------
def test_scalar_arithmetic_folds():
    x = nd.vector("x")
    y = (nd.constant(2.0) * 3.0 + 1.0) * x
    f = nd.function([x], y, rewrites=["fold"])
    assert len(f.graph.nodes) == 1
    (node,) = f.graph.nodes
    assert isinstance(node.op, Mul) and float(node.inputs[0].data) == 7.0
    assert rule_names(f) == ["fold_constants", "fold_constants"]
    firing = f.history[0].firings[0]
    assert firing.before == "mul(2.0, 3.0)" and firing.after == "6.0"
    assert firing.identity.startswith("op(c1, ..., cn) -> c")
    xv = np.array([1.0, 2.0])
    np.testing.assert_array_equal(f(xv), 7.0 * xv)


def test_fill_and_expand_dims_of_constants_fold():
    m = nd.matrix("m")
    ones = nd.ones_like(nd.constant(np.zeros(3)))
    row = nd.expand_dims(nd.constant([1.0, 2.0, 3.0]), 0)
    outputs = [m * ones, m + row]
    f = nd.function([m], outputs, rewrites=["fold"])
    assert not any(isinstance(node.op, FillLike) for node in f.graph.nodes)
    assert len(f.graph.nodes) == 2
    mv = np.arange(6.0).reshape(2, 3)
    assert_same_values(f, nd.function([m], outputs, rewrites=False), mv)


def test_fill_of_a_small_static_shape_folds():
    x = nd.vector("x", shape=(10,))
    f = nd.function([x], x + nd.zeros_like(x), rewrites=["fold"])
    assert "fold_static_fill" in rule_names(f)
    assert not any(isinstance(node.op, FillLike) for node in f.graph.nodes)


def test_folding_stops_at_the_size_limit():
    huge = nd.vector("huge", shape=(10**7,))
    f = nd.function([huge], nd.zeros_like(huge), rewrites=["fold"])
    assert [type(node.op) for node in f.graph.nodes] == [FillLike]
    at_limit = nd.broadcast_to(nd.constant(1.0), (FOLD_MAX_ELEMENTS,))
    over_limit = nd.broadcast_to(nd.constant(1.0), (FOLD_MAX_ELEMENTS + 1,))
    f = nd.function([], [at_limit, over_limit], rewrites=["fold"])
    assert f.graph.outputs[0].owner is None  # folded to a constant
    assert f.graph.outputs[1].owner is not None  # left to run time
    assert f()[1].shape == (FOLD_MAX_ELEMENTS + 1,)


def test_a_node_whose_perform_fails_is_left_for_run_time():
    bad = nd.sum_to_like(nd.constant(np.ones(3)), nd.constant(np.ones(2)))  # only the run time can tell
    f = nd.function([], bad, rewrites=["fold"])
    assert len(f.graph.nodes) == 1
    with pytest.raises(ShapeError, match="test_merge_fold.py"):
        f()


def test_folding_keeps_float32():
    x = nd.vector("x", dtype="float32")
    c = nd.constant(2.0, "float32") * nd.constant(3.0, "float32")
    f = nd.function([x], x * c, rewrites=["fold"])
    (node,) = f.graph.nodes
    assert node.inputs[1].dtype == "float32" and f(np.ones(2, "float32")).dtype == np.float32


def test_equal_large_folded_constants_merge():
    x = nd.vector("x", shape=(LARGE,))
    data = np.arange(float(LARGE))
    outputs = [x * (nd.constant(data) * 2.0), x * (nd.constant(data.copy()) * 2.0)]
    f = nd.function([x], outputs, rewrites=["fold"])  # fold alone: its own merge step joins the results
    assert len(f.graph.constants) == 1
    assert f.graph.outputs[0] is f.graph.outputs[1]
    assert_same_values(f, nd.function([x], outputs, rewrites=False), np.ones(LARGE))

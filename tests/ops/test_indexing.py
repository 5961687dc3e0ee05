"""Indexing tests the op table cannot express: unknown result sizes, random indices against NumPy, the structure
of gradient graphs (IndexAdd <-> Index), accumulation of repeated indices and run-time errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdiff as nd
from nbdiff.errors import IndexingError, ShapeError, UndefinedGradientError
from nbdiff.graph.traversal import toposort
from nbdiff.ops.indexing import AddAlongAxis, Index, IndexAdd, TakeAlongAxis

SHAPE = (3, 4, 2)


def _ops(outputs):
    return [type(node.op) for node in toposort(outputs)]


# -- random indices against NumPy ----------------------------------------------------------------------------------
_bounds = st.one_of(st.none(), st.integers(-5, 5))
_slices = st.builds(slice, _bounds, _bounds, st.one_of(st.none(), st.sampled_from([1, 2, 3, -1, -2])))
_int_arrays = st.builds(
    lambda shape, seed: np.random.default_rng(seed).integers(-2, 2, shape),
    st.sampled_from([(2,), (1,), (2, 2), (3, 1)]),
    st.integers(0, 100),
)
_masks = st.builds(
    lambda n, seed: np.random.default_rng(seed).uniform(size=n) > 0.4, st.integers(2, 4), st.integers(0, 9)
)
_items = st.one_of(st.integers(-2, 1), _slices, st.none(), st.just(Ellipsis), _int_arrays, _masks)


def _numpy_or_error(array, index):
    try:
        return array[index]
    except IndexError as exc:
        return exc


@given(st.lists(_items, max_size=4).map(tuple), st.booleans())
def test_random_indices_match_numpy(index, static):
    """Value and static shape of ``x[index]`` agree with NumPy; NumPy's IndexError is an nbdiff error."""
    array = np.arange(np.prod(SHAPE), dtype=float).reshape(SHAPE)
    expected = _numpy_or_error(array, index)
    x = nd.tensor("x", shape=SHAPE if static else (None,) * len(SHAPE))
    if isinstance(expected, Exception):
        with pytest.raises(nd.NbdiffError):
            nd.function([x], x[index])(array)
        return
    y = x[index]
    np.testing.assert_array_equal(nd.function([x], y)(array), expected)
    if static:
        assert y.shape == expected.shape
    else:
        assert y.type.accepts(expected.shape)


# -- static shapes ---------------------------------------------------------------------------------------------------
def test_symbolic_mask_gives_unknown_size():
    x = nd.matrix("x", shape=(4, 3))
    m = nd.vector("m", dtype="bool", shape=(4,))
    y = x[m]
    assert y.type.shape == (None, 3)
    mask = np.array([True, False, True, True])
    value = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(nd.function([x, m], y)(value, mask), value[mask])


def test_constant_mask_gives_known_size():
    x = nd.matrix("x", shape=(4, None))
    assert x[np.array([True, False, True, True])].type.shape == (3, None)
    assert x[nd.constant(np.array([False, False, True, False]))].type.shape == (1, None)


def test_boolean_scalar_index_matches_numpy():
    x = nd.matrix("x", shape=(2, 3))
    value = np.arange(6.0).reshape(2, 3)
    for flag in (True, False):
        y = x[flag]
        assert y.shape == value[flag].shape
        np.testing.assert_array_equal(nd.function([x], y)(value), value[flag])


def test_empty_list_index():
    x = nd.vector("x", shape=(3,))
    y = x[[]]
    assert y.shape == (0,)
    assert nd.function([x], y)(np.ones(3)).shape == (0,)


def test_slice_of_unknown_dimension_is_unknown():
    x = nd.matrix("x", shape=(None, 6))
    assert x[1:3, ::-4].type.shape == (None, 2)


# -- graph structure -------------------------------------------------------------------------------------------------
def test_same_index_twice_is_one_node():
    x = nd.matrix("x")
    assert x[1:3, ::-1] is x[1:3, ::-1]
    assert x[[0, 1]] is x[[0, 1]]  # small constant index arrays are hash-consed too


def test_describe_reads_like_numpy():
    x = nd.tensor("x", ndim=3)
    i = nd.vector("i", dtype="int64")
    assert x[0, ::-1, None, ..., i].owner.op.describe() == "index[0, ::-1, None, ..., array]"


def test_gradient_is_index_add_and_its_gradient_is_index():
    x = nd.vector("x")
    i = nd.vector("i", dtype="int64")
    g = nd.grad(nd.sum(x[i] ** 2), x)
    assert IndexAdd in _ops([g])
    gg = nd.grad(nd.sum(g * g), x)
    assert _ops([gg]).count(Index) >= 2
    value, index = np.array([1.0, 2.0, 3.0]), np.array([2, 2, 0])
    got = nd.function([x, i], gg)(value, index)
    counts = np.bincount(index, minlength=3)
    np.testing.assert_allclose(got, 8 * counts**2 * value)  # g = 2 c x, sum(g*g) = 4 c^2 x^2


def test_pushforward_is_index_of_tangent():
    x = nd.matrix("x")
    t = nd.matrix("t")
    y = nd.Rop(x[::-1, [1, 1]], x, t)
    assert IndexAdd not in _ops([y])
    value, tangent = np.random.default_rng(0).normal(size=(2, 2, 3))
    np.testing.assert_array_equal(nd.function([x, t], y)(value, tangent), tangent[::-1, [1, 1]])


def test_repeated_indices_accumulate():
    x = nd.matrix("x")
    g = nd.grad(nd.sum(x[[0, 0, 2], 1]), x)
    expected = np.zeros((3, 2))
    expected[0, 1], expected[2, 1] = 2.0, 1.0
    np.testing.assert_array_equal(nd.function([x], g)(np.ones((3, 2))), expected)


def test_mask_gradient_scatters_to_the_mask():
    x = nd.matrix("x")
    m = nd.matrix("m", dtype="bool")
    g = nd.grad(nd.sum(x[m] * 3.0), x)
    mask = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(nd.function([x, m], g)(np.ones((2, 2)), mask), 3.0 * mask)


def test_take_along_axis_repeats_accumulate():
    a = nd.matrix("a")
    i = nd.matrix("i", dtype="int64")
    g = nd.grad(nd.sum(nd.take_along_axis(a, i, 0)), a)
    assert AddAlongAxis in _ops([g])
    index = np.array([[1, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(nd.function([a, i], g)(np.ones((2, 3)), index), [[0, 1, 0], [2, 1, 2]])
    gg = nd.grad(nd.sum(g * a), a)
    assert TakeAlongAxis in _ops([gg]) or AddAlongAxis in _ops([gg])


def test_take_along_axis_default_axis_sorts_with_argsort():
    a = nd.matrix("a")
    value = np.random.default_rng(1).normal(size=(3, 5))
    got = nd.function([a], nd.take_along_axis(a, np.argsort(value, axis=-1)))(value)
    np.testing.assert_array_equal(got, np.sort(value, axis=-1))


def test_float32_gradient_stays_float32():
    x = nd.vector("x", dtype="float32")
    g = nd.grad(nd.sum(x[[1, 1, 0]] * x[[0, 1, 1]]), x)
    assert g.dtype == "float32"
    assert nd.function([x], g)(np.ones(2, np.float32)).dtype == np.float32


# -- errors ----------------------------------------------------------------------------------------------------------
def test_no_gradient_with_respect_to_an_index():
    x = nd.vector("x")
    i = nd.vector("i", dtype="int64")
    with pytest.raises(UndefinedGradientError):
        nd.grad(nd.sum(x[i]), i)


def test_run_time_out_of_bounds_names_op_and_line():
    x = nd.vector("x")
    i = nd.vector("i", dtype="int64")
    f = nd.function([x, i], x[i])
    with pytest.raises(ShapeError) as info:
        f(np.zeros(3), np.array([1, -4]))
    message = str(info.value)
    assert message.startswith("index:") and "out of bounds" in message
    assert "test_indexing.py" in message and "x[i]" in message


def test_run_time_out_of_bounds_in_gradient_is_an_nbdiff_error():
    x = nd.vector("x")
    i = nd.vector("i", dtype="int64")
    f = nd.function([x, i], nd.grad(nd.sum(x[i]), x))
    with pytest.raises(ShapeError, match="out of bounds"):
        f(np.zeros(3), np.array([7]))


def test_construction_error_names_op_shapes_and_line():
    x = nd.matrix("x", shape=(2, 3))
    with pytest.raises(IndexingError) as info:
        x[1, 3]
    message = str(info.value)
    assert message.startswith("index:") and "float64[2, 3]" in message and "test_indexing.py" in message


def test_index_add_rejects_values_that_do_not_fit():
    x = nd.matrix("x", shape=(3, 4))
    with pytest.raises(ShapeError, match="do not fit"):
        IndexAdd((0,))(x, nd.matrix("g"))

"""``nd.dask.map_blocks`` on the threaded scheduler: outputs per row and combined over chunks agree with one
in-memory call; chunking that cannot work and outputs that cannot be combined raise typed errors."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import GraphError, InputError, ShapeError
from tests.dask.workloads import assert_close, w1_function


@pytest.fixture(autouse=True)
def threaded():
    with dask.config.set(scheduler="threads"):
        yield


def test_w1_value_and_gradient_over_ragged_chunks():
    f = w1_function("numpy")
    x = np.linspace(-3.0, 3.0, 10_001)
    value, gradient = nd.dask.map_blocks(f, da.from_array(x, chunks=3_000))  # 3000, 3000, 3000, 1001
    assert value.shape == () and gradient.chunks == ((3000, 3000, 3000, 1001),)
    assert value.dtype == gradient.dtype == np.float64
    got_value, got_gradient = dask.compute(value, gradient)
    expected_value, expected_gradient = f(x)
    assert_close(got_value, expected_value, 1e-12)
    np.testing.assert_array_equal(got_gradient, expected_gradient)  # elementwise: the same numbers, chunk by chunk


def test_row_outputs_take_their_other_dimensions_and_dtype_from_the_graph():
    X, W = nd.matrix("X"), nd.matrix("W")
    scale = nd.scalar("scale", dtype="float32")
    f = nd.function([X, W, scale], [nd.tanh(X @ W) * scale, nd.max(X), nd.min(X), nd.sum(W)], backend="numpy")
    Xv = np.random.default_rng(0).standard_normal((50, 4))
    Wv = np.arange(12.0).reshape(4, 3) / 10
    rows, largest, smallest, weights = nd.dask.map_blocks(f, da.from_array(Xv, chunks=(16, 4)), Wv, 2.0)
    assert rows.shape == (50, 3) and rows.chunks == ((16, 16, 16, 2), (3,)) and rows.dtype == np.float64
    got = dask.compute(rows, largest, smallest, weights)
    for value, expected in zip(got, f(Xv, Wv, 2.0)):
        assert_close(value, expected, 1e-12)
    assert float(got[3]) == float(Wv.sum())  # independent of the rows: taken once, not summed per chunk


def test_a_single_output_comes_back_as_one_array():
    x = nd.vector("x")
    f = nd.function([x], nd.exp(x), backend="numpy")
    y = nd.dask.map_blocks(f, da.arange(10.0, chunks=4))
    np.testing.assert_allclose(y.compute(), np.exp(np.arange(10.0)))


def test_a_mean_over_the_rows_is_refused_with_the_way_out():
    x = nd.vector("x")
    f = nd.function([x], nd.mean(x * 2.0), backend="numpy")
    with pytest.raises(GraphError, match="row_cost"):
        nd.dask.map_blocks(f, da.arange(10.0, chunks=4))


def test_an_output_whose_length_is_not_the_rows_is_refused():
    x = nd.vector("x")
    f = nd.function([x], nd.concatenate([x, x]), backend="numpy")
    with pytest.raises(ShapeError, match="one entry per row"):
        nd.dask.map_blocks(f, da.arange(10.0, chunks=4))


def test_inputs_chunked_differently_along_the_rows_are_refused():
    x, y = nd.vector("x"), nd.vector("y")
    f = nd.function([x, y], x * y, backend="numpy")
    with pytest.raises(ShapeError, match=r"chunked differently along their rows.*rechunk"):
        nd.dask.map_blocks(f, da.ones(10, chunks=5), da.ones(10, chunks=4))
    with pytest.raises(ShapeError, match="10 rows but y has 12"):
        nd.dask.map_blocks(f, da.ones(10, chunks=5), da.ones(12, chunks=5))


def test_a_matrix_split_across_its_columns_is_refused():
    X = nd.matrix("X")
    f = nd.function([X], nd.sum(X, axis=1), backend="numpy")
    with pytest.raises(ShapeError, match=r"only\s+axis 0 may be split.*rechunk\(\{1: -1\}\)"):
        nd.dask.map_blocks(f, da.ones((10, 6), chunks=(5, 3)))


def test_bad_arguments_raise_input_errors():
    x, w = nd.vector("x"), nd.vector("w")
    f = nd.function([x, w], x * nd.sum(w), backend="numpy")
    with pytest.raises(InputError, match="no argument is a dask array"):
        nd.dask.map_blocks(f, np.ones(3), np.ones(2))
    with pytest.raises(InputError, match="expected 2 argument"):
        nd.dask.map_blocks(f, da.ones(3, chunks=2))
    with pytest.raises(InputError, match="expected 1 dimension"):
        nd.dask.map_blocks(f, da.ones((3, 2), chunks=2), np.ones(2))
    with pytest.raises(InputError, match="cannot convert a dask array of dtype complex128"):
        nd.dask.map_blocks(f, da.ones(3, chunks=2, dtype=complex), np.ones(2))
    with pytest.raises(InputError, match=r"argument 1 \(w"):
        nd.dask.map_blocks(f, da.ones(3, chunks=2), np.ones((2, 2)))


def test_a_probe_that_fails_names_the_function_and_why():
    x, w = nd.vector("x"), nd.vector("w")
    f = nd.function([x, w], x * w, backend="numpy", name="scaled")
    with pytest.raises(ShapeError, match=r"map_blocks\(scaled\).*rows of zeros"):
        nd.dask.map_blocks(f, da.ones(10, chunks=5), np.ones(10))  # w is whole, the chunks are not


def rosenbrock_value_and_gradient(q: nd.Variable) -> list:
    cost = (1 - q[0]) ** 2 + 100 * (q[1] - q[0] ** 2) ** 2
    return [cost, nd.grad(cost, q)]


def test_a_sweep_over_a_grid_of_parameters_through_vmap():
    """``nd.vmap`` makes a function of one parameter vector row-wise in a matrix of them: map_blocks sweeps it."""
    P = nd.matrix("P", shape=(None, 2))
    sweep = nd.function([P], nd.vmap(rosenbrock_value_and_gradient)(P), backend="numpy")
    axis = np.linspace(-2.0, 2.0, 101)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    values, gradients = nd.dask.map_blocks(sweep, da.from_array(grid, chunks=(2_000, 2)))
    assert values.chunks[0] == gradients.chunks[0] == (2_000,) * 5 + (201,) and gradients.shape == (10_201, 2)
    values, gradients = dask.compute(values, gradients)
    p = nd.vector("p", shape=(2,))
    one = nd.function([p], rosenbrock_value_and_gradient(p), backend="numpy")
    for row in (0, 5_000, 10_200):
        value, gradient = one(grid[row])
        assert_close(values[row], value, 1e-12)
        assert_close(gradients[row], gradient, 1e-12)

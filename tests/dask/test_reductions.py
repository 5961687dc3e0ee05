"""``nd.dask.row_cost`` on the threaded scheduler: a mean over a ragged last chunk weighs by rows, sums and lists
of parameters, and typed errors for data, parameters and terms that cannot work."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import GradientError, InputError, MissingInputError, ShapeError
from tests.dask.workloads import assert_close, in_memory_logistic, logistic_terms


@pytest.fixture(autouse=True)
def threaded():
    with dask.config.set(scheduler="threads"):
        yield


def data(rows: int = 1_003, features: int = 5, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features))
    y = (rng.random(rows) < 0.5).astype(np.float64)
    w, v = rng.standard_normal(features), rng.standard_normal(features)
    return X, y, w, v


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_value_gradient_and_hvp_over_a_ragged_last_chunk(reduce):
    X, y, w, v = data()
    terms, Xs, ys, ws = logistic_terms()
    cost = nd.dask.row_cost(terms, [Xs, ys], ws, reduce=reduce, backend="numpy")
    Xd, yd = da.from_array(X, chunks=(250, 5)), da.from_array(y, chunks=250)  # 4 x 250 rows, then 3
    value, gradient = cost.value_and_grad(Xd, yd, w)
    product = cost.hvp(Xd, yd, w, v)
    assert value.shape == () and gradient.shape == (5,) and product.shape == (5,)
    got = dask.compute(value, gradient, product, cost.value(Xd, yd, w), cost.grad(Xd, yd, w))
    expected_value, expected_gradient, expected_product = in_memory_logistic(X, y, w, v, reduce)
    expected = [expected_value, expected_gradient, expected_product, expected_value, expected_gradient]
    for got_one, expected_one in zip(got, expected):
        assert_close(got_one, expected_one, 1e-12)
    if reduce == "mean":  # the mean of the chunks' means weighs the 3-row chunk like the others: visibly wrong
        chunk_means = [in_memory_logistic(X[i : i + 250], y[i : i + 250], w, v)[0] for i in range(0, 1_003, 250)]
        assert abs(np.mean(chunk_means) - expected_value) > 1e-3


def test_a_list_of_parameters_gives_lists():
    X, y, w, v = data()
    Xs, ys, ws, b = nd.matrix("X"), nd.vector("y"), nd.vector("w"), nd.scalar("b")
    z = Xs @ ws + b
    cost = nd.dask.row_cost(nd.softplus(z) - ys * z, [Xs, ys], [ws, b], backend="numpy")
    Xd, yd = da.from_array(X, chunks=(300, 5)), da.from_array(y, chunks=300)
    value, (gw, gb) = cost.value_and_grad(Xd, yd, w, 0.25)
    (hw, hb) = cost.hvp(Xd, yd, w, 0.25, v, 0.5)
    assert gb.shape == () and hb.shape == ()
    full = nd.mean(nd.softplus(z) - ys * z)
    grads = nd.grad(full, [ws, b])
    vw, vb = nd.vector("vw"), nd.scalar("vb")
    f = nd.function([Xs, ys, ws, b, vw, vb], [full, *grads, *nd.Rop(grads, [ws, b], [vw, vb])], backend="numpy")
    for got, expected in zip(dask.compute(value, gw, gb, hw, hb), f(X, y, w, 0.25, v, 0.5)):
        assert_close(got, expected, 1e-12)


def test_the_data_must_be_chunked_and_the_parameters_in_memory():
    X, y, w, _ = data(rows=20)
    terms, Xs, ys, ws = logistic_terms(features=5)
    cost = nd.dask.row_cost(terms, [Xs, ys], ws, backend="numpy")
    Xd, yd = da.from_array(X, chunks=(10, 5)), da.from_array(y, chunks=10)
    with pytest.raises(InputError, match=r"data argument 1 \(y.*must be a dask array"):
        cost.value(Xd, y, w)
    with pytest.raises(InputError, match="only the data may be chunked"):
        cost.value(Xd, yd, da.from_array(w, chunks=2))
    with pytest.raises(ShapeError, match="chunked differently"):
        cost.value(Xd, da.from_array(y, chunks=7), w)
    with pytest.raises(InputError, match=r"argument 2 \(w.*expected shape"):
        cost.value(Xd, yd, np.ones(3))


def test_terms_data_and_reduce_are_checked_when_built():
    terms, Xs, ys, ws = logistic_terms()
    with pytest.raises(GradientError, match="one entry per row"):
        nd.dask.row_cost(nd.mean(terms), [Xs, ys], ws)
    with pytest.raises(GradientError, match="floating point"):
        nd.dask.row_cost(nd.vector("labels", dtype="int64"), [Xs, ys], ws)
    with pytest.raises(InputError, match="reduce must be one of"):
        nd.dask.row_cost(terms, [Xs, ys], ws, reduce="max")
    with pytest.raises(InputError, match="must be input variables"):
        nd.dask.row_cost(terms, [Xs, ys], ws * 2.0)
    with pytest.raises(InputError, match="no rows"):
        nd.dask.row_cost(terms, [Xs, ys, nd.scalar("s")], ws)
    with pytest.raises(MissingInputError, match="y"):
        nd.dask.row_cost(terms, [Xs], ws)  # y is neither data nor a parameter

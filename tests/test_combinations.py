"""The features together: shapes as values, vmap, Jacobians and Hessians of any size, user ops, scan, pickling and
the cpu backend, in the combinations users write."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import GraphError

WAIT = 120.0


@nd.elemwise(derivatives=[lambda a: nd.cos(a)])
def user_sin(a):
    """A user elemwise op at module level (so functions using it pickle)."""
    return math.sin(a)


def mean_by_hand():
    """A mean written with ``x.shape[0]`` (x of unknown size), its Jacobian and Hessian."""
    x = nd.vector("x")
    cost = nd.sum(nd.tanh(x) ** 2) / x.shape[0]
    return [x], [nd.jacobian(nd.tanh(x) / x.shape[0], x), nd.hessian(cost, x)]


def mean_by_hand_expected(xv):
    t, n = np.tanh(xv), len(xv)
    second = 2 * (1 - t**2) ** 2 - 4 * t**2 * (1 - t**2)
    return [np.diag((1 - t**2) / n), np.diag(second / n)]


def hessian_through_scan():
    """A Hessian of a cost computed by a scan over x (unknown length)."""
    x = nd.vector("x")
    carry, ys = nd.scan(lambda c, xi: (c * nd.sin(xi) + xi**2, c), nd.constant(1.0), x)
    return [x], [nd.hessian(carry + nd.sum(ys), x)]


def hessian_through_scan_expected(xv):
    """Central differences of the gradient (the gradient itself checked elsewhere)."""
    x = nd.vector("x")
    carry, ys = nd.scan(lambda c, xi: (c * nd.sin(xi) + xi**2, c), nd.constant(1.0), x)
    grad = nd.function([x], nd.grad(carry + nd.sum(ys), x), backend="numpy")
    eps, eye = 1e-5, np.eye(len(xv))
    return [np.stack([(grad(xv + eps * e) - grad(xv - eps * e)) / (2 * eps) for e in eye])]


def vmapped_user_op():
    """``nd.vmap`` of a function using a user elemwise op and a size, over a batch of unknown size."""
    X = nd.matrix("X")
    return [X], [nd.vmap(lambda r: user_sin(r) * nd.sum(r) / r.shape[0])(X)]


def vmapped_user_op_expected(xv):
    return [np.sin(xv) * xv.mean(axis=1, keepdims=True)]


def jacobian_of_vmap():
    """A Jacobian (unknown size) of a vmapped function."""
    x = nd.vector("x")
    rows = nd.vmap(lambda r: nd.full((2,), r) * nd.exp(r))(x)
    return [x], [nd.jacobian(nd.sum(rows, axis=1), x)]


def jacobian_of_vmap_expected(xv):
    return [np.diag(2 * (np.exp(xv) + xv * np.exp(xv)))]


GRAPHS = {
    "mean-by-hand": (mean_by_hand, mean_by_hand_expected, (5,)),
    "hessian-through-scan": (hessian_through_scan, hessian_through_scan_expected, (5,)),
    "vmapped-user-op": (vmapped_user_op, vmapped_user_op_expected, (3, 4)),
    "jacobian-of-vmap": (jacobian_of_vmap, jacobian_of_vmap_expected, (4,)),
}


def _argument(shape):
    return np.linspace(-1.0, 1.0, math.prod(shape)).reshape(shape)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_each_combination_builds_and_gives_the_right_values(name):
    build, expected, shape = GRAPHS[name]
    inputs, outputs = build()
    xv = _argument(shape)
    got = nd.function(inputs, outputs, backend="numpy")(xv)
    for a, b in zip(got, expected(xv)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_each_combination_pickles_and_answers_as_the_original(name):
    build, _, shape = GRAPHS[name]
    f = nd.function(*build(), backend="numpy")
    g = pickle.loads(pickle.dumps(f))
    xv = _argument(shape)
    for a, b in zip(g(xv), f(xv)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRAPHS))
def test_each_combination_compiles_on_cpu_and_equals_numpy(name):
    build, _, shape = GRAPHS[name]
    inputs, outputs = build()
    xv = _argument(shape)
    reference = nd.function(inputs, outputs, backend="numpy")(xv)
    f = nd.function(inputs, outputs, backend="cpu")
    f.wait(WAIT)
    got = f(xv)
    assert f.status == "compiled"
    for a, b in zip(got, reference):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_vmap_of_size_ops_over_a_batch_of_unknown_size():
    """Sizes of a batched input are not batched: shape_at, shape, and full/reshape/broadcast_to/arange of them."""
    X = nd.matrix("X")

    def per_row(r):
        n = r.shape[0]
        filled = nd.full((n, 2), nd.sum(r)) + nd.reshape(r, (n, 1)) + nd.broadcast_to(r[0], (2, n)).T
        return filled + nd.zeros((n,)).sum() + nd.shape(r)[0] + nd.arange(n)[-1]

    xv = np.arange(12.0).reshape(3, 4)
    got = nd.function([X], nd.vmap(per_row)(X), backend="numpy")(xv)
    rows = [np.full((4, 2), r.sum()) + r.reshape(4, 1) + np.broadcast_to(r[0], (2, 4)).T + 4 + 3 for r in xv]
    np.testing.assert_allclose(got, np.stack(rows))


def test_vmap_of_a_size_alone_repeats_it_over_the_batch():
    X = nd.matrix("X")
    got = nd.function([X], nd.vmap(lambda r: r.shape[0])(X), backend="numpy")(np.zeros((3, 5)))
    np.testing.assert_array_equal(got, [5, 5, 5])


def test_vmap_of_full_with_batched_sizes_is_unrolled_over_a_static_batch_and_refused_otherwise():
    """Sizes that differ per batch element give a ragged result: no rule; a static batch of equal sizes unrolls."""
    with pytest.raises(GraphError, match="has no batching rule"):
        nd.vmap(lambda n: nd.zeros((n,)))(nd.vector("n", dtype="int64"))
    n = nd.vector("n", dtype="int64", shape=(2,))
    got = nd.function([n], nd.vmap(lambda k: nd.zeros((k,)))(n), backend="numpy")(np.array([3, 3]))
    np.testing.assert_array_equal(got, np.zeros((2, 3)))


@pytest.mark.parametrize("batch", [3, None])
def test_vmap_of_a_scan_is_a_scan_of_the_vmapped_body(batch):
    """An RNN over a batch (static or unknown size) equals a Python loop over the batch; no unrolling."""
    X, W = nd.tensor("X", shape=(batch, None, 2)), nd.matrix("W", shape=(2, 2))

    def rnn(xs):
        def step(h, x):
            h2 = nd.tanh(W @ h + x)
            return h2, nd.sum(h2) / h2.shape[0]

        return nd.scan(step, nd.zeros((2,)), xs)

    last, ys = nd.vmap(rnn)(X)
    f = nd.function([X, W], [last, ys], backend="numpy")
    scans = [n for n in f.graph_as_written.nodes if type(n.op).__name__ == "Scan"]
    assert len(scans) == 1
    rng = np.random.default_rng(0)
    xv, wv = rng.normal(size=(3, 5, 2)), rng.normal(size=(2, 2))
    got_last, got_ys = f(xv, wv)
    for i in range(3):
        h, means = np.zeros(2), []
        for t in range(5):
            h = np.tanh(wv @ h + xv[i, t])
            means.append(h.mean())
        np.testing.assert_allclose(got_last[i], h)
        np.testing.assert_allclose(got_ys[i], means)


def test_vmap_of_a_scan_with_a_batched_invariant_and_an_unbatched_sequence():
    a, xs = nd.vector("a"), nd.vector("xs")
    final = nd.vmap(lambda ai: nd.scan(lambda c, x: (c * ai + x, None), nd.constant(0.0), xs)[0])(a)
    av, xv = np.array([0.5, 2.0]), np.array([1.0, 2.0, 3.0])
    got = nd.function([a, xs], final, backend="numpy")(av, xv)
    expected = [((0 * k + 1) * k + 2) * k + 3 for k in av]
    np.testing.assert_allclose(got, expected)

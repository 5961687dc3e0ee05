"""``nd.vmap`` against a Python loop over the batch, for every op-table row, and its misuse errors."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import AxisError, GraphError, ShapeError
from tests.ops.table import all_cases

CASES = all_cases()
BATCH = 3

# Rows whose op has no batching rule for these inputs: unrolled over a batch of static size, refused (a typed error
# naming the op) when the batch size is only known at run time. FusedElemwise never meets vmap in use (graphs are
# batched before rewriting); batched boolean masks, several batched index arrays and take_along_axis(axis=None)
# are not batched by rule.
UNROLLED_ONLY_OPS = {"diag", "diagonal"}  # DiagMatrix, Diagonal, EmbedDiagonal: no batching rule yet
UNROLLED_ONLY = {"fused[chain]", "fused[broadcast]", "fused[sum-keepdims]", "getitem[mixed-symbolic]"}
UNROLLED_ONLY |= {"getitem[symbolic-bool-mask]", "getitem[symbolic-bool-mask-axis1]", "take_along_axis[axis=None]"}


def _batched_arrays(case, dtype="float64"):
    """Each input of the row drawn BATCH times and stacked on a new leading axis."""
    draws = [case.arrays(dtype, seed=seed) for seed in range(BATCH)]
    return [np.stack([draw[k] for draw in draws]) for k in range(len(case.shapes))], draws


def _loop(case, draws):
    """The reference: the row's graph evaluated on each batch element separately, stacked."""
    variables = [nd.tensor(f"in{i}", dtype=a.dtype.name, shape=a.shape) for i, a in enumerate(draws[0])]
    f = nd.function(variables, case.build(*variables))
    results = [np.asarray(f(*draw)) for draw in draws]
    if len({r.shape for r in results}) > 1:
        pytest.skip(f"{case.id}: the result's shape depends on the values (a boolean mask), so it cannot batch")
    return np.stack(results)


def _vmapped(case, batched, batch_dim):
    variables = [
        nd.tensor(
            f"b{i}",
            dtype=a.dtype.name,
            shape=(batch_dim, *(a.shape[1:] if case.static_shapes else [None] * (a.ndim - 1))),
        )
        for i, a in enumerate(batched)
    ]
    out = nd.vmap(case.build)(*variables)
    return nd.function(variables, out)(*batched)


# Rows whose intermediate shapes depend on the values (a boolean mask's selection): each batch element would have
# its own shape, so the batched graph raises a typed error at run time.
VALUE_SHAPED = {"getitem[symbolic-bool-mask]", "getitem[symbolic-bool-mask-axis1]"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_vmap_matches_loop_static_batch(case):
    """Every row: vmap over a batch of 3 (static size) equals 3 separate evaluations stacked."""
    batched, draws = _batched_arrays(case)
    expected = _loop(case, draws)
    if case.id in VALUE_SHAPED:
        with pytest.raises(ShapeError, match="vmap of index"):
            _vmapped(case, batched, BATCH)
        return
    got = _vmapped(case, batched, BATCH)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_vmap_matches_loop_unknown_batch(case):
    """With a batch of run-time size, every op batches by its rule (no unrolling), except UNROLLED_ONLY's."""
    batched, draws = _batched_arrays(case)
    if case.id in UNROLLED_ONLY or case.name in UNROLLED_ONLY_OPS:
        with pytest.raises(GraphError, match="no batching rule"):
            _vmapped(case, batched, None)
        return
    expected = _loop(case, draws)
    got = _vmapped(case, batched, None)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _affine(x, w):
    return nd.tanh(x) @ w + nd.sum(x * x)


def test_in_axes_none_and_a_non_leading_axis():
    xs, w = np.random.default_rng(0).normal(size=(4, 3)), np.random.default_rng(1).normal(size=4)
    X, W = nd.matrix("X"), nd.vector("w")
    f = nd.function([X, W], nd.vmap(_affine, in_axes=(1, None))(X, W))
    np.testing.assert_allclose(f(xs, w), [np.tanh(xs[:, k]) @ w + np.sum(xs[:, k] ** 2) for k in range(3)])


def test_nested_vmap_is_a_double_loop():
    xs = np.random.default_rng(0).normal(size=(2, 3, 4))
    X = nd.tensor("X", ndim=3)
    f = nd.function([X], nd.vmap(nd.vmap(lambda v: nd.softmax(v) * nd.max(v)))(X))
    expected = [[np.exp(v) / np.exp(v).sum() * v.max() for v in row] for row in xs]
    np.testing.assert_allclose(f(xs), expected, rtol=1e-12)


def test_in_axes_of_the_wrong_length_names_the_users_line():
    X, W = nd.matrix("X"), nd.vector("w")
    with pytest.raises(GraphError, match=r"in_axes has 1 entries for 2 argument[\s\S]*test_vmap.py"):
        nd.vmap(_affine, in_axes=(0,))(X, W)


def test_an_axis_out_of_range_is_an_axis_error():
    X, W = nd.matrix("X"), nd.vector("w")
    with pytest.raises(AxisError, match=r"in_axes\[0\] = 2 is out of range[\s\S]*test_vmap.py"):
        nd.vmap(_affine, in_axes=(2, None))(X, W)


def test_mismatched_static_batch_sizes_raise_at_construction():
    X, W = nd.matrix("X", shape=(3, 4)), nd.matrix("W", shape=(5, 4))
    with pytest.raises(ShapeError, match=r"argument 1 has batch size 5 but argument 0 has 3[\s\S]*test_vmap.py"):
        nd.vmap(lambda x, w: x * w)(X, W)


def test_mismatched_run_time_batch_sizes_raise_at_call():
    X, W = nd.matrix("X"), nd.matrix("W")
    f = nd.function([X, W], nd.vmap(lambda x, w: x * w)(X, W))
    np.testing.assert_allclose(f(np.ones((3, 2)), np.ones((3, 2))), np.ones((3, 2)))
    with pytest.raises(ShapeError, match="the batch axis of argument 1"):
        f(np.ones((3, 2)), np.ones((1, 2)))  # broadcasting would hide it: the check is explicit


def test_all_unbatched_or_a_non_function_is_refused():
    X = nd.matrix("X")
    with pytest.raises(GraphError, match="at least one argument"):
        nd.vmap(nd.tanh, in_axes=None)(X)
    with pytest.raises(GraphError, match="expected a function"):
        nd.vmap(X)


def test_vmap_of_a_function_batches_its_graph_as_written():
    x, w = nd.vector("x"), nd.vector("w")
    single = nd.function([x, w], [nd.tanh(x) * w, nd.sum(x)])
    X = nd.matrix("X")
    batched = nd.vmap(single, in_axes=(0, None))(X, w)
    xs, wv = np.random.default_rng(0).normal(size=(3, 4)), np.random.default_rng(1).normal(size=4)
    got = nd.function([X, w], batched)(xs, wv)
    np.testing.assert_allclose(got[0], np.tanh(xs) * wv)
    np.testing.assert_allclose(got[1], xs.sum(axis=1))
    with pytest.raises(GraphError, match="does not fit input"):
        nd.vmap(single)(X, nd.matrix("W", dtype="float32"))


def test_every_op_has_a_batching_rule_but_the_documented_ones():
    """Adding an op means stating how it batches (or adding it here, where it is unrolled over a static batch).

    The modules imported here register ops that ``import nbdiff`` alone may not have loaded yet."""
    import nbdiff.ops.scan
    import nbdiff.ops.scan_grad
    import nbdiff.ops.sizes
    import nbdiff.user_ops  # noqa: F401
    from nbdiff.graph.basic import registered_ops

    assert {"Scan", "Shape", "ShapeAt", "SizedArange", "SizedBroadcastTo", "SizedFull", "SizedReshape"} <= set(
        registered_ops()
    )
    without = {name for name, cls in registered_ops().items() if cls.batch is None}
    assert without == {"Arange", "DiagMatrix", "Diagonal", "EmbedDiagonal", "FusedElemwise"}

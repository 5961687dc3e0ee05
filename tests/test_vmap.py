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

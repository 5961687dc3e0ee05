"""Graphs of 33 to 64 dimensions run as NumPy runs them: NumPy's broadcasting helpers (``np.broadcast_shapes``) stop
at 32 dimensions although arrays and ufuncs reach 64, so such values are never fused, the interpreter broadcasts
them itself, and the compiled backend compiles nothing for them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends.codegen import structure_problem
from nbdiff.graph.types import max_ndim
from nbdiff.ops import indexing
from nbdiff.ops.elemwise import Mul, Tanh
from nbdiff.ops.fused import MAX_FUSED_NDIM, FusedElemwise

pytestmark = pytest.mark.skipif(max_ndim() <= MAX_FUSED_NDIM, reason="NumPy 1: arrays stop at 32 dimensions")


def shapes(ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``x``'s shape (ones with a few 2s and a 3) and ``y``'s, which broadcasts against it."""
    x = [1] * ndim
    x[0], x[ndim // 2], x[-1] = 2, 2, 3
    y = [1] * ndim
    y[-1] = 3
    return tuple(x), tuple(y)


def value_and_gradients(ndim: int, backend: str) -> nd.Function:
    """An elementwise chain with broadcasting, its sum, and the gradients (sum_to_like, broadcast_like)."""
    x, y = nd.tensor("x", ndim=ndim), nd.tensor("y", ndim=ndim)
    h = nd.tanh(x) * y + nd.exp(-x)
    cost = nd.sum(h**2) + nd.mean(x) + nd.sum(nd.max(x * y, axis=-1))
    return nd.function([x, y], [cost, h, *nd.grad(cost, [x, y])], backend=backend)


def reference(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The same values by hand with NumPy."""
    h = np.tanh(a) * b + np.exp(-a)
    cost = np.sum(h**2) + np.mean(a) + np.sum(np.max(a * b, axis=-1))
    dh = 2 * h
    largest = (a * b == np.max(a * b, axis=-1, keepdims=True)).astype(float)
    gx = dh * (b * (1 - np.tanh(a) ** 2) - np.exp(-a)) + 1 / a.size + largest * b
    gy = np.sum(dh * np.tanh(a) + largest * a, axis=tuple(k for k in range(a.ndim) if b.shape[k] == 1), keepdims=True)
    return [cost, h, gx, gy]


@pytest.mark.parametrize("ndim", [33, 40, 64])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_ranks_beyond_32_run_through_the_interpreter(ndim, backend):
    ndim = min(ndim, max_ndim())
    f = value_and_gradients(ndim, backend)
    wide = [k for k in f.kernels if any(v.ndim > MAX_FUSED_NDIM for v in k.inputs + k.outputs)]
    assert wide == []  # only the 0-d tail (sums added up) is fused: kernels' broadcasting stops at 32 dimensions
    rng = np.random.default_rng(ndim)
    a, b = (rng.normal(size=shape) for shape in shapes(ndim))
    for _ in range(2):  # before and after waiting for the backend: the same values
        got = f(a, b)
        for value, expected in zip(got, reference(a, b)):
            assert value.shape == np.shape(expected)
            np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
        f.wait(timeout=60)
    assert not f.status.startswith("fallback"), f.status


def test_32_dimensions_are_still_fused():
    f = value_and_gradients(MAX_FUSED_NDIM, "numpy")
    assert any(v.ndim == MAX_FUSED_NDIM for k in f.kernels for v in k.inputs)
    a, b = (np.random.default_rng(0).normal(size=shape) for shape in shapes(MAX_FUSED_NDIM))
    for value, expected in zip(f(a, b), reference(a, b)):
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)


def wide_kernel(ndim: int) -> FusedElemwise:
    """``tanh(in0) * in1`` as a fused op over ``ndim``-dimensional inputs, built by hand (fusion never builds it)."""
    return FusedElemwise(
        input_kinds=(("float64", ndim), ("float64", ndim)),
        program=((Tanh(), (0,)), (Mul(), (2, 1))),
        results=(3,),
        reductions=(None,),
    )


def test_the_compiled_backend_refuses_kernels_beyond_32_dimensions():
    assert structure_problem(wide_kernel(MAX_FUSED_NDIM)) is None
    problem = structure_problem(wide_kernel(MAX_FUSED_NDIM + 1))
    assert problem == f"an input has more than {MAX_FUSED_NDIM} dimensions, the most a kernel's layout handles"


def test_a_wide_fused_op_still_computes_numpys_values():
    """Its interpreter broadcasts without ``np.broadcast_shapes``, which raises beyond 32 dimensions."""
    a_shape, b_shape = shapes(40)
    a, b = np.full(a_shape, 0.5), np.arange(3.0).reshape(b_shape)
    (value,) = wide_kernel(40).perform(a, b)  # tanh(a) dies at the product, which may reuse its buffer
    np.testing.assert_allclose(value, np.tanh(a) * b)


# -- scatter-adds (the gradients of indexing): NumPy's ufunc.at crashes the process past 32 dimensions ---------------
WIDE_GRADIENTS = """
import numpy as np
import nbdiff as nd

n = 40
shape = [1] * n
shape[0], shape[-1] = 2, 4
x, i = nd.tensor("x", ndim=n), nd.tensor("i", ndim=n, dtype="int64")
a = np.random.default_rng(0).normal(size=shape)
a2, idx = a.reshape(2, 4), np.zeros(shape[:-1] + [2], dtype=np.int64)

cost = -nd.sum(nd.take_along_axis(nd.log_softmax(x, axis=-1), i, axis=-1))
softmax = np.exp(a) / np.exp(a).sum(axis=-1, keepdims=True)
onehot = np.zeros_like(a)
onehot[..., 0] = 2
np.testing.assert_allclose(nd.function([x, i], nd.grad(cost, x))(a, idx), 2 * softmax - onehot)

picked = nd.sum(x[0, ..., [0, 0, 3]] ** 2)
expected = np.zeros((2, 4))
np.add.at(expected, (0, [0, 0, 3]), 2 * a2[0, [0, 0, 3]])
np.testing.assert_allclose(nd.function([x], nd.grad(picked, x))(a), expected.reshape(shape))

taken = nd.sum(nd.take_along_axis(x, i, axis=-1) * 3)
np.testing.assert_allclose(nd.function([x, i], nd.grad(taken, x))(a, idx), onehot * 3)
print("agreed")
"""


def test_gradients_of_indexing_beyond_32_dimensions_do_not_crash():
    """In a separate process: before, ``np.add.at`` on such arrays ended the process with a segmentation fault."""
    result = subprocess.run([sys.executable, "-c", WIDE_GRADIENTS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "agreed"


ADD_AT_CASES = [
    ((5,), lambda: np.array([0, 0, 4, -1, 2]), (5,)),
    ((3, 4), lambda: (np.array([[0], [2], [0]]), slice(None, None, -2)), (3, 1, 2)),
    ((3, 4), lambda: (Ellipsis, np.array([1, 1, 3])), (3, 3)),
    ((3, 4), lambda: (None, 1, np.array([0, 0])), (1, 2)),
    ((2, 3, 4), lambda: (np.array([[True, False, True], [False, True, True]]), np.array([0, 3, 3, 0])), (4,)),
    ((2, 3, 4), lambda: (1, slice(None), np.array([[2, 2], [0, 1]])), (2, 2, 3)),
]


@pytest.mark.parametrize("shape, make_index, values_shape", ADD_AT_CASES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_add_at_by_flat_positions_is_numpys_add_at(monkeypatch, shape, make_index, values_shape, order):
    """The way ``add_at`` takes past 32 dimensions, forced here on small arrays, gives ``np.add.at``'s values."""
    monkeypatch.setattr(indexing, "UFUNC_AT_MAX_NDIM", 0)
    rng = np.random.default_rng(1)
    values = rng.normal(size=values_shape)
    expected = np.asarray(rng.normal(size=shape), dtype=np.float32, order=order)
    got = expected.copy(order=order)
    np.add.at(expected, make_index(), values)
    indexing.add_at(got, make_index(), values)
    np.testing.assert_array_equal(got, expected)


def test_softmax_family_at_numpys_largest_rank():
    """Their max-shift gathers with one index array per dimension, which NumPy refuses at 64: they reduce instead."""
    ndim = max_ndim()
    x = nd.tensor("x", ndim=ndim)
    a = np.random.default_rng(2).normal(size=shapes(ndim)[0])
    f = nd.function([x], [nd.softmax(x), nd.logsumexp(x, axis=-1), nd.log_softmax(x, axis=0)])
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    softmax = e / e.sum(axis=-1, keepdims=True)
    logsumexp = np.log(np.sum(np.exp(a), axis=-1))
    log_softmax = a - np.log(np.sum(np.exp(a), axis=0, keepdims=True))
    for value, expected in zip(f(a), [softmax, logsumexp, log_softmax]):
        np.testing.assert_allclose(value, expected, rtol=1e-12)

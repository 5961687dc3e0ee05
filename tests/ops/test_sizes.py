"""Shapes as values (issue 12, item 1): ``x.shape[i]`` is a graph scalar where the dimension is unknown, sizes flow
into ops and into ``ShapeFacts``, dividing by a size follows NumPy, and the arange-label idiom compiles to the same
cross-entropy pair and kernels as ``take_along_axis``."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import NbdiffError, ShapeError
from nbdiff.ops.sizes import ShapeAt
from nbdiff.rewrite.shapes import ShapeFacts

RNG = np.random.default_rng(0)


def test_known_dimensions_are_ints_and_unknown_ones_are_int64_scalars():
    x = nd.tensor("x", shape=(None, 3))
    n, three = x.shape
    assert three == 3 and type(three) is int
    assert isinstance(n.owner.op, ShapeAt) and n.type.describe() == "int64[]"
    assert x.type.shape == (None, 3)
    assert nd.function([x], [n, nd.shape(x)])(np.ones((5, 3)))[1].tolist() == [5, 3]
    assert nd.shape(nd.matrix("m", shape=(2, 4))).owner is None  # a constant where every dimension is known


def test_shape_has_one_meaning_wherever_it_is_read():
    """``x.shape`` does not depend on who reads it (no look at the caller's frame): code inside the package gets
    the same shape values as a user; the static shape is ``x.type.shape``."""
    import os

    x = nd.tensor("x", shape=(None, 3))
    inside = os.path.join(os.path.dirname(nd.__file__), "ops", "reader.py")
    namespace = {"x": x}
    exec(compile("shape = x.shape", inside, "exec"), namespace)
    n, three = namespace["shape"]
    assert three == 3 and isinstance(n.owner.op, ShapeAt)


def test_static_shapes_keep_what_is_constant():
    t = nd.tensor("t", shape=(None, 3, 4))
    assert nd.reshape(t, (t.shape[0], -1)).type.shape == (None, 12)
    assert nd.zeros((t.shape[0], 3)).type.shape == (None, 3)
    assert nd.broadcast_to(nd.vector("v", shape=(4,)), (t.shape[0], 4)).type.shape == (None, 4)
    assert nd.full((2, t.shape[1]), 1.5).type.shape == (2, 3)  # t.shape[1] is the int 3


def test_sizes_flow_into_shape_facts_and_such_graphs_fuse():
    x = nd.matrix("X")
    r = nd.arange(x.shape[0])
    facts = ShapeFacts([x])
    assert facts.dims(r) == (facts.dims(x)[0],) and repr(facts.dims(r)[0]) == "X.0"
    assert facts.dims(nd.zeros((x.shape[1], x.shape[0]))) == tuple(reversed(facts.dims(x)))
    v = nd.vector("v")
    f = nd.function([v], nd.exp(v) * nd.arange(v.shape[0]) + nd.ones(v.shape))
    assert len(f.kernels) == 1
    np.testing.assert_allclose(f(np.arange(4.0)), np.exp(np.arange(4.0)) * np.arange(4) + 1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mean_by_hand_equals_mean_with_numpys_dtype(dtype):
    x = nd.matrix("x", dtype=dtype)
    by_hand = nd.sum(x, axis=0) / x.shape[0]
    f = nd.function([x], [by_hand, nd.mean(x, axis=0)])
    value = RNG.normal(size=(5, 3)).astype(dtype)
    got, mean = f(value)
    expected = value.sum(axis=0) / value.shape[0]  # NumPy divides by a Python int: float32 stays float32
    assert got.dtype == mean.dtype == expected.dtype
    np.testing.assert_allclose(got, mean, rtol=1e-6)


def test_sizes_have_no_gradient_and_graphs_with_them_differentiate():
    def cost(x):
        n = x.shape[0]
        return nd.sum(x**2) / n + nd.sum(nd.full((2, n), nd.sum(x)) * nd.arange(n))

    nd.check_grads(cost, [RNG.normal(size=4)], order=2)
    nd.check_grads(lambda m: nd.sum(nd.tanh(nd.reshape(m, (m.shape[0] * 2, -1)))), [RNG.normal(size=(2, 6))])
    nd.check_grads(lambda v: nd.sum(nd.broadcast_to(v, (3, v.shape[0])) ** 3), [RNG.normal(size=4)])
    x = nd.vector("x")
    assert ShapeAt(0).pullback(x.shape[0].owner, [nd.scalar("g")]) == [None]


def test_bad_sizes_are_typed_errors_naming_the_op_and_line():
    n = nd.scalar("n", dtype="int64")
    cases = [
        (lambda: nd.zeros((2.5,)), "full"),
        (lambda: nd.ones((-3,)), "full"),
        (lambda: nd.reshape(nd.vector("v"), (nd.vector("s", dtype="int64"),)), "reshape"),
        (lambda: nd.arange(nd.scalar("f"), nd.vector("g")), "arange"),
    ]
    for build, op in cases:
        with pytest.raises(ShapeError) as info:
            build()
        assert str(info.value).startswith(f"{op}: ") and "test_sizes.py:" in str(info.value)
    f = nd.function([n], nd.zeros((n, 2)))
    assert f(np.int64(3)).shape == (3, 2)
    with pytest.raises(ShapeError) as info:
        f(np.int64(-1))
    assert str(info.value).startswith("full: ") and "test_sizes.py:" in str(info.value)


def mlp_step(arange_labels: bool, backend: str | None = None) -> nd.Function:
    """A two-layer classifier's loss and gradients; the labels picked by arange or by take_along_axis."""
    X, y = nd.matrix("X"), nd.vector("y", dtype="int64")
    W1, b1, W2, b2 = nd.matrix("W1"), nd.vector("b1"), nd.matrix("W2"), nd.vector("b2")
    logp = nd.log_softmax(nd.tanh(X @ W1 + b1) @ W2 + b2, axis=1)
    if arange_labels:
        picked = logp[nd.arange(X.shape[0]), y]
    else:
        picked = nd.take_along_axis(logp, y[:, None], 1)[:, 0]
    loss = -nd.sum(picked) / X.shape[0]
    params = [W1, b1, W2, b2]
    kwargs = {} if backend is None else {"backend": backend}
    return nd.function([X, y, *params], [loss, *nd.grad(loss, params)], **kwargs)


def mlp_arguments() -> list[np.ndarray]:
    return [
        RNG.normal(size=(6, 4)),
        RNG.integers(0, 3, 6),
        RNG.normal(size=(4, 5)),
        RNG.normal(size=5),
        RNG.normal(size=(5, 3)),
        RNG.normal(size=3),
    ]


def test_arange_label_step_equals_the_take_along_axis_step_and_builds_the_same_graph():
    by_arange, by_take = mlp_step(True, "numpy"), mlp_step(False, "numpy")
    kinds = sorted(node.op.name for node in by_arange.graph.nodes)
    assert kinds == sorted(node.op.name for node in by_take.graph.nodes)
    assert "log_softmax_take" in kinds and "log_softmax_take_grad" in kinds and "add_along_axis" not in kinds
    arguments = mlp_arguments()
    for a, b in zip(by_arange(*arguments), by_take(*arguments)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    as_written = mlp_step(True, "numpy")
    unrewritten = nd.function(as_written.graph_as_written.inputs, as_written.graph_as_written.outputs, rewrites=False)
    for a, b in zip(by_arange(*arguments), unrewritten(*arguments)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_arange_label_step_compiles_to_the_same_kernels():
    by_arange, by_take = mlp_step(True), mlp_step(False)
    assert [k.structural_hash for k in by_arange.kernels] == [k.structural_hash for k in by_take.kernels]
    assert by_arange.kernels
    arguments = mlp_arguments()
    for a, b in zip(by_arange(*arguments), by_take(*arguments)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_an_arange_of_another_length_is_not_rewritten():
    logp, y, z = nd.matrix("logp"), nd.vector("y", dtype="int64"), nd.vector("z")
    picked = logp[nd.arange(z.shape[0]), y]
    f = nd.function([logp, y, z], picked, backend="numpy")
    assert "take_along_axis" not in [node.op.name for node in f.graph.nodes]
    value = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(f(value, np.array([0, 2]), np.ones(2)), value[[0, 1], [0, 2]])
    with pytest.raises(NbdiffError):
        f(value, np.array([0, 2, 1]), np.ones(2))

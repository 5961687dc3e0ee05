"""The cross-entropy pair: ``log_softmax_take`` (picked log-probabilities and the softmax) and its pullback
``log_softmax_take_grad``, which the stability pass makes of ``take_along_axis(log_softmax(x), labels)``."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import IndexingError, ShapeError
from nbdiff.ops.nnet import LogSoftmaxTake, LogSoftmaxTakeGrad


def reference(x: np.ndarray, labels: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy in float64: the picked log-probabilities and the probabilities."""
    shifted = x - x.max(axis=axis, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return np.take_along_axis(log_probabilities, labels, axis), np.exp(log_probabilities)


def loss_function(axis: int = 1, dtype: str = "float64", rewrites: bool = True) -> nd.Function:
    x = nd.matrix("x", dtype=dtype)
    labels = nd.vector("labels", dtype="int64")
    loss = -nd.mean(nd.take_along_axis(nd.log_softmax(x, axis=axis), nd.expand_dims(labels, axis), axis))
    return nd.function([x, labels], [loss, nd.grad(loss, x)], backend="numpy", rewrites=rewrites)


def test_the_rewrite_replaces_the_forward_and_the_gradient():
    f = loss_function()
    names = [node.op.name for node in f.graph.nodes]
    assert "log_softmax_take" in names and "log_softmax_take_grad" in names
    assert "log_softmax" not in names and "add_along_axis" not in names
    take = next(n for n in f.graph.nodes if n.op.name == "log_softmax_take")
    grad = next(n for n in f.graph.nodes if n.op.name == "log_softmax_take_grad")
    assert grad.inputs[0] is take.outputs[1], "the gradient reads the forward node's probabilities"


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-6)])
def test_values_and_gradients_equal_the_unrewritten_graph(axis, dtype, rtol):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype(dtype) * 3
    labels = rng.integers(-x.shape[axis], x.shape[axis], x.shape[1 - axis])
    got, expected = loss_function(axis, dtype)(x, labels), loss_function(axis, dtype, rewrites=False)(x, labels)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_extreme_logits_give_finite_values_and_gradients():
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -999.0], [1e-20, 0.0, -1e-20]])
    labels = np.array([1, 2, 0])
    loss, gradient = loss_function()(x, labels)
    assert np.isfinite(loss) and np.all(np.isfinite(gradient))
    picked, probabilities = reference(x, labels[:, None], 1)
    np.testing.assert_allclose(loss, -picked.mean(), rtol=1e-14)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(gradient, (probabilities - onehot) / 3, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("shapes, axis", [([(4, 5), (4, 1)], 1), ([(3, 2, 4), (1, 2, 4)], 0), ([(2, 3), (2, 1)], -1)])
def test_both_outputs_match_numpy(shapes, axis):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shapes[0])
    labels = rng.integers(0, shapes[0][axis], shapes[1])
    xv = nd.tensor("x", shape=shapes[0])
    iv = nd.tensor("i", dtype="int64", shape=shapes[1])
    picked, probabilities = LogSoftmaxTake(axis % len(shapes[0]))(xv, iv)
    got = nd.function([xv, iv], [picked, probabilities], rewrites=False)(x, labels)
    for a, b in zip(got, reference(x, labels, axis)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_the_gradient_op_is_probabilities_minus_onehot_times_g():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(4), size=5)
    labels = rng.integers(0, 4, (5, 1))
    g = rng.normal(size=(5, 1))
    (got,) = LogSoftmaxTakeGrad(1).perform(p, labels, g)
    np.testing.assert_allclose(got, (np.eye(4)[labels[:, 0]] - p) * g, rtol=1e-14)


def test_repeated_positions_accumulate_when_indices_broadcast_past_x():
    p = np.array([[0.25, 0.75]])  # one slice, read by three indices
    labels = np.array([[1], [1], [0]])
    g = np.array([[1.0], [2.0], [4.0]])
    (got,) = LogSoftmaxTakeGrad(1).perform(p, labels, g)
    np.testing.assert_allclose(got, [[4.0 - 0.25 * 7, 3.0 - 0.75 * 7]])


@pytest.mark.parametrize("modes", [("rev",), ("fwd",)])
def test_forward_op_gradients_to_second_order(modes):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (3, 1))
    nd.check_grads(
        lambda x, i: list(LogSoftmaxTake(1)(x, i)), [rng.normal(size=(3, 4)), labels], modes=modes, static_shapes=True
    )


@pytest.mark.parametrize("modes", [("rev",), ("fwd",)])
def test_gradient_op_gradients_to_second_order(modes):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, (3, 1))
    p = rng.dirichlet(np.ones(4), size=3)
    nd.check_grads(
        lambda p, i, g: LogSoftmaxTakeGrad(1)(p, i, g),
        [p, labels, rng.normal(size=(3, 1))],
        modes=modes,
        static_shapes=True,
    )


def test_hessian_of_a_cross_entropy_loss_through_the_rewritten_graph():
    """The rewritten graph (with the new ops) can be differentiated again: its Hessian matches the plain one's."""
    x = nd.vector("x", shape=(4,))
    labels = nd.constant(np.array([[2]]))
    loss = -nd.sum(nd.take_along_axis(nd.log_softmax(nd.reshape(x, (1, 4)), axis=1), labels, 1))
    rewritten = nd.function([x], nd.grad(loss, x)).graph.outputs[0]
    assert any(node.op.name == "log_softmax_take_grad" for node in nd.function([x], rewritten).graph.nodes)
    xv = np.array([0.3, -1.2, 2.0, 0.1])
    got = nd.function([x], nd.jacobian(rewritten, x))(xv)
    expected = nd.function([x], nd.hessian(loss, x), rewrites=False)(xv)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_bad_input_names_the_op():
    x = nd.matrix("x", shape=(3, 4))
    with pytest.raises(ShapeError, match="log_softmax_take: indices must have size 1 along axis 1"):
        LogSoftmaxTake(1)(x, nd.matrix("i", dtype="int64", shape=(3, 2)))
    with pytest.raises(IndexingError, match="log_softmax_take: indices must be an integer array"):
        LogSoftmaxTake(1)(x, nd.matrix("i", shape=(3, 1)))
    with pytest.raises(ShapeError, match="log_softmax_take_grad: the gradient's shape"):
        LogSoftmaxTakeGrad(1)(x, nd.matrix("i", dtype="int64", shape=(3, 1)), nd.vector("g", shape=(3,)))


def test_an_out_of_range_label_is_an_error_at_call_time():
    with pytest.raises(nd.NbdiffError, match="log_softmax_take"):
        loss_function()(np.zeros((2, 3)), np.array([0, 3]))


def test_the_gradient_op_broadcasts_a_0d_gradient():
    p = nd.matrix("p", shape=(2, 3))
    labels = nd.matrix("i", dtype="int64", shape=(2, 1))
    g = nd.scalar("g")
    f = nd.function([p, labels, g], LogSoftmaxTakeGrad(1)(p, labels, g))
    pv = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(f(pv, np.array([[2], [0]]), 0.5), (np.eye(3)[[2, 0]] - pv) * 0.5, rtol=1e-14)
    with pytest.raises(ShapeError, match="does not fit"):
        LogSoftmaxTakeGrad(1)(p, labels, nd.matrix("g2", shape=(2, 3)))

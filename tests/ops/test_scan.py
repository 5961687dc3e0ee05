"""``nd.scan``: values against Python loops, derivatives to second order, run-time lengths, and misuse."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cpu_scan  # noqa: F401  (registers the Scan kernel)
from nbdiff.backends.cpu_ops import op_kernel as cpu_op_kernel
from nbdiff.errors import DTypeError, GraphError, ShapeError
from nbdiff.ops.scan import Scan
from nbdiff.runtime.events import kernel_states

RNG = np.random.default_rng(12)


def cumprod(x):
    """Running products: the carry is the product so far, each step also outputs it."""
    return nd.scan(lambda c, xt: (c * xt, c * xt), nd.ones_like(x[0]), x)


def rnn(W, U, b, h0, X):
    """``h_t = tanh(W h_{t-1} + U x_t + b)``; returns the last state and every state."""
    return nd.scan(lambda h, xt: (nd.tanh(W @ h + U @ xt + b),) * 2, h0, X)


def rnn_reference(W, U, b, h0, X):
    h, states = h0, []
    for xt in X:
        h = np.tanh(W @ h + U @ xt + b)
        states.append(h)
    return h, np.stack(states)


DT = 0.05


def euler(y0, k, steps=50):
    """Explicit Euler for ``dy/dt = -k y + sin(t)`` from ``t = 0``: a carry of two values and a fixed length."""

    def step(carry, _):
        y, t = carry
        return (y + DT * (-k * y + nd.sin(t)), t + DT), y

    (y, _), ys = nd.scan(step, (y0, nd.zeros_like(k)), length=steps)
    return y, ys


def euler_reference(y0, k, steps=50):
    y, t, ys = y0, 0.0, []
    for _ in range(steps):
        ys.append(y)
        y, t = y + DT * (-k * y + np.sin(t)), t + DT
    return y, np.stack(ys)


def test_cumulative_product_equals_numpy_and_its_derivatives_check_to_second_order():
    x = nd.vector("x")
    a = np.array([1.5, 2.0, -0.5, 3.0, 0.7])
    last, ys = nd.function([x], list(cumprod(x)))(a)
    np.testing.assert_allclose(ys, np.cumprod(a))
    np.testing.assert_allclose(last, np.prod(a))
    nd.check_grads(lambda x: cumprod(x)[1], [a], order=2)


def test_rnn_equals_a_python_loop_and_its_derivatives_check_to_second_order():
    args = [
        RNG.normal(size=(3, 3)) * 0.5,
        RNG.normal(size=(3, 2)) * 0.5,
        RNG.normal(size=3),
        RNG.normal(size=3),
        RNG.normal(size=(6, 2)),
    ]
    variables = [nd.matrix("W"), nd.matrix("U"), nd.vector("b"), nd.vector("h0"), nd.matrix("X")]
    got = nd.function(variables, list(rnn(*variables)))(*args)
    for value, expected in zip(got, rnn_reference(*args)):
        np.testing.assert_allclose(value, expected, rtol=1e-12)
    nd.check_grads(lambda *v: list(rnn(*v)), args, order=2)


def test_fifty_step_euler_ode_equals_numpy_and_its_derivatives_check_to_second_order():
    y0, k = RNG.normal(size=4), np.abs(RNG.normal(size=4)) + 0.5
    variables = [nd.vector("y0"), nd.vector("k")]
    y, ys = nd.function(variables, list(euler(*variables)))(y0, k)
    y_ref, ys_ref = euler_reference(y0, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-12)
    assert ys.shape == (50, 4)
    nd.check_grads(lambda y0, k: list(euler(y0, k)), [y0, k], order=2)


def test_a_run_time_length_gives_as_many_steps_as_asked_and_differentiates():
    n, c0 = nd.scalar("n", dtype="int64"), nd.scalar("c0")
    final, ys = nd.scan(lambda c, _: (c * 0.5 + 1.0, c), c0, length=n)
    assert ys.type.shape == (None,)
    f = nd.function([c0, n], [final, ys, nd.grad(final, c0)])
    for steps in (0, 1, 4):
        value, states, slope = f(3.0, steps)
        c, expected = 3.0, []
        for _ in range(steps):
            expected.append(c)
            c = c * 0.5 + 1.0
        np.testing.assert_allclose(value, c)
        np.testing.assert_allclose(states, np.array(expected).reshape(steps))
        np.testing.assert_allclose(slope, 0.5**steps)
    nd.check_grads(lambda c0, n: nd.scan(lambda c, _: (nd.sin(c) * 1.5, c * c), c0, length=n)[1], [0.3, np.int64(5)])


def test_the_sequences_length_is_the_run_time_length_without_length():
    x = nd.vector("x")
    f = nd.function([x], cumprod(x)[1])
    np.testing.assert_allclose(f(np.arange(1.0, 4.0)), [1.0, 2.0, 6.0])
    np.testing.assert_allclose(f(np.arange(1.0, 6.0)), [1.0, 2.0, 6.0, 24.0, 120.0])


def test_several_carries_and_outputs_keep_their_structure_and_reverse_walks_from_the_end():
    x, c0 = nd.vector("x"), nd.scalar("c0")
    (total, count), (running, doubled) = nd.scan(
        lambda c, xt: ((c[0] + xt, c[1] + 1), (c[0] + xt, 2.0 * xt)), (c0, nd.constant(0, "int64")), x
    )
    _, backwards = nd.scan(lambda c, xt: (c + xt, c + xt), c0, x, reverse=True)
    f = nd.function([x, c0], [total, count, running, doubled, backwards])
    a = np.array([1.0, 2.0, 4.0])
    got = f(a, 10.0)
    for value, expected in zip(got, [17.0, 3, [11.0, 13.0, 17.0], [2.0, 4.0, 8.0], [17.0, 16.0, 14.0]]):
        np.testing.assert_allclose(value, expected)
    assert got[1].dtype == np.int64
    _, y_none = nd.scan(lambda c, xt: (c + xt, None), c0, x)
    assert y_none is None
    nd.check_grads(lambda a, c0: nd.scan(lambda c, xt: (c * xt, nd.exp(c)), c0, a, reverse=True)[1], [a, 0.2])


def test_the_body_runs_on_one_plan_built_once():
    x = nd.vector("x")
    _, ys = cumprod(x)
    op = ys.owner.op
    assert isinstance(op, Scan)
    f = nd.function([x], ys)
    f(np.ones(3))
    plan = op.plan()
    f(np.ones(5))
    assert op.plan() is plan


def test_wrong_number_of_carries_names_the_users_line():
    with pytest.raises(GraphError, match=r"step returned 3 carries, but init has 2(.|\n)*test_scan.py:\d+"):
        nd.scan(lambda c, x: ((c[0], c[1], c[0]), x), (nd.scalar("a"), nd.scalar("b")), nd.vector("x"))
    with pytest.raises(GraphError, match="pair"):
        nd.scan(lambda c, x: c + x, nd.scalar("a"), nd.vector("x"))


def test_a_carry_changing_dtype_or_shape_names_the_users_line():
    with pytest.raises(DTypeError, match=r"carry 0 changes dtype.*int64 to float64(.|\n)*test_scan.py:\d+"):
        nd.scan(lambda c, x: (c * 0.5, x), nd.scalar("i", dtype="int64"), nd.vector("x"))
    with pytest.raises(ShapeError, match=r"carry 0 changes shape.*\(3,\) to \(3, 3\)(.|\n)*test_scan.py:\d+"):
        nd.scan(lambda c, x: (nd.outer(c, c), x), nd.vector("c", shape=(3,)), nd.vector("x"))


def test_a_carry_changing_shape_at_run_time_is_a_shape_error_naming_the_users_line():
    c0, x = nd.vector("c0"), nd.vector("x")
    _, ys = nd.scan(lambda c, xt: (nd.concatenate([c, c]), xt), c0, x)
    f = nd.function([c0, x], ys)
    with pytest.raises(ShapeError, match=r"carry 0 changed shape from \(2,\) to \(4,\)(.|\n)*test_scan.py:\d+"):
        f(np.ones(2), np.ones(3))


def test_mismatched_sequence_lengths_and_bad_lengths_are_refused():
    u, v = nd.vector("u", shape=(3,)), nd.vector("v", shape=(4,))
    with pytest.raises(ShapeError, match=r"sequence 0 has length 3 but sequence 1 has length 4(.|\n)*test_scan.py"):
        nd.scan(lambda c, x: (c + x[0] * x[1], c), nd.scalar("c"), (u, v))
    with pytest.raises(ShapeError, match="length=5 but sequence 0 has length 3"):
        nd.scan(lambda c, x: (c + x, c), nd.scalar("c"), u, length=5)
    with pytest.raises(GraphError, match="give length="):
        nd.scan(lambda c, _: (c, c), nd.scalar("c"))
    with pytest.raises(DTypeError, match="integer scalar"):
        nd.scan(lambda c, _: (c, c), nd.scalar("c"), length=nd.scalar("n"))
    with pytest.raises(ShapeError, match="scalar"):
        nd.scan(lambda c, x: (c, c), nd.scalar("c"), nd.scalar("s"))


def test_an_elementwise_body_compiles_the_whole_loop_into_one_kernel_checked_against_the_interpreter():
    """``backend="cpu"`` compiles the Scan's op kernel (every step in one Numba function) for the Euler ODE, a
    cumulative product (scalar slices, vector outputs) and a reverse scan over vector slices with an integer carry;
    the function reaches "compiled" only once that kernel is compiled, and answers what the interpreter answers."""
    pytest.importorskip("numba")
    y0, k, x, X = nd.vector("y0"), nd.vector("k"), nd.vector("x"), nd.matrix("X")
    y, ys = euler(y0, k, steps=30)
    (_, products), ((count, total), rows) = (
        cumprod(x),
        nd.scan(
            lambda c, row: ((c[0] + 1, c[1] * 0.5 + nd.exp(-row)), c[1] - row),
            (nd.constant(0, "int64"), nd.zeros_like(X[0])),
            X,
            reverse=True,
        ),
    )
    variables, outputs = [y0, k, x, X], [y, ys, products, count, total, rows]
    assert all(cpu_op_kernel(out.owner) is not None for out in outputs)
    arrays = [np.linspace(-1.0, 1.0, 6), np.linspace(0.5, 1.5, 6), np.linspace(0.5, 2.0, 4), RNG.normal(size=(5, 3))]
    compiled = nd.function(variables, outputs, backend="cpu")
    expected = nd.function(variables, outputs, backend="numpy")(*arrays)
    assert compiled.wait(120).startswith("compiled")
    for got, want in zip(compiled(*arrays), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert compiled.status == "compiled" and compiled.backend == "cpu"
    states = kernel_states(compiled.events)
    assert [name for name in states if name.startswith("scan")] == ["scan", "scan#2", "scan#3"]
    assert all(states[name].state in ("ready", "cached") for name in ("scan", "scan#2", "scan#3")), states
    with pytest.MonkeyPatch.context() as patch:  # checked once: later calls run the kernels, never perform
        patch.setattr(Scan, "perform", _refuse)
        for got, want in zip(compiled(*arrays), expected):
            np.testing.assert_allclose(got, want, rtol=1e-12)


def _refuse(*args):
    raise AssertionError("the interpreter ran a scan the compiled kernel should have run")


def test_a_body_that_is_not_elementwise_runs_its_compiled_kernels_in_the_loop():
    """An RNN step (matmuls and a fused tanh) has no whole-loop kernel: ``backend="cpu"`` compiles the body's own
    kernels as units of the function (``scan0.k0``) and the loop calls them each step, checked against the
    interpreter's loop; the gradient's reverse scan compiles its body the same way."""
    pytest.importorskip("numba")
    W, U, b, h0, X = nd.matrix("W"), nd.matrix("U"), nd.vector("b"), nd.vector("h0"), nd.matrix("X")
    h, states = rnn(W, U, b, h0, X)
    assert cpu_op_kernel(h.owner) is None
    cost = nd.sum(states**2)
    variables, outputs = [W, U, b, h0, X], [h, states, *nd.grad(cost, [W, h0])]
    arrays = [RNG.normal(size=(4, 4)) / 2, RNG.normal(size=(4, 3)), RNG.normal(size=4), RNG.normal(size=4)]
    arrays.append(RNG.normal(size=(6, 3)))
    compiled = nd.function(variables, outputs, backend="cpu")
    expected = nd.function(variables, outputs, backend="numpy")(*arrays)
    assert compiled.wait(120).startswith("compiled"), compiled.status
    for got, want in zip(compiled(*arrays), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10)
    assert compiled.status == "compiled" and compiled.backend == "cpu", compiled.status
    states_by_unit = kernel_states(compiled.events)
    loops = [name for name in states_by_unit if name.startswith("scan") and "." not in name]
    assert loops and all(any(n.startswith(f"{loop}.k") for n in states_by_unit) for loop in loops), states_by_unit
    with pytest.MonkeyPatch.context() as patch:  # checked once: later calls run the compiled body, never perform
        patch.setattr(Scan, "perform", _refuse)
        for got, want in zip(compiled(*arrays), expected):
            np.testing.assert_allclose(got, want, rtol=1e-10)


def test_nested_scans_and_a_hessian_through_a_scan():
    """A scan inside a step (the inner loop's body reads the outer slice and an invariant) differentiates to second
    order; the Hessian of a product computed by a scan is the product's."""

    def nested(a, X):
        def outer(c, row):
            inner, _ = nd.scan(lambda s, v: (s * 0.9 + nd.sin(v * a), None), c, row)
            return inner, inner * 2

        return nd.scan(outer, nd.zeros_like(a), X)

    a, X = np.array(0.7), RNG.normal(size=(4, 3))
    c, rows = 0.0, []
    for row in X:
        for v in row:
            c = c * 0.9 + np.sin(v * a)
        rows.append(2 * c)
    variables = [nd.scalar("a"), nd.matrix("X")]
    got = nd.function(variables, list(nested(*variables)))(a, X)
    np.testing.assert_allclose(got[0], c, rtol=1e-12)
    np.testing.assert_allclose(got[1], rows, rtol=1e-12)
    nd.check_grads(lambda a, X: list(nested(a, X)), [a, X], order=2)
    x = nd.vector("x", shape=(3,))
    product, _ = cumprod(x)
    hessian = nd.function([x], nd.hessian(product, x))(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(hessian, [[0.0, 3.0, 2.0], [3.0, 0.0, 1.0], [2.0, 1.0, 0.0]])


def test_a_scan_that_has_run_pickles_without_its_caches_and_runs_again():
    x = nd.vector("x")
    _, ys = cumprod(x)
    nd.function([x], ys)(np.arange(1.0, 4.0))
    assert "_plan" in ys.owner.op.__dict__
    copy = pickle.loads(pickle.dumps(ys))
    assert "_plan" not in copy.owner.op.__dict__
    np.testing.assert_allclose(copy.owner.op.perform(np.asarray(1.0), np.arange(1.0, 4.0))[1], [1.0, 2.0, 6.0])


def test_the_final_carry_has_the_initial_carrys_symbolic_shape_so_gradients_need_no_run_time_reshaping():
    y0, k = nd.vector("y0"), nd.vector("k")
    y, _ = euler(y0, k, steps=5)
    graph = nd.function([y0, k], nd.grad(nd.sum(y * y0), y0)).graph
    outer = [node.op.name for node in graph.nodes]
    assert "sum_to_like" not in outer and "broadcast_like" not in outer, outer

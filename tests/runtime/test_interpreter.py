"""The interpreter plan: frees intermediates after their last use, reuses dead buffers safely, wraps errors."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.runtime.interpreter import Plan


def test_intermediates_are_freed_after_their_last_use():
    x = nd.vector("x")
    a = nd.exp(x)
    b = nd.sin(a)
    c = nd.cos(b)
    plan = Plan(nd.function([x], c, rewrites=False).graph)  # unfused: one step per op
    freed = [slot for step in plan.steps for slot in step.free]
    intermediates = [slot for step in plan.steps[:-1] for slot in step.outputs]
    # a dies at sin and b at cos (the input's reference is dropped after exp); the output is kept
    assert sorted(set(freed) - set(plan.input_slots)) == sorted(intermediates)
    assert plan.steps[1].free == [plan.steps[0].outputs[0]]
    assert plan.output_slots[0] not in freed


def test_buffer_reuse_never_clobbers_a_value_still_needed():
    x = nd.vector("x")
    a = nd.exp(x)
    b = a * 2.0  # a is still needed below, so b must not be written into a's buffer
    c = b + a
    f = nd.function([x], [c, nd.grad(nd.sum(c), x)])
    xv = np.array([0.0, 1.0, 2.0])
    value, grad = f(xv)
    np.testing.assert_allclose(value, 3 * np.exp(xv))
    np.testing.assert_allclose(grad, 3 * np.exp(xv))


def test_buffer_reuse_respects_aliases_between_slots():
    """sum_to_like passes its input through when shapes agree: two slots then hold one array."""
    x, y = nd.vector("x"), nd.vector("y")
    z = nd.exp(x) * nd.exp(y)
    gx, gy = nd.grad(nd.sum(z * z), [x, y])
    f = nd.function([x, y], [gx, gy, z])
    xv, yv = np.array([0.1, 0.2]), np.array([0.3, -0.4])
    expected = 2 * np.exp(2 * (xv + yv))
    for _ in range(3):  # repeated calls must agree (no state leaks between calls)
        got_x, got_y, got_z = f(xv, yv)
        np.testing.assert_allclose(got_x, expected)
        np.testing.assert_allclose(got_y, expected)
        np.testing.assert_allclose(got_z, np.exp(xv + yv))


def test_user_inputs_are_never_modified_and_outputs_are_writable():
    x = nd.vector("x")
    f = nd.function([x], [x, nd.exp(x) + 1.0, nd.broadcast_like(nd.sum(x), x)])
    xv = np.array([1.0, 2.0])
    before = xv.copy()
    same, value, broadcast = f(xv)
    np.testing.assert_array_equal(xv, before)
    assert same is not xv and not np.shares_memory(same, xv)
    for out in (same, value, broadcast):
        assert out.flags.writeable


def test_run_time_errors_name_the_op_shapes_and_line():
    a, b = nd.vector("a"), nd.vector("b")
    total = a * b  # line to be named
    f = nd.function([a, b], total)
    with pytest.raises(nd.errors.ShapeError) as info:
        f(np.ones(2), np.ones(3))
    message = str(info.value)
    assert "mul" in message and "float64[2]" in message and "float64[3]" in message
    assert "test_interpreter.py:" in message and "total = a * b" in message


def test_check_types_verifier_catches_a_lying_op():
    class Lying(nd.graph.basic.Op):
        abstract = True  # not registered: a test-only op

        def infer(self, x):
            return [nd.graph.types.TensorType("float32", x.shape)]

        def perform(self, x):
            return (x,)  # float64, not the promised float32

    x = nd.vector("x")
    node = nd.graph.basic.apply(Lying(), [x], Lying().infer(x))
    plan = Plan(nd.function([x], node.outputs[0]).graph, check_types=True)
    with pytest.raises(nd.errors.ExecutionError, match="a bug in the op"):
        plan.run([np.ones(2)])

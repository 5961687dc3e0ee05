"""The fusion pass and ``FusedElemwise``: kernel counts, values, several outputs, trailing sums, cycles, errors
naming members, ``f.kernels``, structural hashes, derivatives of fused graphs, printing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdiff as nd
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.printing import dprint_str
from nbdiff.ops.fused import FusedElemwise
from nbdiff.ops.reduce import Sum
from nbdiff.rewrite.fusion import fuse
from nbdiff.rewrite.verify import verify


def w1(x):
    """The reference workload: sum(tanh(x) exp(-x^2) + log1p(x^2) sin(3x))."""
    return nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))


def w1_function(dtype="float64", rewrites=True):
    x = nd.vector("x", dtype=dtype)
    y = w1(x)
    return nd.function([x], [y, nd.grad(y, x)], rewrites=rewrites)


def fused_outputs(inputs, outputs):
    """``outputs`` rebuilt by the fusion pass alone (the fused graph's output variables)."""
    return fuse(Graph(inputs, outputs)).graph.outputs


def fused_nodes(f):
    return [node for node in f.graph.nodes if isinstance(node.op, FusedElemwise)]


# ---------------------------------------------------------------------------------------------------------------
# The reference workload
# ---------------------------------------------------------------------------------------------------------------
def test_w1_value_and_gradient_run_as_at_most_two_kernels():
    f = w1_function()
    assert 1 <= len(f.kernels) <= 2
    assert len(f.kernels) == len(fused_nodes(f))
    assert [k.name for k in f.kernels] == [f"k{i}" for i in range(len(f.kernels))]


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_w1_values_equal_the_unrewritten_graph(dtype, rtol):
    fused, plain = w1_function(dtype), w1_function(dtype, rewrites=False)
    xv = np.random.default_rng(0).uniform(-3, 3, 1001).astype(dtype)
    for got, expected in zip(fused(xv), plain(xv)):
        assert got.dtype == expected.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)


def test_fusion_alone_changes_no_arithmetic():
    """The kernel runs the members' own NumPy functions in order: bit-for-bit the unfused results."""
    fused, plain = w1_function(rewrites=["fusion"]), w1_function(rewrites=False)
    assert len(fused.kernels) == 1 and len(fused.graph.nodes) <= 2  # the kernel (and a constant's expand_dims)
    xv = np.random.default_rng(1).normal(size=513)
    for got, expected in zip(fused(xv), plain(xv)):
        np.testing.assert_array_equal(got, expected)
    for got, expected in zip(fused(xv), plain(xv)):  # again: buffers of one call never leak into the next
        np.testing.assert_array_equal(got, expected)


def test_value_and_gradient_share_one_kernel_with_two_outputs():
    f = w1_function(rewrites=["fusion"])
    (kernel,) = f.kernels
    assert [str(v.type) for v in kernel.outputs] == ["float64[]", "float64[?]"]
    assert kernel.op.reductions[0] == Sum((0,), False) and kernel.op.reductions[1] is None
    assert list(f.graph.outputs) == list(kernel.outputs)


def test_kernel_outputs_are_members_used_outside():
    x = nd.vector("x")
    a = nd.exp(nd.sin(x))
    b = nd.tanh(a) * a
    f = nd.function([x], [a, b + 1.0, nd.softmax(b)])
    (kernel,) = f.kernels
    assert len(kernel.outputs) == 3  # a (a graph output), b (softmax, outside, reads it) and b + 1.0
    xv = np.linspace(-1, 1, 7)
    got = f(xv)
    ea = np.exp(np.sin(xv))
    bv = np.tanh(ea) * ea
    np.testing.assert_allclose(got[0], ea, rtol=1e-14)
    np.testing.assert_allclose(got[1], bv + 1.0, rtol=1e-14)
    np.testing.assert_allclose(got[2], np.exp(bv) / np.exp(bv).sum(), rtol=1e-12)


def test_a_member_used_outside_and_inside_keeps_its_value():
    """An output buffer is never reused for a later member's result."""
    x = nd.vector("x")
    a = nd.exp(x)
    c = nd.sin(a) * a + a
    f = nd.function([x], [a, c])
    assert len(f.kernels) == 1
    xv = np.array([0.0, 0.5, 1.0])
    a_value, c_value = f(xv)
    np.testing.assert_allclose(a_value, np.exp(xv), rtol=1e-15)
    np.testing.assert_allclose(c_value, np.sin(np.exp(xv)) * np.exp(xv) + np.exp(xv), rtol=1e-15)


def test_a_tail_computed_only_for_a_later_kernel_moves_into_it():
    """relu's derivative mask (relu(h) > 0) joins the backward kernel that multiplies by it, not the forward one,
    which then writes one output instead of keeping the mask alive across the matmuls."""
    x, W, V = nd.matrix("x"), nd.matrix("W"), nd.matrix("V")
    b = nd.vector("b")
    h = nd.relu(x @ W + b)
    loss = nd.sum(nd.tanh(h @ V))
    f = nd.function([x, W, b, V], nd.grad(loss, [W, b]), backend="numpy")
    forward = next(k for k in f.kernels if "relu" in [m.op for m in k.members])
    assert len(forward.outputs) == 1
    backward = next(k for k in f.kernels if "greater" in [m.op for m in k.members])
    assert {"greater", "mul"} <= {m.op for m in backward.members}
    rng = np.random.default_rng(3)
    args = [rng.normal(size=s) for s in [(5, 4), (4, 3), (3,), (3, 2)]]
    plain = nd.function([x, W, b, V], nd.grad(loss, [W, b]), backend="numpy", rewrites=False)
    for got, expected in zip(f(*args), plain(*args)):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_tail_that_would_make_its_kernel_export_more_stays():
    """A tail reading a member the kernel does not export already would add an output: nothing moves."""
    x, W = nd.matrix("x"), nd.matrix("W")
    a = nd.exp(x)
    inner = nd.sin(a)  # read by the tail and by ``other``, both in the first kernel; not exported
    other = inner + 1.0
    tail = nd.cos(inner) * 2.0  # read only by the kernel after the matmul
    f = nd.function([x, W], [other, (a @ W) * tail], backend="numpy", rewrites=["fusion"])
    first = next(k for k in f.kernels if "exp" in [m.op for m in k.members])
    assert {"exp", "sin", "cos", "add"} <= {m.op for m in first.members}
    rng = np.random.default_rng(4)
    xv, wv = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    np.testing.assert_allclose(f(xv, wv)[1], (np.exp(xv) @ wv) * np.cos(np.sin(np.exp(xv))) * 2.0, rtol=1e-12)


def test_broadcasts_into_follows_joined_symbols():
    from nbdiff.graph.dims import broadcasts_into, fresh_dim, joined_dim

    n, m, k = fresh_dim(), fresh_dim(), fresh_dim()
    assert broadcasts_into((n, m), (n, m))
    assert broadcasts_into((n, 1), (n, m))
    assert broadcasts_into((n, m), (joined_dim([n, k]), m))
    assert not broadcasts_into((n, m), (k, m))  # unrelated symbols: nothing is known
    assert not broadcasts_into((m,), (n, m))  # adding axes is not this relation


# ---------------------------------------------------------------------------------------------------------------
# Trailing reductions
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis, keepdims", [(1, True), (0, False), ((0, 1), False), (None, True), (-1, False)])
def test_trailing_sum_with_axis_and_keepdims(axis, keepdims):
    X = nd.matrix("X")
    f = nd.function([X], nd.sum(nd.exp(X) * nd.cos(X), axis=axis, keepdims=keepdims))
    (kernel,) = f.kernels
    assert len(f.graph.nodes) == 1
    (reduction,) = [r for r in kernel.op.reductions if r is not None]
    assert reduction.keepdims == keepdims
    xv = np.random.default_rng(2).normal(size=(3, 5))
    expected = np.sum(np.exp(xv) * np.cos(xv), axis=axis, keepdims=keepdims)
    got = f(xv)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_a_lone_elementwise_node_is_fused_only_when_it_feeds_a_sum():
    x = nd.vector("x")
    assert nd.function([x], nd.exp(x)).kernels == []
    (kernel,) = nd.function([x], nd.sum(nd.exp(x))).kernels
    assert [m.op for m in kernel.members] == ["exp", "sum"]


def test_nothing_that_uses_the_sum_joins_its_kernel():
    X = nd.matrix("X")
    squares = X * X
    scaled = nd.exp(X * nd.sum(squares, axis=1, keepdims=True))  # uses the sum: needs the loop to have finished
    f = nd.function([X], scaled)
    kernels = f.kernels
    assert len(kernels) == 2
    first, second = (k.node for k in kernels)
    assert any(v is out for v in second.inputs for out in first.outputs)
    assert not any(v is out for v in first.inputs for out in second.outputs)
    xv = np.random.default_rng(3).normal(size=(4, 3)) * 0.3
    np.testing.assert_allclose(f(xv), np.exp(xv * np.sum(xv * xv, axis=1, keepdims=True)), rtol=1e-13)


def test_a_sum_of_a_graph_input_is_not_a_kernel():
    x = nd.vector("x")
    f = nd.function([x], nd.sum(x))
    assert f.kernels == []


# ---------------------------------------------------------------------------------------------------------------
# Cycles
# ---------------------------------------------------------------------------------------------------------------
def test_a_node_depending_on_a_group_through_an_outsider_does_not_join_it():
    """c = a * softmax(a): merging c into a's group would make the kernel feed softmax and consume its result."""
    x = nd.vector("x")
    a = nd.exp(nd.sin(x))
    c = nd.tanh(a * nd.softmax(a))
    f = nd.function([x], c)
    assert len(f.kernels) == 2
    first, second = (k.node for k in f.kernels)
    softmax_node = next(node for node in f.graph.nodes if node.op.name == "softmax")
    order = f.graph.nodes
    assert order.index(first) < order.index(softmax_node) < order.index(second)
    xv = np.linspace(-2, 2, 9)
    av = np.exp(np.sin(xv))
    np.testing.assert_allclose(f(xv), np.tanh(av * np.exp(av) / np.exp(av).sum()), rtol=1e-13)


def test_merging_two_groups_that_depend_on_each_other_through_an_outsider_is_refused():
    """c = a + b with a in group G and b in group H, where H depends on G through softmax: naively merging
    G, H and c into one kernel would need softmax's result before the kernel could run."""
    x = nd.vector("x")
    a = nd.exp(nd.sin(x))  # G
    b = nd.cos(nd.softmax(a)) * 2.0  # H, after softmax(G)
    c = nd.sum(a + b)
    f = nd.function([x], c, rewrites=["fusion"])
    verify(f.graph, after="fusion")
    assert len(f.kernels) == 2
    softmax_node = next(node for node in f.graph.nodes if node.op.name == "softmax")
    first, second = (k.node for k in f.kernels)
    assert any(v is out for v in softmax_node.inputs for out in first.outputs)
    assert any(v is softmax_node.outputs[0] for v in second.inputs)
    assert any(v is out for v in second.inputs for out in first.outputs)  # c's add joined H, reading a from G
    xv = np.linspace(-1, 1, 5)
    av = np.exp(np.sin(xv))
    np.testing.assert_allclose(f(xv), np.sum(av + np.cos(np.exp(av) / np.exp(av).sum()) * 2.0), rtol=1e-13)


def computed(f, op_name: str) -> int:
    """How many times ``f``'s graph computes ``op_name``: as plain nodes and as kernel members."""
    plain = sum(node.op.name == op_name for node in f.graph.nodes)
    return plain + sum(m.op == op_name for k in f.kernels for m in k.members)


def test_a_merge_sees_paths_through_groups_merged_earlier_in_the_walk():
    """r = softmax(cos x) is computed before cos joins sin(softmax(exp x)) * cos x; then r * exp(x) must not join
    exp's group: that kernel would wait for r, which waits for the kernel holding cos, which waits for softmax(exp)."""
    x = nd.vector("x")
    c, b = nd.exp(x), nd.cos(x)
    r = nd.softmax(b)
    outputs = [r, nd.sin(nd.softmax(c)) * b, r * c]
    f = nd.function([x], outputs, rewrites=["fusion"])
    verify(f.graph, after="fusion")
    assert [computed(f, name) for name in ("exp", "cos", "sin", "softmax")] == [1, 1, 1, 2]
    xv = np.linspace(-1, 1, 6)
    for got, expected in zip(f(xv), nd.function([x], outputs, rewrites=False)(xv)):
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------------------------
# Independent groups sharing a loop
# ---------------------------------------------------------------------------------------------------------------
def test_independent_groups_sharing_a_loop_become_one_kernel():
    x = nd.vector("x")
    a, b = nd.exp(nd.sin(x)), nd.cos(nd.tanh(x))  # no edge between the two chains, one loop shape
    f = nd.function([x], [a, b], rewrites=["fusion"])
    (kernel,) = f.kernels
    assert len(kernel.outputs) == 2 and list(f.graph.outputs) == list(kernel.outputs)
    assert [record.firings[0].rule for record in f.history] == ["fuse_elemwise"]
    xv = np.linspace(-2, 2, 11)
    for got, expected in zip(f(xv), nd.function([x], [a, b], rewrites=False)(xv)):
        np.testing.assert_array_equal(got, expected)


def test_a_lone_elementwise_node_joins_an_independent_kernel_of_its_loop():
    s, t = nd.scalar("s"), nd.scalar("t")
    f = nd.function([s, t], [nd.exp(s) * 2.0, nd.cos(t)], rewrites=["fusion"])
    (kernel,) = f.kernels
    assert [m.op for m in kernel.members] == ["exp", "mul", "cos"]
    np.testing.assert_allclose(f(0.5, 0.25), [np.exp(0.5) * 2.0, np.cos(0.25)], rtol=1e-15)


def test_independent_groups_of_different_loops_stay_apart():
    x, m = nd.vector("x"), nd.matrix("m")
    f = nd.function([x, m], [nd.exp(nd.sin(x)), nd.cos(nd.tanh(m))], rewrites=["fusion"])
    assert len(f.kernels) == 2


def test_independent_groups_joined_through_an_outsider_stay_apart():
    """b's chain reads softmax(a): no edge joins the two groups, but one kernel would feed softmax and need it."""
    x = nd.vector("x")
    a = nd.exp(nd.sin(x))
    b = nd.cos(nd.tanh(nd.softmax(a)))
    f = nd.function([x], [a, b], rewrites=["fusion"])
    verify(f.graph, after="fusion")
    assert len(f.kernels) == 2
    xv = np.linspace(-1, 1, 5)
    av = np.exp(np.sin(xv))
    np.testing.assert_allclose(f(xv)[1], np.cos(np.tanh(np.exp(av) / np.exp(av).sum())), rtol=1e-14)


def test_independent_merge_sees_paths_through_groups_merged_before():
    """Z = exp(x) and W = tanh(x) * R share a loop, with R = max(stack([Y, Y])) read from the scalar group Y.
    Y and X = sin(max(Z)) * 2 share the 0-d loop. Each pair alone is independent, but both merged make a cycle
    (ZW -> max -> XY -> stack, max -> ZW): the check follows the outside producers of groups merged earlier."""
    x = nd.vector("x")
    z = nd.exp(x)
    y_group = nd.cos(nd.max(x)) + 1.0
    r = nd.max(nd.stack([y_group, y_group]))
    w = nd.tanh(x) * r
    x_group = nd.sin(nd.max(z)) * 2.0
    outputs = [w, x_group, z]
    f = nd.function([x], outputs, rewrites=["fusion"])
    verify(f.graph, after="fusion")
    assert len(f.kernels) == 3  # one of the two pairs merged, not both
    assert computed(f, "exp") == computed(f, "cos") == 1  # nothing built twice
    xv = np.linspace(-1, 1, 6)
    for got, expected in zip(f(xv), nd.function([x], outputs, rewrites=False)(xv)):
        np.testing.assert_array_equal(got, expected)


def test_the_rows_of_an_unrolled_jacobian_share_one_kernel():
    p = nd.vector("p", shape=(3,))
    y = nd.stack([p[0] * p[1], nd.sin(p[2]), p[1] - p[0] ** 2])
    f = nd.function([p], nd.jacobian(y, p, mode="unroll"))
    assert len(f.kernels) == 1
    pv = np.array([0.3, -0.7, 1.1])
    np.testing.assert_allclose(
        f(pv), nd.function([p], nd.jacobian(y, p, mode="unroll"), rewrites=False)(pv), rtol=1e-15
    )


# ---------------------------------------------------------------------------------------------------------------
# Errors name the member
# ---------------------------------------------------------------------------------------------------------------
def test_a_run_time_error_inside_a_kernel_names_the_member_and_its_line():
    x, y = nd.vector("x"), nd.vector("y")
    z = nd.exp(x) + nd.sin(y)  # the failing member: shapes (3,) and (4,) do not broadcast
    f = nd.function([x, y], nd.tanh(z) * 2.0)
    (kernel,) = f.kernels
    with pytest.raises(nd.errors.ShapeError) as info:
        f(np.zeros(3), np.zeros(4))
    message = str(info.value)
    assert message.startswith("add: failed at run time inside fused kernel k0")
    assert "float64[3], float64[4]" in message
    assert "test_fusion.py" in message and "z = nd.exp(x) + nd.sin(y)" in message


def test_an_error_in_a_trailing_sum_names_the_sum():
    op = FusedElemwise((("float64", 1),), ((nd.ops.elemwise.Exp(), (0,)),), (1,), (Sum((1,), False),))
    with pytest.raises(nd.errors.NbdiffError) as info:
        op.perform(np.zeros(3))
    assert str(info.value).startswith("sum: failed at run time inside fused kernel")


def test_wrong_inputs_to_a_fused_op_are_a_dtype_error():
    x = nd.vector("x")
    (node,) = nd.function([x], nd.sum(nd.exp(x) * x)).graph.nodes
    with pytest.raises(nd.errors.DTypeError, match="expects inputs float64"):
        node.op.make_node(nd.vector("i", dtype="int64"))


# ---------------------------------------------------------------------------------------------------------------
# Inspection: f.kernels, provenance, history, printing
# ---------------------------------------------------------------------------------------------------------------
def test_kernels_list_members_with_user_lines_and_gradient_labels():
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x) * x)  # forward line
    g = nd.grad(y, x)  # gradient line
    f = nd.function([x], [y, g], rewrites=["fusion"])
    (kernel,) = f.kernels
    forward_line = y.owner.provenance.site.label
    gradient_line = g.owner.provenance.site.label
    tanh = next(m for m in kernel.members if m.op == "tanh")
    assert tanh.line == forward_line and not tanh.gradient and tanh.transform == ""
    gradient = [m for m in kernel.members if m.gradient]
    assert gradient and all(m.line == gradient_line for m in gradient)
    assert any(m.transform == f"pullback of tanh at {forward_line}" for m in gradient)
    assert kernel.members[-1].op == "sum"
    assert kernel.inputs == tuple(kernel.node.inputs) and kernel.outputs == tuple(kernel.node.outputs)
    text = repr(kernel)
    assert text.startswith("<Kernel k0 ") and f"{len(kernel.members)} members ({len(gradient)} gradient)" in text
    assert "pullback of tanh" in repr(gradient[0]) or any("pullback of tanh" in repr(m) for m in gradient)


def test_fused_node_carries_every_members_provenance():
    x = nd.vector("x")
    a = nd.exp(x)
    b = nd.sum(a * nd.sin(x))
    f = nd.function([x], b)
    (kernel,) = f.kernels
    origins = kernel.node.provenance.origins
    lines = {origin.site.label for origin in origins}
    assert {a.owner.provenance.site.label, b.owner.provenance.site.label} <= lines
    assert all(origin.transforms[-1] == "fused into kernel k0" for origin in origins)


def test_history_records_one_firing_per_kernel():
    f = w1_function()
    (record,) = [r for r in f.history if r.name == "fusion"]
    assert record.changed and len(record.firings) == len(f.kernels)
    firing = record.firings[0]
    assert firing.rule == "fuse_elemwise"
    assert firing.before.startswith("tanh") and firing.before.endswith("sum")
    assert firing.after.startswith("fused k0{")


def test_dprint_shows_kernels_labelled_fused_with_member_lines():
    f = w1_function(rewrites=["fusion"])
    text = dprint_str(f)
    (kernel,) = f.kernels
    gradient = sum(m.gradient for m in kernel.members)
    assert "fused k0{tanh, power, negative, exp, ..., sum}(x, " in text
    assert f"[fused: {len(kernel.members)} members, {gradient} gradient]" in text
    assert "    t0 = tanh(x)" in text
    assert text.count("\n    t") == len(kernel.op.program)
    assert "= sum{axes=(0,), keepdims=False}(t9)" in text
    assert "[grad of tanh @ test_fusion.py:" in text
    assert dprint_str(w1_function(rewrites=["fusion"])) == text  # deterministic


def test_structural_hash_ignores_constant_values_but_not_structure():
    x = nd.vector("x")

    def kernel_of(y):
        (kernel,) = nd.function([x], y).kernels
        return kernel

    two = kernel_of(nd.sum(nd.exp(x) * 2.5 + 1.5))
    three = kernel_of(nd.sum(nd.exp(x) * 3.5 + 0.5))
    sine = kernel_of(nd.sum(nd.sin(x) * 2.5 + 1.5))
    x32 = nd.vector("x32", dtype="float32")
    single = nd.function([x32], nd.sum(nd.exp(x32) * 2.5 + 1.5)).kernels[0]
    assert two.structural_hash == three.structural_hash and two.op == three.op and hash(two.op) == hash(three.op)
    assert len(two.structural_hash) == 40 and int(two.structural_hash, 16) >= 0
    assert sine.structural_hash != two.structural_hash and sine.op != two.op
    assert single.structural_hash != two.structural_hash


def test_identity_leaves_out_provenance_and_the_kernel_name():
    x = nd.vector("x")
    op = nd.function([x], nd.sum(nd.exp(x) * x)).kernels[0].op
    renamed = FusedElemwise(op.input_kinds, op.program, op.results, op.reductions, (), "k7")
    assert renamed == op and hash(renamed) == hash(op) and renamed.structural_hash() == op.structural_hash()
    assert "member_provenance" not in op.params() and "kernel_name" not in op.params()


# ---------------------------------------------------------------------------------------------------------------
# Derivatives of fused graphs
# ---------------------------------------------------------------------------------------------------------------
def test_gradient_through_a_fused_node_equals_the_unfused_gradient():
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x) * nd.exp(-(x**2)))
    (fused_y,) = fused_outputs([x], [y])
    assert isinstance(fused_y.owner.op, FusedElemwise)
    fused_grad = nd.function([x], nd.grad(fused_y, x), rewrites=False)
    plain_grad = nd.function([x], nd.grad(y, x), rewrites=False)
    xv = np.linspace(-2, 2, 11)
    np.testing.assert_allclose(fused_grad(xv), plain_grad(xv), rtol=1e-13, atol=1e-15)


def test_lop_and_rop_through_a_multi_output_fused_node():
    x = nd.vector("x")
    a = nd.exp(nd.sin(x))
    b = a * nd.cos(x)
    fa, fb = fused_outputs([x], [a, b])
    assert fa.owner is fb.owner and isinstance(fa.owner.op, FusedElemwise)
    u, v = nd.vector("u"), nd.vector("v")
    fused = nd.function([x, u, v], [nd.Lop([fa, fb], x, [u, v]), nd.Rop([fa, fb], x, v)[1]], rewrites=False)
    plain = nd.function([x, u, v], [nd.Lop([a, b], x, [u, v]), nd.Rop([a, b], x, v)[1]], rewrites=False)
    rng = np.random.default_rng(4)
    args = [rng.normal(size=6) for _ in range(3)]
    for got, expected in zip(fused(*args), plain(*args)):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_fused_nodes_pass_gradient_checks_to_second_order():
    def build(a, b):
        (out,) = fused_outputs([a, b], [nd.sum(nd.tanh(a) * nd.exp(b) + a * b, axis=1, keepdims=True)])
        return out

    rng = np.random.default_rng(5)
    nd.check_grads(build, [rng.normal(size=(3, 4)), rng.normal(size=(4,)) * 0.5], order=2)


def test_functions_of_fused_graphs_fuse_again_without_nesting():
    x = nd.vector("x")
    (y,) = fused_outputs([x], [nd.sum(nd.exp(x) * x)])
    f = nd.function([x], nd.grad(y, x))
    assert all(not isinstance(i.owner.op, FusedElemwise) for k in f.kernels for i in k.inputs if i.owner)
    xv = np.array([0.1, 0.2])
    np.testing.assert_allclose(f(xv), np.exp(xv) * xv + np.exp(xv), rtol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# Random graphs: fusion never changes a value, and its graphs verify
# ---------------------------------------------------------------------------------------------------------------
UNARY = (nd.tanh, nd.sin, nd.cos, nd.negative, lambda v: nd.exp(-nd.abs(v)))
BINARY = (nd.add, nd.mul, nd.sub, nd.maximum)


def random_graph(choices: list[int], x, m):
    """A DAG over a vector ``x`` and a matrix ``m``: elementwise ops (mostly on recent values, so chains form),
    sums, softmax barriers; its outputs are a few values picked by ``choices`` and the last one."""
    values = [x, m, nd.tanh(m)]
    for position in range(0, len(choices) - 2, 3):
        kind, i, j = choices[position : position + 3]
        a, b = values[-1 - i % min(4, len(values))], values[j % len(values)]
        if kind % 7 in (0, 1):
            values.append(UNARY[kind % len(UNARY)](a))
        elif kind % 7 in (2, 3, 4):
            values.append(BINARY[kind % len(BINARY)](a, b))
        elif kind % 7 == 5:
            values.append(nd.sum(a, axis=0, keepdims=bool(kind % 2)) if a.ndim else a * 2.0)
        else:
            values.append(nd.softmax(a) if a.ndim else nd.exp(a))
    picked = {c % len(values) for c in choices[:3]} | {len(values) - 1}
    return [values[k] for k in sorted(picked)]


@given(st.lists(st.integers(0, 40), min_size=24, max_size=60))
def test_random_graphs_fuse_to_the_same_values(choices):
    x, m = nd.vector("x", shape=(4,)), nd.matrix("m", shape=(3, 4))  # static: one loop shape per rank
    outputs = random_graph(choices, x, m)
    cost = sum(nd.sum(out) for out in outputs)
    outputs += nd.grad(cost, [x, m], disconnected="zero")  # gradient graphs fuse as forward ones do
    fused = nd.function([x, m], outputs, rewrites=["fusion"])
    verify(fused.graph, after="fusion")
    plain = nd.function([x, m], outputs, rewrites=False)
    rng = np.random.default_rng(len(choices))
    args = [rng.normal(size=4), rng.normal(size=(3, 4))]
    try:
        expected_values = plain(*args)
    except nd.errors.ShapeError:  # e.g. a (3,) sum meeting the (4,) vector: the kernel must fail the same way
        with pytest.raises(nd.errors.ShapeError):
            fused(*args)
        return
    for got, expected in zip(fused(*args), expected_values):
        np.testing.assert_array_equal(got, expected)
    assert len(fused.graph.nodes) <= len(plain.graph.nodes)
    assert [k.op.kernel_name for k in fused.kernels] == [k.name for k in fused.kernels]  # named by position

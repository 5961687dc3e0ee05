"""Second-order graphs after rewriting: Hessian-vector products and other Rop / Lop graphs fuse into one kernel.

Derivatives require their seeds to have the shape of what they seed (a tangent the shape of its variable, an eval
point or known gradient the shape of its output). ``assert_shape_like`` makes that a run-time check and a fact of
the symbolic shapes, so the tangent's unknown length is the variable's and the whole product shares one loop.
Also here: fusion never duplicates work (a kernel's member is never computed again outside it).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.traversal import toposort
from nbdiff.ops.broadcast import AssertShapeLike, sum_to_like
from nbdiff.ops.fused import FusedElemwise
from nbdiff.rewrite.fusion import fuse

BEFORE_FUSION = ["merge", "fold", "stability", "simplify"]
PYTENSOR_HVP_NODES = 1  # PyTensor 3.0.7, FAST_RUN: pushforward(grad(W1)) and hessian_vector_product both give 1


def w1(x):
    """The reference workload: sum(tanh(x) exp(-x^2) + log1p(x^2) sin(3x))."""
    return nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))


def hvp_outputs():
    x, v = nd.vector("x"), nd.vector("v")
    return [x, v], nd.Rop(nd.grad(w1(x), x), x, v)


def vectors(n=9, count=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2, 2, n) for _ in range(count)]


def assert_matches_unrewritten(inputs, outputs, arrays, rtol=1e-10):
    rewritten = nd.function(inputs, outputs)
    plain = nd.function(inputs, outputs, rewrites=False)
    got, expected = rewritten(*arrays), plain(*arrays)
    for a, b in zip(got if isinstance(got, list) else [got], expected if isinstance(expected, list) else [expected]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)
    return rewritten


def op_counts(graph):
    """How often each op is computed in ``graph``, counting a fused kernel's members one by one."""
    counts = Counter()
    for node in graph.nodes:
        if isinstance(node.op, FusedElemwise):
            counts.update(node.op.member_names())
        else:
            counts[node.op.name] += 1
    return counts


def assert_shape_nodes(outputs):
    """The ``assert_shape_like`` nodes of the graph as written."""
    nodes = toposort(outputs if isinstance(outputs, list) else [outputs])
    return [node for node in nodes if isinstance(node.op, AssertShapeLike)]


# ---------------------------------------------------------------------------------------------------------------
# Node and kernel counts
# ---------------------------------------------------------------------------------------------------------------
def test_hvp_of_w1_is_one_fused_kernel():
    inputs, out = hvp_outputs()
    f = assert_matches_unrewritten(inputs, out, vectors())
    assert len(f.kernels) == 1
    assert len(f.graph.nodes) <= PYTENSOR_HVP_NODES
    assert not any(node.op.name == "sum_to_like" for node in f.graph.nodes)


def test_hvp_tangent_is_checked_once_inside_the_kernel():
    inputs, out = hvp_outputs()
    assert len(assert_shape_nodes(out)) == 1
    (kernel,) = nd.function(inputs, out).kernels
    assert [m.op for m in kernel.members].count("assert_shape_like") == 1


@pytest.mark.parametrize(
    "name, kernels",
    [
        ("lop-of-grad", 1),
        ("rop-vector-and-scalar", 2),  # the scalar's work (sin(w), its tangent) runs once, in its own kernel
        ("lop-matrix", 1),
        ("known-grads", 1),
        ("hvp-with-value-and-gradient", 1),
    ],
)
def test_other_derivative_graphs_fuse_into_one_kernel_per_loop(name, kernels):
    x, v = nd.vector("x"), nd.vector("v")
    arrays = vectors()
    if name == "lop-of-grad":
        inputs, outputs = [x, v], nd.Lop(nd.grad(w1(x), x), x, v)
    elif name == "rop-vector-and-scalar":
        w, t = nd.scalar("w"), nd.scalar("t")
        inputs, outputs = [x, w, v, t], nd.Rop(nd.tanh(x) * nd.sin(w) + x * w, [x, w], [v, t])
        xv, vv = vectors()
        arrays = [xv, np.float64(0.3), vv, np.float64(-1.2)]
    elif name == "lop-matrix":
        X, U = nd.matrix("X"), nd.matrix("U")
        inputs, outputs = [X, U], nd.Lop(nd.tanh(X) * nd.exp(-X), X, U)
        arrays = [a.reshape(3, 3) for a in arrays]
    elif name == "known-grads":
        h = nd.tanh(x) * x
        inputs, outputs = [x, v], nd.grad(None, x, known_grads={h: v})
    else:
        y = w1(x)
        inputs, outputs = [x, v], [y, nd.grad(y, x), nd.Rop(nd.grad(y, x), x, v)]
    f = assert_matches_unrewritten(inputs, outputs, arrays)
    assert len(f.kernels) == kernels
    assert len(f.graph.nodes) == kernels


def test_no_assertion_where_shapes_are_already_provably_equal():
    x = nd.vector("x")
    static = nd.vector("s", shape=(5,))
    assert not assert_shape_nodes(nd.Rop(nd.tanh(x), x, nd.ones_like(x)))
    assert not assert_shape_nodes(nd.Rop(nd.tanh(x), x, 2 * x))
    assert not assert_shape_nodes(nd.Rop(nd.tanh(static), static, nd.vector("t", shape=(5,))))
    assert not assert_shape_nodes(nd.grad(nd.sum(nd.tanh(x)), x))
    assert len(assert_shape_nodes(nd.Rop(nd.tanh(x), x, nd.vector("t")))) == 1


def test_assertion_keeps_what_static_shapes_know():
    x, t = nd.matrix("x", shape=(None, 3)), nd.matrix("t", shape=(4, None))
    out = nd.Rop(nd.tanh(x), x, t)
    (node,) = assert_shape_nodes(out)
    assert node.outputs[0].shape == (4, 3)


def test_derivatives_through_the_assertion():
    """The tangent passes through: the gradient of an HVP with respect to the tangent is the Hessian row sum."""
    inputs, out = hvp_outputs()
    x, v = inputs
    g = nd.grad(nd.sum(out), v)
    xv, vv = vectors()
    f, plain = nd.function(inputs, g), nd.function(inputs, g, rewrites=False)
    np.testing.assert_allclose(f(xv, vv), plain(xv, vv), rtol=1e-10, atol=1e-12)
    hessian_row_sums = nd.function([x], nd.Lop(nd.grad(w1(x), x), x, nd.ones_like(x)))(xv)
    np.testing.assert_allclose(f(xv, vv), hessian_row_sums, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# The run-time check
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rewrites", [True, False])
def test_wrong_tangent_shape_raises_naming_rop_both_shapes_and_the_line(rewrites):
    inputs, out = hvp_outputs()
    f = nd.function(inputs, out, rewrites=rewrites)
    with pytest.raises(nd.errors.ShapeError) as info:
        f(np.zeros(5), np.zeros(4))
    message = str(info.value)
    assert "assert_shape_like" in message
    assert "Rop: the tangent for x has shape (4,), but must have shape (5,)" in message
    assert "test_hvp_graph.py:" in message


def test_wrong_eval_point_shape_raises_naming_lop():
    x, u = nd.matrix("x"), nd.matrix("u")
    f = nd.function([x, u], nd.Lop(nd.sin(x) * x, x, u))
    with pytest.raises(nd.errors.ShapeError, match=r"Lop: the eval point for output 0 \(mul\) has shape \(2, 3\)"):
        f(np.zeros((3, 2)), np.zeros((2, 3)))


def test_wrong_known_gradient_shape_raises_naming_it():
    x, g = nd.vector("x"), nd.vector("g")
    h = nd.exp(x)
    h.name = "h"
    f = nd.function([x, g], nd.grad(None, x, known_grads={h: g}))
    with pytest.raises(nd.errors.ShapeError, match=r"the known gradient for h has shape \(2,\)"):
        f(np.zeros(3), np.zeros(2))


def test_a_broadcastable_tangent_is_refused_too():
    """A length-1 tangent would broadcast silently in the elementwise ops: the assertion refuses it."""
    inputs, out = hvp_outputs()
    with pytest.raises(nd.errors.ShapeError, match="has shape"):
        nd.function(inputs, out)(np.zeros(5), np.zeros(1))


# ---------------------------------------------------------------------------------------------------------------
# Fusion never duplicates work
# ---------------------------------------------------------------------------------------------------------------
def _crossing_groups(x, v):
    """Two loops (x's length, and x's broadcast with v's) whose groups feed each other through un-broadcasts: the
    merges that would make a cycle only show once earlier merges are taken into account."""
    m = nd.exp(x)
    q = sum_to_like(m * v, x)
    k = q * v
    s = nd.sin(x * v)
    n = m + sum_to_like(s, x)
    return k + s, n


@pytest.mark.parametrize("flip", [False, True])
def test_fusion_computes_each_member_once(flip):
    x, v = nd.vector("x"), nd.vector("v")
    outputs = list(_crossing_groups(x, v))
    outputs = outputs[::-1] if flip else outputs
    before = nd.function([x, v], outputs, rewrites=BEFORE_FUSION).graph
    fused = fuse(before).graph
    assert op_counts(fused) == op_counts(before)
    assert_matches_unrewritten([x, v], outputs, [np.linspace(-1, 1, 5), np.linspace(0, 2, 5)])


def test_hvp_without_shape_facts_fuses_without_duplicates():
    """``grad(sum(grad(y) * v))``: v is no seed here, so several loops remain; none computes a member twice."""
    x, v = nd.vector("x"), nd.vector("v")
    out = nd.grad(nd.sum(nd.grad(w1(x), x) * v), x)
    before = nd.function([x, v], out, rewrites=BEFORE_FUSION).graph
    assert op_counts(fuse(before).graph) == op_counts(before)
    assert_matches_unrewritten([x, v], out, vectors())


def test_fused_graph_is_a_graph_of_the_same_inputs():
    inputs, out = hvp_outputs()
    graph = nd.function(inputs, out).graph
    assert isinstance(graph, Graph)
    assert [v.name for v in graph.inputs] == ["x", "v"]

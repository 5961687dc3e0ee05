"""Whether a node is a gradient node is decided once, from its typed ``Derivative`` record: the printer, the kernel
listing, the drawing, "show gradient" and the stepper agree, and a forward node a rewrite rebuilt stays forward."""

from __future__ import annotations

import re

import nbdiff as nd
from nbdiff.graph.printing import dprint_str
from nbdiff.rewrite.fusion import kernels_of
from nbdiff.widgets.scene import build_scene
from nbdiff.widgets.stepper import graph_svg


def _squared_cost():
    """``sum(tanh(x) ** 2)`` and its gradient: simplify rewrites the forward ``power`` into ``square``."""
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x) ** 2)
    return nd.function([x], [y, nd.grad(y, x)], backend="numpy")


def _pass(f, name):
    return next(record for record in f.history if record.name == name)


def test_a_square_simplify_makes_from_a_forward_power_is_a_forward_node():
    after = _pass(_squared_cost(), "simplify").after
    square = next(node for node in after.nodes if node.op.name == "square")
    assert "rewrite" in " ".join(square.provenance.primary.transforms)
    assert not square.provenance.is_gradient
    kinds = {box.source.op.name: box.kind for box in build_scene(after).boxes if box.kind in ("forward", "gradient")}
    assert kinds["square"] == "forward"
    assert kinds["tanh"] == "forward"
    svg = graph_svg(after)  # what the rewrite stepper draws for the pass
    assert re.search(r'<g class="nbdiff-node forward"[^>]*><title>square\b', svg)
    assert not re.search(r'<g class="nbdiff-node gradient"[^>]*><title>square\b', svg)


def test_log_sum_exp_from_the_stability_rewrite_stays_visible_without_gradient():
    x = nd.vector("x")
    f = nd.function([x], nd.log(nd.sum(nd.exp(x))), backend="numpy", rewrites=("stability",))
    (node,) = f.graph.nodes
    assert node.op.name == "log_sum_exp" and "rewrite log_sum_exp" in node.provenance.primary.transforms
    assert not node.provenance.is_gradient
    scene = build_scene(f.graph, gradient=False)
    assert [box.label for box in scene.boxes if box.kind == "forward"] == ["log_sum_exp{axes=(0,)}"]
    assert "hidden" not in scene.caption
    assert "[rewrite log_sum_exp]" in dprint_str(f)


def test_printer_kernel_listing_and_drawing_count_the_same_gradient_nodes():
    f = _squared_cost()
    (kernel,) = kernels_of(f.graph)
    gradient_members = [member for member in kernel.members if member.gradient]
    forward_members = [member for member in kernel.members if not member.gradient]
    assert {m.op for m in forward_members} >= {"tanh", "square"}
    assert all(not m.transform for m in forward_members)
    listing = dprint_str(f)
    assert f"{len(gradient_members)} gradient]" in listing
    (box,) = [box for box in build_scene(f.graph, kernels_of(f.graph)).boxes if box.kind == "kernel"]
    assert sum(member.kind == "gradient" for member in box.members) == len(gradient_members)
    assert f"({len(gradient_members)} gradient)" in box.title


def test_a_gradient_node_records_the_forward_node_it_differentiates():
    x = nd.vector("x")
    t = nd.tanh(x)
    g = nd.grad(nd.sum(t), x)
    derivative = g.provenance.derivative
    assert (derivative.call, derivative.rule, derivative.op) == ("grad", "pullback", "tanh")
    assert derivative.site == t.owner.provenance.site
    assert not t.owner.provenance.is_gradient


def test_vmap_keeps_gradient_nodes_gradient_and_forward_nodes_forward():
    x = nd.vector("x")
    y = nd.sum(nd.exp(x))
    jac = nd.jacobian(nd.grad(y, x), x, mode="reverse")
    nodes = nd.function([x], jac, backend="numpy", rewrites=False).graph.nodes
    assert all(node.provenance.is_gradient for node in nodes if "vmap of" in " ".join(node.provenance.transforms))
    batched = nd.vmap(lambda v: nd.exp(v) * 2.0)(nd.matrix("m"))
    assert not batched.owner.provenance.is_gradient

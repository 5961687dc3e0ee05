"""The graph view without a browser: the layout, the SVG it writes, and the widget's state.

The small fixed graph is built from source compiled under the pseudo-file ``<golden>``, so its provenance (user
lines) does not move when this test file changes, and a subprocess can build exactly the same graph.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

import nbdiff as nd
from nbdiff.widgets.layout import assign_layers, layered_layout
from nbdiff.widgets.scene import COLLAPSE_ABOVE, build_scene
from nbdiff.widgets.svg import layout_scene, scene_to_svg

SVG = "{http://www.w3.org/2000/svg}"

GOLDEN_SOURCE = """\
import nbdiff as nd
x = nd.vector("x")
y = nd.sum(nd.tanh(x) * x)
g = nd.grad(y, x)
f = nd.function([x], [y, g], rewrites=False)
"""

# One line per box: kind, key, label, shape, user line, and its frame (x, y, width, height); then one per edge.
GOLDEN_DIGEST = """\
input n0 'x' 'float64[?]' <golden>:2 (276.9, 12.0, 83.0, 34.0)
constant n1 '1.0' 'float64[]' - (22.7, 86.0, 76.3, 34.0)
forward n2 'tanh' 'float64[?]' <golden>:3 (237.2, 86.0, 83.0, 34.0)
forward n3 'mul' 'float64[?]' <golden>:3 (299.2, 160.0, 83.0, 34.0)
forward n4 'sum{axes=(0,)}' 'float64[]' <golden>:3 (321.1, 234.0, 109.8, 34.0)
gradient n5 'expand_dims{axes=(0,)}' 'float64[1]' <golden>:4 (28.0, 160.0, 163.4, 34.0)
gradient n6 'broadcast_like' 'float64[?]' <golden>:4 (163.3, 234.0, 109.8, 34.0)
gradient n7 'mul' 'float64[?]' <golden>:4 (268.7, 382.0, 83.0, 34.0)
gradient n8 'sum_to_like' 'float64[?]' <golden>:4 (246.9, 456.0, 89.7, 34.0)
gradient n9 'mul' 'float64[?]' <golden>:4 (170.8, 308.0, 83.0, 34.0)
gradient n10 'sum_to_like' 'float64[?]' <golden>:4 (163.0, 382.0, 89.7, 34.0)
gradient n11 'mul' 'float64[?]' <golden>:4 (71.8, 308.0, 83.0, 34.0)
gradient n12 'sub' 'float64[?]' <golden>:4 (64.0, 382.0, 83.0, 34.0)
gradient n13 'mul' 'float64[?]' <golden>:4 (147.9, 456.0, 83.0, 34.0)
gradient n14 'add' 'float64[?]' <golden>:4 (199.1, 530.0, 83.0, 34.0)
output n15 'output 0' 'float64[]' - (374.2, 604.0, 76.3, 34.0)
output n16 'output 1' 'float64[?]' - (199.1, 604.0, 83.0, 34.0)
edge n0 n2
edge n2 n3
edge n0 n3
edge n3 n4
edge n1 n5
edge n5 n6
edge n3 n6
edge n6 n7
edge n2 n7
edge n7 n8
edge n0 n8
edge n6 n9
edge n0 n9
edge n9 n10
edge n2 n10
edge n2 n11
edge n1 n12
edge n11 n12
edge n10 n13
edge n12 n13
edge n8 n14
edge n13 n14
edge n4 n15
edge n14 n16"""


def build_golden() -> dict:
    namespace: dict = {}
    exec(compile(GOLDEN_SOURCE, "<golden>", "exec"), namespace)
    return namespace


def parse(svg: str) -> ET.Element:
    """The SVG as an XML tree (parsing also proves the text is well-formed and escaped)."""
    return ET.fromstring(svg)


def digest(svg: str) -> str:
    """A structural digest of an SVG: each box's kind, key, texts, line and frame, then each edge's ends."""
    root = parse(svg)
    lines = []
    for group in root.iter(f"{SVG}g"):
        classes = group.get("class", "").split()
        if "nbdiff-node" not in classes or "member" in classes:
            continue
        rect = group.find(f"{SVG}rect")
        texts = [t.text for t in group.findall(f"{SVG}text")]
        frame = tuple(float(rect.get(a)) for a in ("x", "y", "width", "height"))
        line = group.get("data-line") or "-"
        lines.append(f"{classes[1]} {group.get('data-node')} {texts[0]!r} {texts[1]!r} {line} {frame}")
    for path in root.iter(f"{SVG}path"):
        if path.get("data-from"):
            lines.append(f"edge {path.get('data-from')} {path.get('data-to')}")
    return "\n".join(lines)


def boxes_of(svg: str, cls: str) -> list[ET.Element]:
    """The ``<g>`` elements whose class list contains ``cls``."""
    return [g for g in parse(svg).iter(f"{SVG}g") if cls in g.get("class", "").split()]


def w1_function(rewrites: bool = True):
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))
    return nd.function([x], [y, nd.grad(y, x)], rewrites=rewrites)


def mixed_function(n_ops: int, rewrites: bool = False):
    """A deterministic graph of about ``4.5 * n_ops`` nodes: a chain of unary ops, products and sums reusing
    earlier values, with its gradient with respect to two inputs."""
    x, w = nd.vector("x"), nd.vector("w")
    values = [x, w]
    unary = [nd.tanh, nd.sin, nd.exp, nd.cos, nd.sigmoid]
    for k in range(n_ops):
        a = values[-1]
        b = values[-1 - (k * 7) % min(len(values), 6)] if k > 1 else x
        values.append(unary[k % 5](a) if k % 3 == 0 else a * b if k % 3 == 1 else a + b)
    y = nd.sum(values[-1])
    return nd.function([x, w], [y, *nd.grad(y, [x, w])], rewrites=rewrites)


# -- the SVG of a fixed graph ---------------------------------------------------------------------------------------
def test_golden_digest_of_a_small_graph():
    f = build_golden()["f"]
    assert digest(scene_to_svg(build_scene(f.graph))) == GOLDEN_DIGEST


def test_same_graph_built_twice_gives_identical_svg():
    first = scene_to_svg(build_scene(build_golden()["f"].graph))
    second = scene_to_svg(build_scene(build_golden()["f"].graph))
    assert first == second


def test_svg_is_identical_in_a_fresh_interpreter():
    """Nothing depends on ids, hash seeds or addresses: another process writes the same bytes."""
    code = (
        "import json\n"
        "from nbdiff.widgets.scene import build_scene\n"
        "from nbdiff.widgets.svg import scene_to_svg\n"
        f"ns = {{}}\nexec(compile({GOLDEN_SOURCE!r}, '<golden>', 'exec'), ns)\n"
        "print(json.dumps(scene_to_svg(build_scene(ns['f'].graph))))\n"
    )
    env_hash = {"PYTHONHASHSEED": "12345"}
    import os

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **env_hash}
    )
    assert json.loads(result.stdout) == scene_to_svg(build_scene(build_golden()["f"].graph))


def test_root_element_titles_and_lines():
    svg = scene_to_svg(build_scene(build_golden()["f"].graph))
    root = parse(svg)
    assert root.tag == f"{SVG}svg" and root.get("class") == "nbdiff-graph"
    tanh = next(g for g in boxes_of(svg, "forward") if g.find(f"{SVG}text").text == "tanh")
    assert tanh.get("data-line") == "<golden>:3"
    assert tanh.find(f"{SVG}title").text.startswith("tanh : float64[?]\n@ <golden>:3")
    titles = [g.find(f"{SVG}title").text for g in boxes_of(svg, "gradient")]
    assert any("[grad; pullback of tanh at <golden>:3]" in t for t in titles), titles
    assert all("[grad" in t for t in titles)


def test_classes_for_every_kind_of_node():
    svg = scene_to_svg(build_scene(build_golden()["f"].graph))
    counts = {kind: len(boxes_of(svg, kind)) for kind in ("input", "constant", "forward", "gradient", "output")}
    assert counts == {"input": 1, "constant": 1, "forward": 3, "gradient": 10, "output": 2}


def test_fused_kernels_are_compound_boxes_around_their_members():
    f = w1_function()
    assert f.kernels, "the fusion pass made no kernel of W1"
    svg = scene_to_svg(build_scene(f.graph, f.kernels))
    kernels = boxes_of(svg, "nbdiff-kernel")
    assert len(kernels) == len(f.kernels)
    for kernel, descriptor in zip(kernels, f.kernels):
        assert kernel.find(f"{SVG}text").text.startswith(descriptor.name)
        members = [g for g in kernel.iter(f"{SVG}g") if "member" in g.get("class", "").split()]
        assert len(members) == len(descriptor.members)
        kinds = [m.get("class").split()[1] for m in members]
        assert kinds == ["gradient" if m.gradient else "forward" for m in descriptor.members]
        box = kernel.find(f"{SVG}rect")
        left, top = float(box.get("x")), float(box.get("y"))
        right, bottom = left + float(box.get("width")), top + float(box.get("height"))
        for member in members:
            rect = member.find(f"{SVG}rect")
            x, y = float(rect.get("x")), float(rect.get("y"))
            assert left <= x and x + float(rect.get("width")) <= right
            assert top <= y and y + float(rect.get("height")) <= bottom
    tanh = next(m for m in boxes_of(svg, "member") if m.find(f"{SVG}text").text == "tanh")
    assert "= tanh(in0)" in tanh.find(f"{SVG}title").text
    assert tanh.get("data-line").startswith("test_graph_view.py:")


def test_text_is_escaped():
    x = nd.vector('a<b&"c"')
    svg = scene_to_svg(build_scene(nd.function([x], nd.exp(x)).graph))
    assert "a&lt;b&amp;&quot;c&quot;" in svg
    (box,) = boxes_of(svg, "input")
    assert box.find(f"{SVG}text").text == 'a<b&"c"'


# -- the widget -----------------------------------------------------------------------------------------------------
def test_draw_returns_the_widget_and_toggles_change_the_svg():
    f = w1_function()
    view = nd.draw(f)
    rewritten = view.svg.value
    assert '<svg class="nbdiff-graph"' in rewritten and len(boxes_of(_svg(view), "nbdiff-kernel")) == len(f.kernels)

    view.rewritten.value = False
    as_written = _svg(view)
    assert boxes_of(as_written, "nbdiff-kernel") == []
    assert len(boxes_of(as_written, "gradient")) > 0

    view.show_gradient.value = False
    hidden = _svg(view)
    assert len(boxes_of(hidden, "gradient")) == 1  # the node computing the gradient output stays
    assert "gradient node(s) hidden" in hidden

    view.show_gradient.value = True
    view.rewritten.value = True
    assert view.svg.value == rewritten


def test_hiding_gradient_keeps_only_forward_members_of_a_kernel():
    f = w1_function()
    view = nd.draw(f, gradient=False)
    (kernel,) = boxes_of(_svg(view), "nbdiff-kernel")
    kinds = {m.get("class").split()[1] for m in kernel.iter(f"{SVG}g") if "member" in m.get("class").split()}
    assert kinds == {"forward"}


def test_selecting_a_node_shows_its_provenance_and_highlights_it():
    f = build_golden()["f"]
    view = nd.draw(f, rewritten=False)
    assert ("n11: mul (gradient)  @ <golden>:4", "n11") in view.node.options
    view.node.value = "n11"  # mul(tanh, tanh), built by the pullback of tanh
    details = html.unescape(view.details.value)
    assert "mul : float64[?]\n@ <golden>:4  [grad; pullback of tanh at <golden>:3]" in details
    assert "inputs: tanh: float64[?], tanh: float64[?]" in details
    selected = [g for g in parse(_svg(view)).iter(f"{SVG}g") if "selected" in g.get("class", "").split()]
    assert [g.get("data-node") for g in selected] == ["n11"]
    view.rewritten.value = True  # same graph (rewritten to something else): the selection is dropped if gone
    assert view.node.value in {key for _, key in view.node.options}


def test_draw_accepts_variables_graphs_and_rejects_other_things():
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x))
    assert "tanh" in nd.draw(y).svg.value
    assert not nd.draw([y, nd.grad(y, x)]).rewritten.disabled
    graph_view = nd.draw(nd.function([x], y).graph)
    assert graph_view.rewritten.disabled and graph_view.rewritten.value is True
    with pytest.raises(nd.NbdiffError, match="draw: expected an nd.function"):
        nd.draw(3)


def _svg(view) -> str:
    """The SVG element inside the widget's HTML (which wraps it in a scrolling frame)."""
    html = view.svg.value
    return html[html.index("<svg") : html.index("</svg>") + len("</svg>")]


# -- layout ---------------------------------------------------------------------------------------------------------
def test_layers_are_longest_paths_with_sources_next_to_their_users():
    edges = [(0, 1), (1, 2), (2, 3), (4, 3), (0, 3)]
    assert assign_layers(5, edges, top=[0]) == [0, 1, 2, 3, 2]
    assert assign_layers(5, edges, top=[0, 4]) == [0, 1, 2, 3, 0]
    assert assign_layers(3, [(0, 1), (0, 2), (1, 2)], top=[0], late=[1]) == [0, 1, 2]


def test_layout_has_no_overlaps_and_removes_avoidable_crossings():
    # Two sources whose targets are listed crosswise: the sweeps must uncross them.
    edges = [(0, 3), (1, 2), (2, 4), (3, 5)]
    layout = layered_layout([(40, 20)] * 6, edges, top=[0, 1])
    assert layout.layers[:2] == [0, 0]
    left_of = layout.x[0] < layout.x[1]
    assert (layout.x[3] < layout.x[2]) == left_of and (layout.x[5] < layout.x[4]) == left_of
    for v in range(6):
        for u in range(v):
            if layout.layers[u] == layout.layers[v]:
                assert abs(layout.x[u] - layout.x[v]) >= 40
    for (u, v), route in zip(edges, layout.routes):
        assert route[0] == (layout.x[u] + 20, layout.y[u] + 20) and route[-1] == (layout.x[v] + 20, layout.y[v])


def test_cycles_are_rejected():
    with pytest.raises(ValueError, match="acyclic"):
        layered_layout([(10, 10)] * 2, [(0, 1), (1, 0)])


# -- size -----------------------------------------------------------------------------------------------------------
def test_300_node_graph_layout_and_svg_time():
    """Prints the time to lay out and write a graph of about 300 nodes (the target, 0.5 s, lives in
    benchmarks/bench_widgets.py; no assertion on time here)."""
    f = mixed_function(67)
    start = time.perf_counter()
    scene = build_scene(f.graph)
    svg = scene_to_svg(scene)
    seconds = time.perf_counter() - start
    print(f"\n{len(f.graph.nodes)} nodes, {len(scene.boxes)} boxes: scene + layout + SVG in {seconds:.3f} s")
    assert len(f.graph.nodes) >= 300 and scene.caption == ""
    assert len(boxes_of(svg, "nbdiff-node")) == len(scene.boxes)


def test_large_graph_collapses_and_says_so():
    f = mixed_function(450)
    assert len(f.graph.nodes) > 2000
    start = time.perf_counter()
    scene = build_scene(f.graph)
    svg = scene_to_svg(scene)
    print(f"\n{len(f.graph.nodes)} nodes -> {len(scene.boxes)} boxes in {time.perf_counter() - start:.3f} s")
    assert len(scene.boxes) <= COLLAPSE_ABOVE
    assert scene.caption.startswith(f"large graph ({len(f.graph.nodes)} ops) collapsed")
    assert scene.caption in svg
    collapsed = boxes_of(svg, "collapsed")
    assert collapsed and all(g.find(f"{SVG}text").text.endswith("…") for g in collapsed)
    assert sum(b.count for b in scene.boxes if b.kind in ("forward", "gradient")) == len(f.graph.nodes)


def test_kernel_members_count_toward_the_collapse_limit():
    """Fusion turns the 2,000-node graph into a few kernels, one of about 1,400 members: drawn as one box."""
    f = mixed_function(450, rewrites=True)
    big = max(f.kernels, key=lambda k: len(k.members))
    assert len(big.members) > COLLAPSE_ABOVE
    scene = build_scene(f.graph, f.kernels)
    assert scene.drawn <= COLLAPSE_ABOVE and "fused kernel(s) drawn as single boxes" in scene.caption
    kernels = boxes_of(scene_to_svg(scene), "nbdiff-kernel")
    assert len(kernels) == len(f.kernels) and all("collapsed" in k.get("class").split() for k in kernels)


def test_collapse_merges_chains_and_draws_kernels_as_single_boxes():
    x = nd.vector("x")
    y = x
    for _ in range(30):
        y = nd.tanh(y)
    scene = build_scene(nd.function([x], y, rewrites=False).graph, collapse_above=10)
    assert [b.kind for b in scene.boxes] == ["input", "forward", "output"]
    assert scene.boxes[1].count == 30 and scene.boxes[1].label == "tanh … tanh"
    assert "chains of 3+ single-use ops merged" in scene.caption

    f = w1_function()
    scene = build_scene(f.graph, f.kernels, collapse_above=3)
    svg = scene_to_svg(scene)
    (kernel,) = boxes_of(svg, "nbdiff-kernel")
    assert "collapsed" in kernel.get("class").split()
    assert boxes_of(svg, "member") == []


def test_collapse_stays_acyclic_when_forward_nodes_use_gradients():
    """``sum(g * g)`` is a forward node built from gradient nodes: merging by kind could close a cycle."""
    x = nd.vector("x")
    y = nd.sum(nd.tanh(nd.sin(x) * x))
    g = nd.grad(y, x)
    z = nd.sum(nd.exp(g) * g)
    f = nd.function([x], [z, nd.grad(z, x)], rewrites=False)
    for limit in (4, 8, 16, 32):
        scene = build_scene(f.graph, collapse_above=limit)
        layout_scene(scene)  # raises on a cycle
        assert sum(b.count for b in scene.boxes if b.kind in ("forward", "gradient")) == len(f.graph.nodes)


def test_widget_modules_load_no_widget_library_until_used():
    code = (
        "import sys, nbdiff, nbdiff.widgets, nbdiff.widgets.svg, nbdiff.widgets.scene\n"
        "print('ipywidgets' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_outputs_are_drawn_with_the_names_the_user_gave():
    from nbdiff.magics.graph_magic import build_function

    f = build_function("w: vector\ncost = sum(tanh(w) ** 2)\n", "named_outputs", {}, wrt=["w"])
    assert f.output_names == ("cost", "gradient of cost w.r.t. w")
    view = nd.draw(f)
    outputs = [box for box in view.scene.boxes if box.kind == "output"]
    assert [box.label for box in outputs] == ["cost", "gradient of cost w.r.t. w"]
    assert outputs[1].title.startswith("output 1: gradient of cost w.r.t. w = ")
    assert ">output 0<" not in view.svg.value and ">gradient of cost w.r.t. w<" in view.svg.value
    view.rewritten.value = False  # as written
    assert [box.label for box in view.scene.boxes if box.kind == "output"][0] == "cost"


def test_unnamed_outputs_of_a_plain_function_keep_their_position():
    x = nd.vector("x")
    y = nd.tanh(x)
    view = nd.draw(nd.function([x], [y, nd.grad(nd.sum(y), x)], backend="numpy"))
    assert [box.label for box in view.scene.boxes if box.kind == "output"] == ["output 0", "output 1"]

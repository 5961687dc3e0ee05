"""SVG text for a scene: boxes styled by kind, fused kernels as compound boxes, edges as curves, hover titles.

The output is deterministic: keys come from the scene's order (``n0``, ``n1`` ...), coordinates are rounded to
one decimal, nothing depends on ids or addresses. Every box is a ``<g class="nbdiff-node KIND">`` with a
``<title>`` (op, type, the user's line and transforms such as "pullback of tanh", shown on hover by browsers)
and ``data-node`` / ``data-line`` attributes; a fused kernel is a ``<g class="nbdiff-kernel">`` holding its
members' boxes inside a rounded rectangle labelled with the kernel's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Sequence

from nbdiff.widgets.layout import MARGIN, Layout, layered_layout
from nbdiff.widgets.scene import Box, Member, Scene

CHAR_WIDTH = 6.7  # advance of the 11 px monospace font
FONT_SIZE = 11
BOX_HEIGHT = 34.0  # two text lines: op and shape
MEMBER_HEIGHT = 20.0
MIN_MEMBER_WIDTH = 36.0
MEMBER_H_GAP = 8.0  # gaps of the layout inside a kernel
MEMBER_V_GAP = 14.0
KERNEL_HEADER = 24.0
KERNEL_PAD = 8.0
CAPTION_HEIGHT = 20.0
MIN_WIDTH = 44.0

STYLE = """
.nbdiff-graph { background: #ffffff; }
.nbdiff-graph text { fill: #1f2328; pointer-events: none; }
.nbdiff-graph .shape { fill: #59636e; }
.nbdiff-graph .nbdiff-node > rect { stroke-width: 1.2; }
.nbdiff-graph .nbdiff-node.forward > rect { fill: #ddeafc; stroke: #2f5f9e; }
.nbdiff-graph .nbdiff-node.gradient > rect { fill: #fde6d2; stroke: #b3541e; stroke-dasharray: 4 2; }
.nbdiff-graph .nbdiff-node.input > rect { fill: #d9f2dc; stroke: #2c7a3a; stroke-width: 1.6; }
.nbdiff-graph .nbdiff-node.constant > rect { fill: #f1f1f1; stroke: #9a9a9a; }
.nbdiff-graph .nbdiff-node.output > rect { fill: #ffffff; stroke: #1f2328; stroke-width: 2; }
.nbdiff-graph .nbdiff-node.collapsed > rect { stroke-width: 2.4; }
.nbdiff-graph .nbdiff-kernel > rect { fill: #f3edfb; stroke: #6a3fa0; stroke-width: 1.6; }
.nbdiff-graph .nbdiff-kernel.collapsed > rect { stroke-width: 2.4; }
.nbdiff-graph .nbdiff-kernel-label { fill: #4b2a78; font-weight: bold; }
.nbdiff-graph .selected > rect { stroke: #d1242f; stroke-width: 3; }
.nbdiff-graph .nbdiff-edge { fill: none; stroke: #8c959f; stroke-width: 1.1; }
.nbdiff-graph .nbdiff-edge.gradient { stroke: #d08a55; }
.nbdiff-graph .nbdiff-caption { fill: #59636e; font-style: italic; }
""".strip()

MARKER = (
    '<marker id="nbdiff-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="6" markerHeight="6" '
    'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8c959f"/></marker>'
)


@dataclass
class Drawing:
    """A scene laid out: the boxes' layout and, per expanded kernel (by box index), its members' layout."""

    scene: Scene
    layout: Layout
    inner: dict[int, Layout]


def scene_to_svg(scene: Scene, selected: str | None = None) -> str:
    """Lay out ``scene`` and return the SVG document; the box whose key is ``selected`` is highlighted."""
    return drawing_to_svg(layout_scene(scene), selected)


def layout_scene(scene: Scene) -> Drawing:
    """Lay out each kernel's members, then the boxes: inputs on the first layer, outputs on the last, gradient
    nodes as close to their users as possible."""
    inner = {i: _member_layout(box) for i, box in enumerate(scene.boxes) if box.kind == "kernel" and box.members}
    sizes = [_kernel_size(box, inner[i]) if i in inner else box_size(box) for i, box in enumerate(scene.boxes)]
    layout = layered_layout(sizes, scene.edges, scene.kinds("input"), scene.kinds("output"), scene.kinds("gradient"))
    return Drawing(scene, layout, inner)


def _member_layout(box: Box) -> Layout:
    sizes = [(max(_text_width(m.op) + 12, MIN_MEMBER_WIDTH), MEMBER_HEIGHT) for m in box.members]
    late = [k for k, member in enumerate(box.members) if member.kind == "gradient"]
    return layered_layout(sizes, box.member_edges, late=late, h_gap=MEMBER_H_GAP, v_gap=MEMBER_V_GAP)


def _kernel_size(box: Box, inner: Layout) -> tuple[float, float]:
    """A kernel's box: its heading above its members' layout (whose own margin pads the sides and bottom)."""
    width = max(inner.width, _text_width(_kernel_heading(box)) + 2 * KERNEL_PAD)
    return width, KERNEL_HEADER + inner.height - MARGIN


def box_size(box: Box) -> tuple[float, float]:
    """Width and height of an ordinary (or collapsed) box: its text width, two lines high."""
    width = max(_text_width(box.label), _text_width(box.shape)) + 16
    return max(width, MIN_WIDTH), BOX_HEIGHT


def drawing_to_svg(drawing: Drawing, selected: str | None = None) -> str:
    """The SVG text of a laid-out scene."""
    scene, layout = drawing.scene, drawing.layout
    caption = scene.caption
    width = max(layout.width, _text_width(caption) + 24 if caption else 0.0)
    height = layout.height + (CAPTION_HEIGHT if caption else 0.0)
    parts = [
        f'<svg class="nbdiff-graph" xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        f'font-size="{FONT_SIZE}">',
        f"<style>{STYLE}</style>",
        f"<defs>{MARKER}</defs>",
        '<g class="nbdiff-edges">',
    ]
    for (u, v), route in zip(scene.edges, layout.routes):
        parts.append(_edge(route, scene.boxes[v].kind == "gradient", (scene.boxes[u].key, scene.boxes[v].key)))
    parts.append("</g>")
    parts.append('<g class="nbdiff-nodes">')
    for i, box in enumerate(scene.boxes):
        frame = (layout.x[i], layout.y[i], layout.widths[i], layout.heights[i])
        chosen = box.key == selected
        if box.kind == "kernel":
            parts.append(_kernel(box, frame, drawing.inner.get(i), chosen))
        else:
            parts.append(_node(box, *frame, chosen))
    parts.append("</g>")
    if caption:
        parts.append(f'<text class="nbdiff-caption" x="12" y="{_n(height - 6)}">{escape(caption)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _node(box: Box, x: float, y: float, w: float, h: float, selected: bool) -> str:
    classes = ["nbdiff-node", box.kind]
    if box.collapsed:
        classes.append("collapsed")
    if selected:
        classes.append("selected")
    cx = x + w / 2
    return (
        f'<g class="{" ".join(classes)}" data-node="{box.key}" data-line="{escape(box.line)}">'
        f"<title>{escape(box.title)}</title>"
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="{_radius(box)}"/>'
        f'<text x="{_n(cx)}" y="{_n(y + 14)}" text-anchor="middle">{escape(box.label)}</text>'
        f'<text class="shape" x="{_n(cx)}" y="{_n(y + 28)}" text-anchor="middle">{escape(box.shape)}</text>'
        "</g>"
    )


def _kernel(box: Box, frame: tuple[float, float, float, float], inner: Layout | None, selected: bool) -> str:
    """A fused kernel: a rounded rectangle headed by the kernel's name, its members laid out inside with the
    edges of its program (or, collapsed, the name and the number of ops)."""
    x, y, w, h = frame
    classes = ["nbdiff-kernel"] + ([] if inner else ["collapsed"]) + (["selected"] if selected else [])
    parts = [
        f'<g class="{" ".join(classes)}" data-node="{box.key}" data-line="{escape(box.line)}">',
        f"<title>{escape(box.title)}</title>",
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="10"/>',
    ]
    if inner is None:
        parts.append(
            f'<text class="nbdiff-kernel-label" x="{_n(x + w / 2)}" y="{_n(y + 14)}" text-anchor="middle">'
            f"{escape(box.label)}</text>"
            f'<text class="shape" x="{_n(x + w / 2)}" y="{_n(y + 28)}" text-anchor="middle">'
            f"{escape(f'fused, {box.count} ops')}</text>"
        )
    else:
        parts.append(
            f'<text class="nbdiff-kernel-label" x="{_n(x + KERNEL_PAD)}" y="{_n(y + 14)}">'
            f"{escape(_kernel_heading(box))}</text>"
        )
        dx, dy = x + (w - inner.width) / 2, y + KERNEL_HEADER - MARGIN
        for (k, j), route in zip(box.member_edges, inner.routes):
            moved = [(px + dx, py + dy) for px, py in route]
            parts.append(_edge(moved, box.members[j].kind == "gradient", (f"{box.key}.{k}", f"{box.key}.{j}")))
        for k, member in enumerate(box.members):
            frame = (inner.x[k] + dx, inner.y[k] + dy, inner.widths[k], inner.heights[k])
            parts.append(_member(member, f"{box.key}.{k}", frame))
    parts.append("</g>")
    return "".join(parts)


def _member(member: Member, key: str, frame: tuple[float, float, float, float]) -> str:
    x, y, w, h = frame
    return (
        f'<g class="nbdiff-node {member.kind} member" data-node="{key}" data-line="{escape(member.line)}">'
        f"<title>{escape(member.title)}</title>"
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="3"/>'
        f'<text x="{_n(x + w / 2)}" y="{_n(y + 14)}" text-anchor="middle">{escape(member.op)}</text>'
        "</g>"
    )


def _kernel_heading(box: Box) -> str:
    return f"{box.label} · fused"


def _edge(route: Sequence[tuple[float, float]], gradient: bool, ends: tuple[str, str]) -> str:
    """A path through the route's points: curves across the gaps between layers, straight runs through layers."""
    (x0, y0) = route[0]
    commands = [f"M{_n(x0)},{_n(y0)}"]
    for k in range(1, len(route)):
        (xa, ya), (xb, yb) = route[k - 1], route[k]
        if k % 2 == 1:  # a gap between layers
            middle = (ya + yb) / 2
            commands.append(f"C{_n(xa)},{_n(middle)} {_n(xb)},{_n(middle)} {_n(xb)},{_n(yb)}")
        else:  # a run through a layer (a dummy vertex)
            commands.append(f"L{_n(xb)},{_n(yb)}")
    css = "nbdiff-edge gradient" if gradient else "nbdiff-edge"
    return (
        f'<path class="{css}" data-from="{ends[0]}" data-to="{ends[1]}" d="{" ".join(commands)}" '
        'marker-end="url(#nbdiff-arrow)"/>'
    )


def _radius(box: Box) -> str:
    return {"input": "12", "output": "12", "constant": "2"}.get(box.kind, "5")


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def _n(value: float) -> str:
    """A coordinate as text: one decimal, no negative zero."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text

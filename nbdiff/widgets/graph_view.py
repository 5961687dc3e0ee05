"""``nd.draw(f)``: the graph widget. The SVG drawing, two toggles, and a node picker showing provenance.

The widget is a ``VBox`` of ipywidgets: ``show_gradient`` (a ``ToggleButton``) hides gradient nodes except those
computing outputs; ``rewritten`` (``ToggleButtons``: rewritten / as written) switches between ``f.graph``, where
fused kernels are compound boxes, and ``f.graph_as_written``; ``svg`` (an ``HTML`` widget) holds the drawing, whose
boxes show their op, type, user line and transforms on hover; ``node`` (a ``Dropdown``) selects a box, which is
highlighted in the drawing while ``details`` shows its full provenance.

Click-to-select inside the SVG would need a custom front end (anywidget). Hover titles plus the dropdown give the
same information without a JavaScript bundle or another dependency, and the widget state stays testable in Python.
"""

from __future__ import annotations

from html import escape
from typing import Any

import ipywidgets as widgets

from nbdiff.errors import InputError, node_error
from nbdiff.graph.basic import Apply, Constant, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.traversal import graph_inputs
from nbdiff.rewrite.fusion import kernels_of
from nbdiff.widgets.scene import Box, Scene, build_scene
from nbdiff.widgets.svg import Drawing, drawing_to_svg, layout_scene

NO_SELECTION = ""
_SVG_FRAME_STYLE = "overflow:auto;max-height:720px;max-width:100%"
_DETAILS_STYLE = "margin:0;font-size:11px;font-family:var(--jp-code-font-family,monospace);white-space:pre-wrap"


class Views:
    """The graphs a widget can show: the rewritten one (with its kernels) and, when known, the one as written."""

    def __init__(self, source: Any):
        self.output_names: tuple[str | None, ...] = ()
        if isinstance(source, Graph):
            self.rewritten, self.as_written, self.kernels = source, None, kernels_of(source)
            return
        if isinstance(source, Variable) or (isinstance(source, (list, tuple)) and source):
            source = _function_of(source)
        graph = getattr(source, "graph", None)
        if not isinstance(graph, Graph):
            raise node_error(
                InputError,
                "draw",
                f"expected an nd.function, a Graph, a variable or a list of variables, got {type(source).__name__}",
            )
        self.rewritten = graph
        self.as_written = getattr(source, "graph_as_written", None)
        self.kernels = list(getattr(source, "kernels", None) or kernels_of(graph))
        self.output_names = tuple(getattr(source, "output_names", None) or ())  # set by %%graph

    def scene(self, rewritten: bool, gradient: bool) -> Scene:
        names = self.output_names
        if rewritten or self.as_written is None:
            return build_scene(self.rewritten, self.kernels, gradient=gradient, output_names=names)
        return build_scene(self.as_written, (), gradient=gradient, output_names=names)


def _function_of(outputs: Any) -> Any:
    """An ``nd.function`` of the variables' own inputs, so that both the rewritten and the written graph exist."""
    from nbdiff.function import function

    items = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    for position, item in enumerate(items):
        if not isinstance(item, Variable):
            raise node_error(InputError, "draw", f"item {position} is a {type(item).__name__}, not a variable")
    inputs = [v for v in graph_inputs(items) if not isinstance(v, Constant)]
    return function(inputs, items)


class GraphView(widgets.VBox):
    """The graph drawing with "show gradient" and "rewritten / as written" toggles and a provenance picker."""

    def __init__(self, source: Any, gradient: bool = True, rewritten: bool = True):
        self.views = Views(source)
        self.show_gradient = widgets.ToggleButton(
            value=gradient, description="show gradient", tooltip="show the nodes built by grad / Lop / Rop"
        )
        self.rewritten = widgets.ToggleButtons(
            options=[("rewritten", True), ("as written", False)],
            value=bool(rewritten) or self.views.as_written is None,
            disabled=self.views.as_written is None,
            tooltips=["the graph that runs (fused kernels boxed)", "the graph before rewriting"],
        )
        self.node = widgets.Dropdown(description="node", options=[("(none)", NO_SELECTION)], value=NO_SELECTION)
        self.svg = widgets.HTML()
        self.details = widgets.HTML()
        self.scene: Scene
        self.drawing: Drawing
        super().__init__([widgets.HBox([self.show_gradient, self.rewritten, self.node]), self.svg, self.details])
        self.add_class("nbdiff-graph-view")
        self.redraw()
        self.show_gradient.observe(lambda _: self.redraw(), names="value")
        self.rewritten.observe(lambda _: self.redraw(), names="value")
        self.node.observe(lambda _: self._select(), names="value")

    def redraw(self) -> None:
        """Rebuild the scene and layout for the current toggles, and the node picker's options."""
        self.scene = self.views.scene(self.rewritten.value, self.show_gradient.value)
        self.drawing = layout_scene(self.scene)
        keys = {box.key for box in self.scene.boxes}
        selected = self.node.value if self.node.value in keys else NO_SELECTION
        with self.hold_trait_notifications():
            self.node.options = [("(none)", NO_SELECTION)] + [(_option(box), box.key) for box in self.scene.boxes]
            self.node.value = selected
        self._select()

    def _select(self) -> None:
        """Highlight the selected box and show its provenance."""
        selected = self.node.value or None
        self.svg.value = f'<div style="{_SVG_FRAME_STYLE}">{drawing_to_svg(self.drawing, selected)}</div>'
        box = next((b for b in self.scene.boxes if b.key == selected), None)
        self.details.value = "" if box is None else f'<pre style="{_DETAILS_STYLE}">{escape(node_details(box))}</pre>'


def _option(box: Box) -> str:
    where = f"  @ {box.line}" if box.line else ""
    return f"{box.key}: {box.label} ({box.kind}){where}"


def node_details(box: Box) -> str:
    """What the details area shows for a box: its title (op, type, every site and transform) and its inputs."""
    lines = [box.title]
    source = box.source
    node = source if isinstance(source, Apply) else None
    if node is not None:
        inputs = ", ".join(f"{v.label()}: {v.type}" for v in node.inputs)
        lines.append(f"inputs: {inputs}")
    for member in box.members:
        lines.append(f"member {member.title}")
    return "\n".join(lines)


def draw(f_or_variables: Any, *, gradient: bool = True, rewritten: bool = True) -> GraphView:
    """The graph widget for an ``nd.function``, a ``Graph``, a variable or a list of variables."""
    return GraphView(f_or_variables, gradient=gradient, rewritten=rewritten)

"""The widget ``%%graph`` shows under a cell: the function's graph view above its compile-status panel."""

from __future__ import annotations

import ipywidgets as widgets

from nbdiff.function import Function
from nbdiff.widgets.graph_view import draw
from nbdiff.widgets.status_view import status_panel


def function_widget(f: Function) -> widgets.VBox:
    """The graph (with gradient and fused kernels) and the live compile status of ``f``, stacked."""
    box = widgets.VBox([draw(f), status_panel(f)])
    box.add_class("nbdiff-function")
    return box

"""The notebook widgets: each public name loads its module (and ipywidgets) only when first used.

``import nbdiff`` and ``import nbdiff.widgets`` stay light; the pure-Python parts (``layout``, ``scene``, ``svg``)
import no widget library at all. To add a widget, add its public names to ``_LAZY`` (name -> module).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "draw": "nbdiff.widgets.graph_view",
    "GraphView": "nbdiff.widgets.graph_view",
    "status_panel": "nbdiff.widgets.status_view",
    "StatusPanel": "nbdiff.widgets.status_view",
    "rewrite_stepper": "nbdiff.widgets.stepper",
    "RewriteStepper": "nbdiff.widgets.stepper",
    "plot": "nbdiff.widgets.function_plot",
    "FunctionPlot": "nbdiff.widgets.function_plot",
    "function_widget": "nbdiff.widgets.dashboard",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbdiff.widgets' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

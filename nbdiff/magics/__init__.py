"""The IPython layer: ``%load_ext nbdiff`` registers the ``%%graph`` cell magic.

Importing this package imports IPython; ``import nbdiff`` does not (``nbdiff.load_ipython_extension`` imports it
when the extension is loaded).
"""

from __future__ import annotations

from typing import Any

from nbdiff.magics.graph_magic import GraphMagics


def load_ipython_extension(ipython: Any) -> None:
    """Register nbdiff's magics with the running IPython shell."""
    ipython.register_magics(GraphMagics)


__all__ = ["GraphMagics", "load_ipython_extension"]

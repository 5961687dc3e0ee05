"""The graph verifier: run after every pass in tests (and with ``debug=True``) to catch a broken rewrite early.

It re-derives every node's output types from its inputs, and checks that every input a node uses is a graph
input, a constant, or computed earlier (so the order is executable and nothing dangles).
"""

from __future__ import annotations

from nbdiff.errors import GraphError
from nbdiff.graph.basic import Constant
from nbdiff.graph.fgraph import Graph


class VerificationError(GraphError):
    """A rewrite produced an inconsistent graph (a bug in nbdiff, not in the user's program)."""


def verify(graph: Graph, after: str = "") -> None:
    """Raise ``VerificationError`` naming the pass and the node when ``graph`` is inconsistent."""
    where = f" after pass {after!r}" if after else ""
    available = {id(v) for v in graph.inputs}
    for position, node in enumerate(graph.nodes):
        for var in node.inputs:
            if id(var) not in available and not isinstance(var, Constant):
                raise VerificationError(
                    f"verifier{where}: node {position} ({node.op.name}) uses {var.label()} before it is computed"
                )
        types = node.op.infer(*node.inputs)
        for out, expected in zip(node.outputs, types):
            if out.type != expected:
                raise VerificationError(
                    f"verifier{where}: node {position} ({node.op.name}) has type {out.type}, its inputs give {expected}"
                )
        available.update(id(o) for o in node.outputs)
    for out in graph.outputs:
        if id(out) not in available and not isinstance(out, Constant):
            raise VerificationError(f"verifier{where}: output {out.label()} is not computed by the graph")

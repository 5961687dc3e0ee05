"""Constant folding: a node whose inputs are all constants becomes a constant, computed by the interpreter.

Every op is deterministic, so ``op(c1, c2, ...)`` can be computed once, when the function is built, with the same
``perform`` the interpreter would call on every run. Folding never creates a constant of more than
``FOLD_MAX_ELEMENTS`` elements: a folded constant lives as long as the function, so folding a fill of a static
1e7-element shape would trade a cheap run-time fill for 80 MB held forever. Such nodes stay in the graph.

A node whose ``perform`` raises on its constant inputs is left alone, so the error is raised at run time, naming
the user's line, as it would be without rewrites. NumPy warnings (``log(0)``) are silenced while folding.
"""

from __future__ import annotations

import math

import numpy as np

from nbdiff.graph.basic import Apply, Constant, Variable, constant
from nbdiff.graph.fgraph import Graph
from nbdiff.ops.broadcast import FillLike
from nbdiff.rewrite.engine import RewriteResult, Rule, apply_rules, rule
from nbdiff.rewrite.merge import may_hold_equal_constants, merge_graph
from nbdiff.rewrite.pipeline import Pass, register_pass, rule_pass
from nbdiff.rewrite.shapes import ShapeFacts

FOLD_MAX_ELEMENTS = 1 << 16  # 65536 elements: 512 KiB of float64 per folded constant, at most


def _static_size(var: Variable) -> int | None:
    """The number of elements when the static shape is fully known."""
    if None in var.type.shape:
        return None
    return math.prod(var.type.shape)


def _too_big(outputs: tuple[Variable, ...]) -> bool:
    """True when an output's static size is known to exceed the folding limit."""
    return any((_static_size(v) or 0) > FOLD_MAX_ELEMENTS for v in outputs)


def _as_constants(node: Apply, results: tuple[np.ndarray, ...]) -> list[Variable] | None:
    """Constants holding ``results``, when each matches its output's type and is small enough; else None."""
    folded: list[Variable] = []
    for var, result in zip(node.outputs, results):
        array = np.asarray(result)
        if array.dtype.name != var.dtype or not var.type.accepts(array.shape) or array.size > FOLD_MAX_ELEMENTS:
            return None
        folded.append(constant(np.array(array)))
    return folded


@rule()
def fold_constants(node: Apply, facts: ShapeFacts) -> list[Variable] | None:
    """op(c1, ..., cn) -> c where c = op.perform(c1, ..., cn), for constants c1..cn (small results only)"""
    if not all(isinstance(v, Constant) for v in node.inputs) or _too_big(node.outputs):
        return None
    try:
        with np.errstate(all="ignore"):
            results = node.op.perform(*(v.data for v in node.inputs))
    except Exception:  # noqa: BLE001 - left for run time, where the error names the user's line
        return None
    return _as_constants(node, results)


@rule(FillLike)
def fold_static_fill(node: Apply, facts: ShapeFacts) -> Variable | None:
    """full_like(x, v) -> constant full(shape, v) when x's shape is static (small results only)"""
    (out,) = node.outputs
    size = _static_size(out)
    if size is None or size > FOLD_MAX_ELEMENTS:
        return None
    try:
        data = np.full(out.type.shape, node.op.value, dtype=out.dtype)
    except (OverflowError, ValueError):  # e.g. 300 in uint8: left for run time, as fold_constants does
        return None
    return constant(data)


FOLD_RULES: list[Rule] = [fold_constants, fold_static_fill]


def rules_then_merge(name: str, rules: list[Rule], description: str = "", single_sweep: bool = False) -> Pass:
    """A rule pass that merges equal constants afterwards (folded constants over 4096 elements are not hash-consed).

    ``single_sweep``: one sweep reaches the fixed point (true of folding: the engine visits inputs before users).
    """
    sweep = rule_pass(name, rules)

    def run(graph: Graph) -> RewriteResult:
        result = apply_rules(graph, rules) if single_sweep else sweep.run(graph)
        if not result.changed or not may_hold_equal_constants(result.graph):
            return result
        merged = merge_graph(result.graph)
        return RewriteResult(merged.graph, result.firings + merged.firings)

    return Pass(name, run, description)


FOLD = register_pass(
    rules_then_merge("fold", FOLD_RULES, "compute nodes whose inputs are all constants, once", single_sweep=True)
)

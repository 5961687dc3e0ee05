"""The merge pass: one node for each distinct value the graph computes.

Hash-consing already gives equal subgraphs one node whenever they are built from the *same* variables. It misses
two cases, which this pass closes before the others run:

- equal constants built separately: constants over ``_SMALL_CONSTANT`` elements are not hash-consed by value (and
  a constant that differs only by object identity splits every subgraph that uses it);
- commutative operations written in the other order: ``mul(a, b)`` and ``mul(b, a)``.

The pass rebuilds the graph in execution order with each constant replaced by its first equal twin, and each
commutative node replaced by an existing twin with swapped inputs; rebuilding through ``apply`` then merges
everything downstream of a merged constant for free.
"""

from __future__ import annotations

import hashlib

import numpy as np

from nbdiff.graph.basic import _SMALL_CONSTANT, Apply, Constant, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.traversal import paused_gc
from nbdiff.ops.elemwise import Add, Equal, Maximum, Minimum, Mul, NotEqual
from nbdiff.rewrite.engine import RewriteResult, rebuild
from nbdiff.rewrite.engine import _describe as describe_node
from nbdiff.rewrite.history import RuleFiring
from nbdiff.rewrite.pipeline import Pass, register_pass

# Binary elementwise ops whose result does not depend on the order of their inputs (including dtype and shape).
COMMUTATIVE = (Add, Mul, Maximum, Minimum, Equal, NotEqual)


class ConstantTable:
    """Finds, for each constant, the first constant seen with the same name, dtype, shape and bytes."""

    def __init__(self) -> None:
        self._seen: dict[tuple, list[Constant]] = {}

    def canonical(self, const: Constant) -> Constant:
        """The first equal constant seen (``const`` itself if it is the first)."""
        data = const.data
        key = (const.name, data.dtype.name, data.shape, hashlib.blake2b(np.ascontiguousarray(data).tobytes()).digest())
        bucket = self._seen.setdefault(key, [])
        for earlier in bucket:
            if earlier is const or _same_bytes(earlier.data, data):
                return earlier
        bucket.append(const)
        return const


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality (so NaNs with equal payloads match, and ``-0.0`` stays apart from ``0.0``)."""
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == b.tobytes()


def merge_graph(graph: Graph) -> RewriteResult:
    """Rebuild ``graph`` with equal constants and swapped commutative twins merged."""
    table = ConstantTable()
    mapping: dict[int, Variable] = {}
    firings: list[RuleFiring] = []
    commutative: dict[tuple, Apply] = {}
    with paused_gc():
        for node in graph.nodes:
            inputs = [_merged_input(v, mapping, table, firings) for v in node.inputs]
            current = rebuild(node, inputs)
            current = _commutative_twin(current, commutative, firings)
            for old, new in zip(node.outputs, current.outputs):
                if new is not old:
                    mapping[id(old)] = new
        if not firings:
            return RewriteResult(graph, firings)
        outputs = [mapping.get(id(v), v) for v in graph.outputs]
    return RewriteResult(Graph(graph.inputs, outputs), firings)


def may_hold_equal_constants(graph: Graph) -> bool:
    """Whether ``graph`` may hold two equal constants (cheap check: two large ones of one dtype and shape)."""
    seen: set[tuple] = set()
    for const in graph.constants:
        if const.data.size <= _SMALL_CONSTANT and const.name is None:
            continue  # hash-consed by value when it was built
        key = (const.data.dtype.name, const.data.shape)
        if key in seen:
            return True
        seen.add(key)
    return False


def _merged_input(var: Variable, mapping: dict[int, Variable], table: ConstantTable, firings: list) -> Variable:
    if id(var) in mapping:
        return mapping[id(var)]
    if not isinstance(var, Constant):
        return var
    canonical = table.canonical(var)
    if canonical is not var:
        mapping[id(var)] = canonical
        firings.append(
            RuleFiring(
                "merge_constants",
                "c1 -> c2 when c1 and c2 hold equal values of one dtype and shape",
                var.label(),
                canonical.label(),
                var.provenance.describe(),
            )
        )
    return canonical


def _commutative_twin(node: Apply, seen: dict[tuple, Apply], firings: list) -> Apply:
    """``node`` itself, or an earlier node computing the same commutative op on the same inputs swapped."""
    if not isinstance(node.op, COMMUTATIVE) or len(node.inputs) != 2:
        return node
    a, b = node.inputs
    twin = seen.get((node.op, id(b), id(a)))
    if twin is not None and twin is not node:
        firings.append(
            RuleFiring(
                "merge_commutative",
                "op(b, a) -> op(a, b) for a commutative op when op(a, b) exists",
                describe_node(node),
                describe_node(twin),
                node.provenance.describe(),
            )
        )
        return twin
    seen.setdefault((node.op, id(a), id(b)), node)
    return node


MERGE = register_pass(
    Pass("merge", merge_graph, "merge equal constants and commutative twins that hash-consing keeps apart")
)

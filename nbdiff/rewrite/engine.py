"""The rule engine: rebuild a graph node by node, trying named rules on each rebuilt node until none applies.

A ``Rule`` is a small named function ``(node, facts) -> replacement or None`` whose docstring is the identity it
applies (``log(1 + x) -> log1p(x)``), filed under the op kinds it looks at. Nodes are immutable and hash-consed,
so rebuilding through ``apply`` merges equal subgraphs for free; replacements inherit the provenance of the node
they replace, tagged with the rule's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from nbdiff.graph.basic import Apply, Op, Variable, apply
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.provenance import inherit
from nbdiff.graph.traversal import paused_gc
from nbdiff.rewrite.history import RuleFiring
from nbdiff.rewrite.shapes import ShapeFacts

RuleFunction = Callable[[Apply, ShapeFacts], "Variable | Sequence[Variable] | None"]


@dataclass(frozen=True)
class Rule:
    """A named rewrite: ``function(node, facts)`` returns the node's replacement outputs, or None."""

    name: str
    function: RuleFunction
    kinds: tuple[type, ...] = (Op,)  # op classes (or base classes) the rule looks at

    @property
    def identity(self) -> str:
        """The identity the rule applies: the first paragraph of its function's docstring, on one line (a first
        line alone cuts identities written over two lines mid-sentence)."""
        paragraph = (self.function.__doc__ or self.name).strip().split("\n\n")[0]
        return " ".join(paragraph.split())


def rule(*kinds: type, name: str | None = None) -> Callable[[RuleFunction], Rule]:
    """Decorator: turn a function into a ``Rule`` matching nodes whose op is an instance of ``kinds``."""

    def wrap(function: RuleFunction) -> Rule:
        return Rule(name or function.__name__, function, kinds or (Op,))

    return wrap


@dataclass
class RewriteResult:
    graph: Graph
    firings: list[RuleFiring] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.firings)


MAX_FIRINGS_PER_NODE = 32


def rebuild(node: Apply, inputs: Sequence[Variable]) -> Apply:
    """``node``'s op applied to new inputs (the same node when nothing changed), keeping its provenance."""
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    with inherit([node.provenance]):
        return apply(node.op, inputs, node.op.infer(*inputs))


def apply_rules(graph: Graph, rules: Sequence[Rule]) -> RewriteResult:
    """One sweep over ``graph`` in execution order, rewriting each node to a fixed point under ``rules``."""
    facts = ShapeFacts(graph.inputs)
    mapping: dict[int, Variable] = {}
    firings: list[RuleFiring] = []
    by_type: dict[type, list[Rule]] = {}  # the rules that look at each op class, in rule order
    with paused_gc():
        for node in graph.nodes:
            inputs = [mapping.get(id(v), v) for v in node.inputs]
            current = rebuild(node, inputs)
            outputs = list(current.outputs)
            for _ in range(MAX_FIRINGS_PER_NODE):
                op_type = type(current.op)
                if op_type not in by_type:
                    by_type[op_type] = [r for r in rules if issubclass(op_type, r.kinds)]
                fired = _first_match(current, by_type[op_type], facts)
                if fired is None:
                    break
                chosen, replacement = fired
                firings.append(
                    RuleFiring(
                        chosen.name,
                        chosen.identity,
                        _describe(current),
                        _describe_vars(replacement),
                        current.provenance.describe(),
                    )
                )
                outputs = replacement
                if len(replacement) != 1 or replacement[0].owner is None or replacement[0].owner is current:
                    break
                current = replacement[0].owner
                if len(current.outputs) != 1:
                    break
            for old, new in zip(node.outputs, outputs):
                if new is not old:
                    mapping[id(old)] = new
        outputs = [mapping.get(id(v), v) for v in graph.outputs]
    return RewriteResult(Graph(graph.inputs, outputs), firings)


def _first_match(node: Apply, rules: Sequence[Rule], facts: ShapeFacts) -> tuple[Rule, list[Variable]] | None:
    for candidate in rules:
        with inherit([node.provenance], f"rewrite {candidate.name}"):
            result = candidate.function(node, facts)
        if result is None:
            continue
        replacement = [result] if isinstance(result, Variable) else list(result)
        if len(replacement) != len(node.outputs):
            raise RuntimeError(f"rule {candidate.name} returned {len(replacement)} outputs for {node.op.name}")
        if all(new is old for new, old in zip(replacement, node.outputs)):
            continue
        for new, old in zip(replacement, node.outputs):
            if new.dtype != old.dtype or new.ndim != old.ndim:
                raise RuntimeError(
                    f"rule {candidate.name} changed the type of {node.op.name}'s output: {old.type} -> {new.type}"
                )
        return candidate, replacement
    return None


def _describe(node: Apply) -> str:
    args = ", ".join(v.label() if v.owner is None else v.owner.op.name for v in node.inputs)
    return f"{node.op.describe()}({args})"


def _describe_vars(variables: Sequence[Variable]) -> str:
    return ", ".join(v.label() if v.owner is None else _describe(v.owner) for v in variables)

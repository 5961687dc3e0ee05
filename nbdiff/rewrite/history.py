"""The rewrite history behind ``f.history``: one record per pass, with the rules that fired.

The rewrite-stepper widget and ``nd.dprint`` read these records; they keep the graphs before and after each pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdiff.graph.fgraph import Graph


@dataclass(frozen=True)
class RuleFiring:
    """One application of a rule: its name, the identity it applies, what it replaced and with what."""

    rule: str
    identity: str
    before: str
    after: str
    where: str  # the replaced node's provenance (user line, and "pullback of ..." for gradient nodes)

    def describe(self) -> str:
        return f"{self.rule}: {self.before} -> {self.after}  ({self.where})"


@dataclass
class PassRecord:
    """What one pass did: whether it changed the graph, how long it took, the rules that fired, sizes."""

    name: str
    changed: bool
    seconds: float
    before: Graph
    after: Graph
    firings: list[RuleFiring] = field(default_factory=list)
    iterations: int = 1

    @property
    def nodes_before(self) -> int:
        return len(self.before.nodes)

    @property
    def nodes_after(self) -> int:
        return len(self.after.nodes)

    def describe(self) -> str:
        state = "changed" if self.changed else "unchanged"
        text = (
            f"{self.name}: {state}, {self.nodes_before} -> {self.nodes_after} nodes, "
            f"{len(self.firings)} rewrite(s), {self.seconds * 1e3:.2f} ms"
        )
        return text

    def __repr__(self) -> str:
        return f"<PassRecord {self.describe()}>"

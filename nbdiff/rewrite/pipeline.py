"""The pass pipeline: named passes, each timed and recorded (``f.history``), verified after each in debug mode.

A pass is a name plus a function from a ``Graph`` to a ``RewriteResult``. Rule passes repeat their sweep until the
graph stops changing. Passes register themselves by name; ``nd.function(..., rewrites=...)`` picks which run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from nbdiff.config import options
from nbdiff.errors import NbdiffError
from nbdiff.graph.fgraph import Graph
from nbdiff.rewrite.engine import RewriteResult, Rule, apply_rules
from nbdiff.rewrite.history import PassRecord
from nbdiff.rewrite.verify import verify

MAX_SWEEPS = 20


@dataclass(frozen=True)
class Pass:
    """A named graph transformation."""

    name: str
    run: Callable[[Graph], RewriteResult]
    description: str = ""


def rule_pass(name: str, rules: Sequence[Rule], description: str = "") -> Pass:
    """A pass that sweeps ``rules`` over the graph until nothing fires (at most ``MAX_SWEEPS`` sweeps)."""

    def run(graph: Graph) -> RewriteResult:
        firings = []
        for _ in range(MAX_SWEEPS):
            result = apply_rules(graph, rules)
            graph = result.graph
            firings.extend(result.firings)
            if not result.changed:
                break
        return RewriteResult(graph, firings)

    return Pass(name, run, description)


_PASSES: dict[str, Pass] = {}
DEFAULT_ORDER = ("merge", "fold", "stability", "simplify", "fusion")


def register_pass(new_pass: Pass) -> Pass:
    """Make ``new_pass`` available by name to ``nd.function(..., rewrites=[...])``."""
    _PASSES[new_pass.name] = new_pass
    return new_pass


def available_passes() -> dict[str, Pass]:
    """Every registered pass, by name (loads the pass modules on first use)."""
    _load_pass_modules()
    return dict(_PASSES)


def _load_pass_modules() -> None:
    import importlib

    for module in ("merge", "fold", "simplify", "stability", "fusion"):
        try:
            importlib.import_module(f"nbdiff.rewrite.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nbdiff.rewrite.{module}":
                raise


def select_passes(rewrites: bool | Sequence[str]) -> list[Pass]:
    """The passes ``rewrites`` asks for: True (the default pipeline), False (none) or pass names in order."""
    passes = available_passes()
    if rewrites is True:
        return [passes[name] for name in DEFAULT_ORDER if name in passes]
    if rewrites is False or rewrites is None:
        return []
    if isinstance(rewrites, str):
        rewrites = [rewrites]
    unknown = [name for name in rewrites if name not in passes]
    if unknown:
        raise NbdiffError(f"function: unknown rewrite pass(es) {unknown}; available: {sorted(passes)}")
    return [passes[name] for name in rewrites]


def run_pipeline(graph: Graph, passes: Sequence[Pass]) -> tuple[Graph, list[PassRecord]]:
    """Run ``passes`` in order; return the final graph and one record per pass."""
    history: list[PassRecord] = []
    debug = options().debug
    for current in passes:
        start = time.perf_counter()
        result = current.run(graph)
        seconds = time.perf_counter() - start
        if debug:
            verify(result.graph, after=current.name)
        history.append(PassRecord(current.name, result.changed, seconds, graph, result.graph, result.firings))
        graph = result.graph
    return graph, history

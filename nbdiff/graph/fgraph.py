"""``Graph``: a function's inputs, outputs and the nodes between them, in execution order.

This is what ``f.graph`` returns: printable (``nd.dprint``), drawable, and the unit the rewrite passes work on.
"""

from __future__ import annotations

from typing import Sequence

from nbdiff.errors import GraphError, MissingInputError, node_error
from nbdiff.graph.basic import Apply, Constant, Variable, packed_variables, unpacked_variables
from nbdiff.graph.traversal import paused_gc, roots_of, toposort


class Graph:
    """Inputs, outputs and the nodes computing the outputs from the inputs, inputs before users."""

    def __init__(self, inputs: Sequence[Variable], outputs: Sequence[Variable]):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        with paused_gc():
            self.nodes: list[Apply] = toposort(self.outputs, stop_at=self.inputs)
            self._roots = roots_of(self.nodes, self.outputs)
        self._check_inputs()

    def __reduce__(self) -> tuple:
        """Pickled as its inputs and its outputs' nodes, shared; unpickling builds it again (hash-consing)."""
        return (rebuilt_graph, (self.inputs, *packed_variables(self.outputs)))

    def _check_inputs(self) -> None:
        given = {id(v) for v in self.inputs}
        for root in self._roots:
            if id(root) in given or isinstance(root, Constant):
                continue
            needed_by = next((out for out in self.outputs if _depends(out, root, self.inputs)), None)
            what = f" (output {needed_by.label()} needs it)" if needed_by is not None else ""
            raise node_error(
                MissingInputError,
                "function",
                f"the outputs depend on {root.label()} ({root.type}), declared at {root.provenance.describe()}, "
                f"which is not among the inputs{what}; add it to the inputs list",
            )

    @property
    def constants(self) -> list[Constant]:
        """The constants the graph uses, in first-use order."""
        return [v for v in self._roots if isinstance(v, Constant)]

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        from nbdiff.graph.printing import dprint_str

        return dprint_str(self)

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's pretty printer
        printer.text(repr(self))


def _depends(out: Variable, root: Variable, stop: Sequence[Variable]) -> bool:
    if out is root:
        return True
    return any(v is root for node in toposort([out], stop_at=stop) for v in node.inputs)


def rebuilt_graph(inputs: Sequence[Variable], records: Sequence[tuple], references: Sequence[object]) -> Graph:
    """A pickled graph, rebuilt (``Graph.__reduce__``)."""
    return Graph(inputs, unpacked_variables(records, references))


def check_function_inputs(inputs: Sequence[object]) -> list[Variable]:
    """Validate a function's input list: root variables, each once."""
    result = []
    seen: set[int] = set()
    for position, var in enumerate(inputs):
        if not isinstance(var, Variable):
            raise node_error(
                GraphError,
                "function",
                f"input {position} must be a variable (e.g. nd.vector('x')), got {type(var).__name__}",
            )
        if isinstance(var, Constant):
            raise node_error(
                GraphError,
                "function",
                f"input {position} ({var.label()}: {var.type}) is a constant, not an input variable; "
                f"declare inputs with nd.scalar / nd.vector / nd.matrix / nd.tensor",
                [var],
            )
        if var.owner is not None:
            raise node_error(
                GraphError,
                "function",
                f"input {position} ({var.label()}) is computed by {var.owner.op.name} at "
                f"{var.provenance.describe()}; inputs must be variables "
                f"created with nd.scalar / nd.vector / nd.matrix / nd.tensor",
                [var],
            )
        if id(var) in seen:
            raise node_error(GraphError, "function", f"input {var.label()} ({var.type}) is listed twice", [var])
        seen.add(id(var))
        result.append(var)
    return result

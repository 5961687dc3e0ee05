"""The NumPy interpreter: the reference semantics every backend must match.

A ``Plan`` turns a ``Graph`` into a flat list of steps over numbered storage slots, once; running it calls each
op's ``perform`` and frees every intermediate right after its last use, so peak memory stays close to what a
careful hand-written NumPy program holds. Errors raised by NumPy are re-raised naming the op, the input shapes and
dtypes, and the user's line that created the node.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from nbdiff.errors import ExecutionError, NbdiffError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Variable
from nbdiff.graph.fgraph import Graph


class Step:
    """One node's execution: its ``perform``, where its inputs are, where its outputs go, what to free after."""

    __slots__ = ("node", "perform", "inputs", "outputs", "free")

    def __init__(self, node: Apply, inputs: list[int], outputs: list[int], free: list[int]):
        self.node = node
        self.perform: Callable[..., tuple[np.ndarray, ...]] = node.op.perform
        self.inputs = inputs
        self.outputs = outputs
        self.free = free


class Plan:
    """A graph scheduled for the interpreter: slots for every variable, constants preloaded, frees precomputed."""

    def __init__(self, graph: Graph, check_types: bool = False):
        self.graph = graph
        self.check_types = check_types
        slots: dict[int, int] = {}

        def slot(var: Variable) -> int:
            if id(var) not in slots:
                slots[id(var)] = len(slots)
            return slots[id(var)]

        self.input_slots = [slot(v) for v in graph.inputs]
        self.output_slots = [slot(v) for v in graph.outputs]
        constants = [(slot(c), c.data) for c in graph.constants]
        last_use: dict[int, int] = {}
        for position, node in enumerate(graph.nodes):
            for var in node.inputs:
                last_use[slot(var)] = position
            for var in node.outputs:
                slot(var)
        keep = set(self.output_slots) | {s for s, _ in constants}
        frees: list[list[int]] = [[] for _ in graph.nodes]
        for index, position in last_use.items():
            if index not in keep:
                frees[position].append(index)
        self.steps = [
            Step(node, [slots[id(v)] for v in node.inputs], [slots[id(v)] for v in node.outputs], frees[position])
            for position, node in enumerate(graph.nodes)
        ]
        self.template: list[np.ndarray | None] = [None] * len(slots)
        for index, data in constants:
            self.template[index] = data

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Evaluate the graph on input arrays (already validated and converted) and return the outputs."""
        storage = list(self.template)
        for index, array in zip(self.input_slots, arrays):
            storage[index] = array
        step = None
        try:
            for step in self.steps:
                results = step.perform(*[storage[i] for i in step.inputs])
                for index, result in zip(step.outputs, results):
                    storage[index] = result
                if self.check_types:
                    _check_results(step, results)
                for index in step.free:
                    storage[index] = None
        except NbdiffError:
            raise
        except Exception as exc:
            if step is None:
                raise
            raise _execution_error(step, storage, exc) from exc
        return [_owned(storage[i], arrays) for i in self.output_slots]


def _owned(result: np.ndarray, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Return outputs the caller may keep and modify: copy read-only views and the caller's own arrays."""
    if not isinstance(result, np.ndarray):
        return np.asarray(result)
    if not result.flags.writeable or any(result is a or np.shares_memory(result, a) for a in arrays):
        return np.array(result)
    return result


def _execution_error(step: Step, storage: list, exc: Exception) -> NbdiffError:
    node = step.node
    values = [storage[i] for i in step.inputs]
    shapes = [v for v in values if v is not None]
    cls = ShapeError if isinstance(exc, (ValueError, IndexError)) else ExecutionError
    return node_error(cls, node.op.name, f"failed at run time: {exc}", shapes, node.provenance)


def _check_results(step: Step, results: Sequence[np.ndarray]) -> None:
    """Verifier for tests: every result has the dtype and a shape the node's static type promises."""
    for var, result in zip(step.node.outputs, results):
        array = np.asarray(result)
        if array.dtype.name != var.dtype or not var.type.accepts(array.shape):
            raise node_error(
                ExecutionError,
                step.node.op.name,
                f"perform returned {array.dtype.name}{list(array.shape)}, but the node's type is {var.type} "
                f"(a bug in the op)",
                provenance=step.node.provenance,
            )

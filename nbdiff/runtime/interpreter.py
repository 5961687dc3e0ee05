"""The NumPy interpreter: the reference semantics every backend must match.

A ``Plan`` turns a ``Graph`` into a flat list of steps over numbered storage slots, once; running it calls each
op's ``perform`` and frees every intermediate right after its last use, so peak memory stays close to what a
careful hand-written NumPy program holds. An elementwise step whose input dies at that step writes its result into
that input's buffer (when nothing else refers to it), which saves the allocation and its page faults. Errors
raised by NumPy are re-raised naming the op, the input shapes and dtypes, and the user's line that created the node.
"""

from __future__ import annotations

import copy
import sys
from typing import Callable, Mapping, Sequence

import numpy as np

from nbdiff.errors import ExecutionError, NbdiffError, node_error, run_time_error_class
from nbdiff.graph.basic import Apply, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.traversal import paused_gc
from nbdiff.graph.types import broadcast_array_shapes, numpy_dtype


class Step:
    """One node's execution: its ``perform``, where its inputs are, where its outputs go, what to free after."""

    __slots__ = ("node", "perform", "inputs", "outputs", "free", "ufunc", "reuse")

    def __init__(self, node: Apply, inputs: list[int], outputs: list[int], free: list[int], intermediates: set[int]):
        self.node = node
        self.perform: Callable[..., tuple[np.ndarray, ...]] = node.op.perform
        self.inputs = inputs
        self.outputs = outputs
        self.free = free
        self.ufunc = getattr(type(node.op), "numpy_fn", None)
        # Input slots whose buffer may receive the result: intermediates that die here, used once by this step.
        self.reuse: list[int] = []
        if isinstance(self.ufunc, np.ufunc) and self.ufunc.nout == 1 and len(node.outputs) == 1:
            self.reuse = [
                i
                for i in inputs
                if i in free and i in intermediates and inputs.count(i) == 1 and _same_type(node, inputs.index(i))
            ]

    def replaced(self, perform: Callable[..., tuple[np.ndarray, ...]]) -> Step:
        """This step calling ``perform`` instead of its op's (and writing no result into an input's buffer)."""
        step = Step.__new__(Step)
        for name in Step.__slots__:
            setattr(step, name, getattr(self, name))
        step.perform, step.ufunc, step.reuse = perform, None, []
        return step

    def reusable_buffer(self, storage: list) -> np.ndarray | None:
        """An input array this step may overwrite: right dtype and shape, owning its memory, referenced nowhere else."""
        dtype = numpy_dtype(self.node.outputs[0].dtype)
        for index in self.reuse:
            array = storage[index]
            # references: the storage slot, the argument list, this local, getrefcount's argument
            if (
                type(array) is np.ndarray
                and array.dtype == dtype
                and array.base is None
                and array.flags.writeable
                and sys.getrefcount(array) <= 4
                and array.shape == _broadcast_shape(storage, self.inputs)
            ):
                return array
        return None


class Plan:
    """A graph scheduled for the interpreter: slots for every variable, constants preloaded, frees precomputed."""

    def __init__(self, graph: Graph, check_types: bool = False):
        self.graph = graph
        self.check_types = check_types
        with paused_gc():
            self._schedule(graph)

    def _schedule(self, graph: Graph) -> None:
        """Number the slots, find each variable's last use and build the steps."""
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
        intermediates = {slots[id(v)] for node in graph.nodes for v in node.outputs}
        self.steps = [
            Step(
                node,
                [slots[id(v)] for v in node.inputs],
                [slots[id(v)] for v in node.outputs],
                frees[position],
                intermediates,
            )
            for position, node in enumerate(graph.nodes)
        ]
        self.template: list[np.ndarray | None] = [None] * len(slots)
        for index, data in constants:
            self.template[index] = data

    def with_performers(self, performers: Mapping[int, Callable[..., tuple[np.ndarray, ...]]]) -> Plan:
        """A copy of this plan in which the step of each node ``id(node)`` in ``performers`` calls the given function
        (with the same arguments and results as ``perform``) instead: how a compiled backend swaps its kernels in."""
        plan = copy.copy(self)
        plan.steps = [
            step.replaced(performers[id(step.node)]) if id(step.node) in performers else step for step in self.steps
        ]
        return plan

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Evaluate the graph on input arrays (already validated and converted) and return the outputs."""
        storage = list(self.template)
        for index, array in zip(self.input_slots, arrays):
            storage[index] = array
        step = None
        try:
            for step in self.steps:
                args = [storage[i] for i in step.inputs]
                buffer = step.reusable_buffer(storage) if step.reuse else None
                if buffer is not None:
                    results = (step.ufunc(*args, out=buffer),)
                else:
                    results = step.perform(*args)
                del args
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


def _same_type(node: Apply, position: int) -> bool:
    return node.inputs[position].dtype == node.outputs[0].dtype


def _broadcast_shape(storage: list, inputs: list[int]) -> tuple[int, ...]:
    shapes = [getattr(storage[i], "shape", ()) for i in inputs]
    return shapes[0] if all(s == shapes[0] for s in shapes) else broadcast_array_shapes(*shapes)


def _owned(result: np.ndarray, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Return outputs the caller may keep and modify: copy read-only views and the caller's own arrays."""
    if not isinstance(result, np.ndarray):
        return np.asarray(result)
    if not result.flags.writeable:
        return np.array(result)
    if result.base is None and all(a.base is None for a in arrays) and not any(result is a for a in arrays):
        return result  # two arrays that own their memory never share it: no overlap check needed
    if any(np.shares_memory(result, a) for a in arrays):
        return np.array(result)
    return result


def _execution_error(step: Step, storage: list, exc: Exception) -> NbdiffError:
    node = step.node
    values = [storage[i] for i in step.inputs]
    shapes = [v for v in values if v is not None]
    cls = run_time_error_class(node.op, values, exc)
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

"""``ProgramRunner``: answers an array function's calls with its whole-plan entry point (``cpu_program``), one
compiled call per function call, and with the mixed plan (``CompiledPlan``) where the entry point does not fit.

Per input-shape signature it keeps a ``Frame`` (parameters and reused intermediate buffers), built on the first
call with those shapes and checked there against the interpreter; outputs are fresh arrays on every call, so
nothing a caller keeps is overwritten by a later call. The mixed plan answers: shapes the entry point does not fit
(``frame_for`` says why), a call while another thread is inside the entry point (the buffers are shared), and a
call whose values the entry point refuses (a fused loop's domain check, ``ValueError``): the plan then raises the
interpreter's error, naming the user's line.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

import numpy as np

from nbdiff.backends.agreement import least_precision, outputs_disagreement
from nbdiff.backends.compilation import CompiledPlan, Unit
from nbdiff.backends.cpu_program import Frame, Program, frame_for
from nbdiff.backends.parallelism import blas
from nbdiff.ops.broadcast import SumToLike
from nbdiff.ops.fused import FusedElemwise
from nbdiff.ops.linalg import MatMul
from nbdiff.ops.reduce import Sum
from nbdiff.runtime.interpreter import Plan

FRAMES_PER_PROGRAM = 16  # input-shape signatures whose frame a runner keeps
_UNKNOWN: Any = object()
_log = logging.getLogger("nbdiff.program")


class ProgramRunner:
    """The whole-plan entry point where it fits the call's shapes, else the mixed plan it was built beside."""

    mismatched: str | None = None  # the unit the agreement check found wrong

    def __init__(self, mixed: CompiledPlan, program: Program, unit: Unit):
        self.mixed, self.program, self.unit = mixed, program, unit
        self.backend = mixed.backend
        self.dispatcher = unit.modules[0].dispatcher
        self.constants = tuple(np.array(c.data, order="C") for c in program.constants)  # writeable: Numba types
        self.dtypes = tuple(np.dtype(v.dtype) for v in program.inputs)
        position = {id(v): j for j, v in enumerate(program.outputs)}
        self.order = [position[id(v)] for v in mixed.plan.graph.outputs]
        self.frames: dict[tuple, Frame | None] = {}
        self.matmuls = any(isinstance(node.op, MatMul) for node in program.nodes)  # BLAS inside: ``blas.call``
        self.interpreter: Plan | None = None  # set by the first check: each later signature is checked against it
        self.disabled: str | None = None  # why the entry point is no longer used (a later signature disagreed)
        self._lock = threading.Lock()  # one call at a time in the shared buffers; others take the mixed plan
        self.fast = self._fast

    # -- calls ---------------------------------------------------------------------------------------------------
    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        frame = self.frames.get(tuple([a.shape for a in arrays]), _UNKNOWN)
        if frame is _UNKNOWN:
            frame = self._new_frame(arrays)
        contiguous = [_plain(a) for a in arrays]
        results = None if frame is None or self.disabled else self._call(frame, contiguous)
        return self.mixed.run(arrays) if results is None else results

    def learn(self, args: tuple, arrays: Sequence[np.ndarray]) -> None:
        """Nothing to learn: ``fast`` takes raw arrays of the inputs' exact dtypes, for shapes seen before."""

    def _fast(self, args: tuple) -> list[np.ndarray] | None:
        """The outputs for raw arguments that are exactly what a checked call would pass on (C-contiguous arrays
        of the inputs' dtypes, of shapes whose frame exists), else None (the caller checks and converts them)."""
        if len(args) != len(self.dtypes) or self.disabled:
            return None
        for arg, dtype in zip(args, self.dtypes):
            if type(arg) is not np.ndarray or arg.dtype is not dtype:
                return None
        frame = self.frames.get(tuple([a.shape for a in args]))
        if frame is None:
            return None
        return self._call(frame, args)

    def _call(self, frame: Frame, arrays: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """The entry point's outputs, or None where it cannot answer (busy, refused values, argument types)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            outputs = [np.empty(shape, dtype) for shape, dtype in frame.outputs]
            if self.matmuls:
                blas.call(self.dispatcher, *arrays, *self.constants, *frame.tail, *outputs)
            else:
                self.dispatcher(*arrays, *self.constants, *frame.tail, *outputs)
        except (ValueError, IndexError, TypeError):  # refused values, or a non-contiguous argument
            return None
        finally:
            self._lock.release()
        return [outputs[j] for j in self.order]

    def _new_frame(self, arrays: Sequence[np.ndarray]) -> Frame | None:
        """The frame for these inputs' shapes, checked against the interpreter when one is known (None where the
        entry point does not fit them or disagrees)."""
        frame = frame_for(self.program, [a.shape for a in arrays])
        if isinstance(frame, str):
            _log.debug("nbdiff: the whole-plan entry point does not fit %s: %s", [a.shape for a in arrays], frame)
            frame = None
        elif self.interpreter is not None:
            problem = self._disagreement(frame, self.interpreter, arrays)
            if problem is not None:
                self.disabled = problem
                _log.warning("nbdiff: the whole-plan entry point is no longer used: %s", problem)
                frame = None
        if len(self.frames) >= FRAMES_PER_PROGRAM:
            self.frames.clear()
        self.frames[tuple([a.shape for a in arrays])] = frame
        return frame

    # -- the agreement check ---------------------------------------------------------------------------------------
    def checked_run(self, interpreter: Plan, arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], str | None]:
        """The mixed plan checked kernel by kernel (``CompiledPlan.checked_run``), then the entry point checked as a
        whole against the interpreter's outputs where it fits these shapes."""
        results, problem = self.mixed.checked_run(interpreter, arrays)
        if problem is not None:
            self.mismatched = self.mixed.mismatched
            return results, problem
        self.interpreter = interpreter
        frame = frame_for(self.program, [a.shape for a in arrays])
        if isinstance(frame, str):
            self.frames[tuple([a.shape for a in arrays])] = None
            return results, None
        problem = self._disagreement(frame, interpreter, arrays)
        if problem is not None:
            self.mismatched = self.unit.name
            return [], problem
        self.frames[tuple([a.shape for a in arrays])] = frame
        return results, None

    def _disagreement(self, frame: Frame, interpreter: Plan, arrays: Sequence[np.ndarray]) -> str | None:
        """Why the entry point's outputs for ``arrays`` disagree with the mixed plan's (None when they agree), with a
        reproducer of the call.

        The reference is the interpreter's plan run with the mixed plan's compiled steps, each of which the mixed
        plan's own check held to its ``perform`` on the interpreter's inputs: the entry point runs the same compiled
        loops and op kernels, so it must give their values, while the interpreter's own can differ by an ulp per
        step (a compiled ``exp``) and a cancellation downstream turns that into a relative difference of any size
        (the gradient of ``sum(softmax(x))``, zero in exact arithmetic)."""
        values: dict[int, np.ndarray] = {}
        expected = interpreter.with_performers(_recorders(interpreter, values, self.mixed.runners)).run(arrays)
        outputs = [np.empty(shape, dtype) for shape, dtype in frame.outputs]
        arguments = [_plain(a) for a in arrays] + [*self.constants, *frame.tail, *outputs]
        try:
            self.dispatcher(*arguments)
        except Exception as exc:  # the interpreter answered: the entry point must too
            return f"the whole-plan entry point raised {type(exc).__name__}: {exc}"
        got = [outputs[j] for j in self.order]
        graph = interpreter.graph
        scales = [_output_scale(var, values) for var in graph.outputs]
        precision = least_precision(_value_dtypes(graph))
        problem = outputs_disagreement(expected, got, scales, precision)
        if problem is None:
            return None
        positions = list(range(len(arguments) - len(outputs), len(arguments)))
        distinct = [expected[self.order.index(j)] for j in range(len(outputs))]
        where = self.unit.modules[0].reproducer_note(self.mixed.cache_root, arguments, distinct, problem, positions)
        return f"the whole-plan entry point disagrees with the interpreter: {problem}{where}"


def _value_dtypes(graph: Any) -> list[str]:
    """The dtypes of every value the plan computes, fused kernels' members' included (the tolerance's)."""
    dtypes = [v.dtype for v in graph.inputs] + [v.dtype for node in graph.nodes for v in node.outputs]
    for node in graph.nodes:
        if isinstance(node.op, FusedElemwise):
            dtypes += node.op.value_dtypes()
    return dtypes


def _plain(array: np.ndarray) -> np.ndarray:
    """``array`` as the entry point takes it: C-contiguous and writeable (Numba types read-only arrays apart); a
    copy only where it is not."""
    if array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, order="C")


def _recorders(interpreter: Plan, values: dict[int, np.ndarray], runners: dict[int, Any]) -> dict[int, Any]:
    """Performers that run each node's compiled runner (its ``perform`` where it has none) and keep its inputs'
    values by variable id (for the scales)."""

    def recording(node: Any) -> Any:
        run = runners.get(id(node), node.op.perform)

        def perform(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
            for var, value in zip(node.inputs, inputs):
                values[id(var)] = value
            return run(*inputs)

        return perform

    return {id(node): recording(node) for node in interpreter.graph.nodes}


def _output_scale(var: Any, values: dict[int, np.ndarray]) -> float | None:
    """The scale of an output's rounding error where its maximum would understate it: a sum's terms' magnitudes
    (a fused trailing sum, a whole sum), a matmul's ``|a| @ |b|``; None for the others (their own magnitude)."""
    node = var.owner
    if node is None or any(id(v) not in values for v in node.inputs):
        return None
    inputs = [values[id(v)] for v in node.inputs]
    with np.errstate(all="ignore"):
        if isinstance(node.op, FusedElemwise):
            op = node.op
            if op.reductions[var.index] is None:
                return None
            terms = FusedElemwise(op.input_kinds, op.program, op.results, (None,) * len(op.results)).perform(*inputs)
            return float(np.nansum(np.abs(terms[var.index]), dtype=np.float64))
        if isinstance(node.op, SumToLike):  # a bias gradient: the scale of the sum it reshapes
            return _output_scale(node.inputs[0], values)
        if isinstance(node.op, Sum):
            return float(np.nansum(np.abs(inputs[0]), dtype=np.float64))
        if isinstance(node.op, MatMul):
            return float(np.max(np.abs(inputs[0]) @ np.abs(inputs[1]), initial=0.0))
    return None

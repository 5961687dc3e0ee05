"""``nd.function``: a callable over a graph that answers at once through the NumPy interpreter.

With ``backend="auto"`` or ``"cpu"`` a background compilation (``nbdiff/backends/cpu.py``) starts at once; when
its kernels are loaded it installs a compiled *candidate*, which is checked against the interpreter (every kernel,
every variant of it) before it answers alone: at once on the last call's inputs when the function has been called
(``_install``), else on the first call (``_first_compiled_call``). ``status`` says where this stands
(``interpreting``, ``compiling i/n kernels``, ``compiled``, ``compiled (unchecked)`` until that first call,
``fallback: <why>``), ``backend`` what answered the last call. The status ``wait`` returns is final, except
``compiled (unchecked)``, which the first call turns into ``compiled`` or ``fallback: <why>``.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable, Sequence

import numpy as np

from nbdiff.config import options
from nbdiff.errors import BackendError, InputError, NbdiffError, node_error
from nbdiff.graph.basic import Variable, as_variable
from nbdiff.graph.fgraph import Graph, check_function_inputs
from nbdiff.graph.types import FLOAT_DTYPES, SUPPORTED_DTYPES, numpy_dtype
from nbdiff.rewrite.fusion import kernels_of
from nbdiff.rewrite.pipeline import run_pipeline, select_passes
from nbdiff.runtime.events import EventLog, KernelEvent
from nbdiff.runtime.interpreter import Plan

_log = logging.getLogger("nbdiff.function")
BACKENDS = ("auto", "numpy", "cpu", "cuda")
UNCHECKED = "compiled (unchecked)"  # compiled before any call: the first call checks it against the interpreter


class Function:
    """A compiled-on-demand function of graph inputs; call it with arrays, get arrays back."""

    def __init__(
        self,
        inputs: Sequence[Variable],
        outputs: Any,
        backend: str = "auto",
        name: str | None = None,
        rewrites: bool | Sequence[str] = True,
        fastmath: bool | None = None,
    ):
        if backend not in BACKENDS:
            raise BackendError(f"function: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "cuda":
            raise BackendError(
                "function: backend='cuda' needs nbdiff's CUDA backend, which this version does not include yet; "
                "use backend='auto' or 'cpu' (compiled with Numba) or 'numpy' (the NumPy interpreter)"
            )
        if isinstance(inputs, Variable):
            raise node_error(InputError, "function", "inputs must be a list of variables, e.g. nd.function([x], y)")
        self.inputs = check_function_inputs(list(inputs))
        self._single = not isinstance(outputs, (list, tuple))
        output_list = [outputs] if self._single else list(outputs)
        self.outputs = [as_variable(o) for o in output_list]
        self.name = name
        self.graph_as_written = Graph(self.inputs, self.outputs)
        self.graph, self.history = run_pipeline(self.graph_as_written, select_passes(rewrites))
        self.kernels = kernels_of(self.graph)
        self._plan = Plan(self.graph, check_types=options().debug)
        self.requested_backend = backend
        self.status = "interpreting"
        self.backend = "numpy"
        self._event_log = EventLog()  # compile events from the backend (nbdiff/runtime/events.py)
        self._runner: Any = self._plan  # what answers calls: the interpreter's plan, or a checked compiled runner
        self._candidate: Any = None  # a compiled runner waiting for its agreement check
        self._fast: Callable[[tuple], Any] | None = None  # a runner's path for raw arguments (scalar entry points)
        self._final = threading.Event()  # set when the status is final (compiled, fallback, or nothing to do)
        self._status_lock = threading.Lock()
        self._status_watchers: list[Callable[[str], None]] = []
        self._last_arrays: list[np.ndarray] | None = None  # the last call's inputs until compiled: checked on them
        self._deferred_report: tuple[str, str] | None = None  # a mismatch found on install, reported after its event
        self._compilation = None
        current = options()
        if backend == "cpu" or (backend == "auto" and current.compile):
            from nbdiff.backends import cpu

            self._compilation = cpu.start(self, backend, current.fastmath if fastmath is None else fastmath)
        if self._compilation is None:
            self._final.set()

    # -- calling -------------------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fast = self._fast
        if fast is not None and not kwargs:
            results = fast(args)
            if results is not None:
                self.backend = "cpu"
                return results[0] if self._single else results
        arrays = self._arguments(args, kwargs)
        if self._candidate is not None:
            results = self._first_compiled_call(arrays)
        else:
            if not self._final.is_set():
                self._last_arrays = arrays  # by reference: the compiled runner is checked on them once installed
            runner = self._runner
            results = runner.run(arrays)
            self.backend = getattr(runner, "backend", "numpy")
            if runner is not self._plan and hasattr(runner, "learn"):
                runner.learn(args, arrays)
                self._fast = runner.fast
        return results[0] if self._single else results

    def _first_compiled_call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run the compiled candidate checked against the interpreter (``_decide``); the interpreter's results
        where it disagrees."""
        candidate = self._candidate
        if candidate is None:  # another thread decided meanwhile
            runner = self._runner
            self.backend = getattr(runner, "backend", "numpy")
            return runner.run(arrays)
        results = self._decide(candidate, arrays)
        if results is None:
            self.backend = "numpy"
            return self._plan.run(arrays)
        self.backend = getattr(self._runner, "backend", "numpy")
        return results

    def _decide(self, candidate: Any, arrays: list[np.ndarray], installing: bool = False) -> list[np.ndarray] | None:
        """Check ``candidate`` against the interpreter on ``arrays``: from now on it answers alone if they agree
        (status "compiled"); otherwise the interpreter keeps answering and ``status`` says why. Returns the agreeing
        results, None where they disagree. A user's mistake in ``arrays`` raises and decides nothing. While
        ``installing``, the failed kernel's event waits for the event of the unit that finished the compilation
        (``_emit``): a kernel's "failed" must follow its "ready"."""
        try:
            results, problem = candidate.checked_run(self._plan, arrays)
        except NbdiffError:
            raise  # the user's input is wrong (the interpreter says so): the check waits for the next call
        except Exception as exc:
            results, problem = [], f"the compiled function raised {type(exc).__name__}: {exc}"
        with self._status_lock:
            if self._candidate is not candidate:  # another thread decided first
                return results or None
            self._candidate = None
            self._last_arrays = None
            if problem is not None:
                self.status = f"fallback: {problem}"
            else:
                self._runner = candidate
                self._fast = getattr(candidate, "fast", None)
                self.status = "compiled"
        self._status_changed()
        if problem is None:
            return results
        mismatched = getattr(candidate, "mismatched", None)
        if mismatched is not None and self._compilation is not None:
            if installing:
                self._deferred_report = (mismatched, problem)
            else:
                self._compilation.report_mismatch(mismatched, problem)  # the status panel shows the failed kernel
        return None

    def _arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[np.ndarray]:
        values = list(args)
        if kwargs:
            names = [v.name for v in self.inputs]
            values += [_MISSING] * (len(self.inputs) - len(values))
            for key, value in kwargs.items():
                if key not in names:
                    detail = f"unexpected keyword argument {key!r}; inputs are {names}"
                    raise node_error(InputError, self._label(), detail)
                position = names.index(key)
                if position < len(args):
                    raise node_error(InputError, self._label(), f"got argument {key!r} twice (by position and by name)")
                values[position] = value
        if len(values) != len(self.inputs) or any(v is _MISSING for v in values):
            expected = ", ".join(f"{v.label()}: {v.type}" for v in self.inputs)
            raise node_error(
                InputError,
                self._label(),
                f"expected {len(self.inputs)} argument(s) ({expected}), got {sum(v is not _MISSING for v in values)}",
            )
        return [
            convert_argument(var, value, position, self._label())
            for position, (var, value) in enumerate(zip(self.inputs, values))
        ]

    def _label(self) -> str:
        return f"function {self.name}" if self.name else "function"

    # -- status --------------------------------------------------------------------------------------------------
    @property
    def events(self) -> list[KernelEvent]:
        """The compile events so far (queued, compiling, cached, ready, failed per kernel), oldest first."""
        return self._event_log.events

    def subscribe(self, callback: Callable[[KernelEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on each later compile event (maybe from a worker thread); returns unsubscribe."""
        return self._event_log.subscribe(callback)

    def _emit(self, event: KernelEvent) -> None:
        """Record a compile event and notify subscribers; backends call this (after updating ``status``). A
        mismatch the check found as the compiled runner was installed is reported after it (``_decide``)."""
        self._event_log.emit(event)
        report, self._deferred_report = self._deferred_report, None
        if report is not None and self._compilation is not None:
            self._compilation.report_mismatch(*report)

    def subscribe_status(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(status)`` when the agreement check decides the status ("compiled (unchecked)" becoming
        "compiled" or "fallback: ..." on the first call), which no compile event announces; returns unsubscribe."""
        with self._status_lock:
            self._status_watchers.append(callback)

        def unsubscribe() -> None:
            with self._status_lock:
                if callback in self._status_watchers:
                    self._status_watchers.remove(callback)

        return unsubscribe

    def _status_changed(self) -> None:
        with self._status_lock:
            watchers, status = list(self._status_watchers), self.status
        for callback in watchers:
            try:
                callback(status)
            except Exception:  # a broken watcher must not break the user's call
                _log.exception("nbdiff: a status watcher raised")

    def wait(self, timeout: float | None = None) -> str:
        """Block until compilation has finished (or failed), or ``timeout`` seconds; return the status then.

        A compiled function has been checked against the interpreter on the last call's inputs when it was called
        while compiling: "compiled" or "fallback: <why>" is then final. Before any call it is "compiled
        (unchecked)", which the first call turns into "compiled" or "fallback: <why>"."""
        self._final.wait(timeout)
        return self.status

    # -- what the background compilation reports ------------------------------------------------------------------
    def _set_compiling(self, done: int, total: int) -> None:
        """Compilation progress, until the status says how it ended (the check on install may decide it before
        ``wait`` returns, and a kernel it finds wrong is then reported as a finished one)."""
        with self._status_lock:
            if not self._final.is_set() and self.status.startswith(("interpreting", "compiling")):
                self.status = f"compiling {done}/{total} kernels"

    def _install(self, runner: Any) -> None:
        """A compiled runner is ready. Called before, the function checks it at once on the last call's inputs
        (in this background thread), so the status ``wait`` then returns is final; never called, or called only
        with inputs the interpreter refused, it is "compiled (unchecked)" until the first call checks it."""
        arrays, self._last_arrays = self._last_arrays, None
        with self._status_lock:
            self._candidate = runner
        if arrays is not None:
            try:
                self._decide(runner, arrays, installing=True)
            except NbdiffError:  # the interpreter refused those inputs: the first good call checks it
                pass
        with self._status_lock:
            if self._candidate is runner:
                self.status = UNCHECKED
        self._final.set()
        self._last_arrays = None  # a call racing with the lines above may have kept its inputs

    def _fall_back(self, reason: str) -> None:
        """Compilation failed: the interpreter keeps answering, and ``status`` says why."""
        with self._status_lock:
            self._candidate = None
            self._last_arrays = None
            self.status = f"fallback: {reason}"
        self._final.set()

    def _compiled_nothing(self, reason: str) -> None:
        """Nothing to compile: the interpreter is the final answer."""
        with self._status_lock:
            self._last_arrays = None
            self.status = f"interpreting ({reason})"
        self._final.set()

    def __repr__(self) -> str:
        ins = ", ".join(v.label() for v in self.inputs)
        outs = ", ".join(v.label() for v in self.outputs)
        return f"<nbdiff.Function ({ins}) -> ({outs}) [{self.status}]>"


_MISSING = object()
_CAST_KINDS: dict[tuple[np.dtype, np.dtype], str] = {}
_FLOAT_MAX = {np.dtype(name): float(np.finfo(name).max) for name in FLOAT_DTYPES}
_INT_RANGE = {
    np.dtype(name): (int(np.iinfo(name).min), int(np.iinfo(name).max))
    for name in SUPPORTED_DTYPES
    if name != "bool" and name not in FLOAT_DTYPES
}


def convert_argument(var: Variable, value: Any, position: int, where: str = "function") -> np.ndarray:
    """Check one argument against its input variable's type and convert it (same-kind casts only)."""
    if isinstance(value, Variable):
        raise _argument_error(where, position, var, "expected an array, got a symbolic variable; call it with values")
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and other unconvertible values
        detail = f"cannot convert {type(value).__name__} to an array ({exc})"
        raise _argument_error(where, position, var, detail) from None
    if array.dtype.kind not in "biuf":
        raise _argument_error(where, position, var, f"expected a numeric array, got dtype {array.dtype}")
    if array.ndim != var.ndim:
        detail = f"expected {var.ndim} dimension(s), got an array of shape {array.shape}"
        raise _argument_error(where, position, var, detail)
    if not var.type.accepts(array.shape):
        raise _argument_error(where, position, var, f"expected shape {var.type.describe()}, got {array.shape}")
    target = numpy_dtype(var.dtype)
    if array.dtype != target:
        cast = _cast_kind(array.dtype, target)
        if cast == "refused":
            detail = f"cannot convert {array.dtype}{list(array.shape)} to {var.dtype} without losing information"
            raise _argument_error(where, position, var, detail)
        if cast == "safe":
            return array.astype(target)
        converted, lost = _narrowed(array, target)
        if lost is not None:
            detail = (
                f"cannot convert {array.dtype}{list(array.shape)} to {var.dtype} without losing information: "
                f"the value {lost!r} is outside {var.dtype}'s range"
            )
            raise _argument_error(where, position, var, detail)
        return converted
    return array


def _cast_kind(source: np.dtype, target: np.dtype) -> str:
    """How an argument of dtype ``source`` converts to ``target``: "safe", "narrowing" (same kind, may lose
    values: they are checked) or "refused" (another kind), remembered per pair (two ``np.can_cast`` calls cost
    about 0.5 us a scalar call)."""
    try:
        return _CAST_KINDS[source, target]
    except KeyError:
        pass
    if np.can_cast(source, target, casting="safe"):
        kind = "safe"
    else:
        kind = "narrowing" if np.can_cast(source, target, casting="same_kind") else "refused"
    if len(_CAST_KINDS) < 1024:  # a few dtype pairs in practice (byte orders included)
        _CAST_KINDS[source, target] = kind
    return kind


def _narrowed(array: np.ndarray, target: np.dtype) -> tuple[np.ndarray, Any]:
    """``array`` cast to a narrower dtype of the same kind, and the first value the cast would change beyond
    rounding (None when none): an integer outside ``target``'s range, which would wrap (uint64 2**63 into int64),
    or a finite float beyond it, which would become infinite (1e300 into float32; inf and NaN stay allowed)."""
    if target.kind in "iu":  # integers: a range check on the extremes, then a cast that changes nothing
        if array.size:
            lowest, highest = _INT_RANGE[target]
            low, high = (array.item(),) * 2 if array.size == 1 else (array.min().item(), array.max().item())
            if low < lowest or high > highest:
                return array, low if low < lowest else high
        return array.astype(target), None
    if array.size == 1:  # one value (a scalar argument): its range checked in Python, no floating-point state
        value = array.item()
        if not (math.isfinite(value) and abs(value) > _FLOAT_MAX[target]):
            return array.astype(target), None
    with np.errstate(over="ignore"):
        converted = array.astype(target)
    overflow = np.isinf(converted)
    if overflow.any():
        overflow &= np.isfinite(array)
        if overflow.any():
            return converted, array[overflow][0].item()
    return converted, None


def _argument_error(where: str, position: int, var: Variable, detail: str) -> InputError:
    """An error for one argument: names it, its declared type and declaration line, and the caller's line (the
    label is built only here: formatting it on every call cost microseconds per argument)."""
    label = f"{where}: argument {position} ({var.label()}: {var.type})"
    site = var.provenance.site
    declared = f"\n  {var.label()} declared at {site.describe()}" if site is not None else ""
    return node_error(InputError, label, detail + declared)  # type: ignore[return-value]


def function(
    inputs: Sequence[Variable],
    outputs: Any,
    backend: str = "auto",
    name: str | None = None,
    rewrites: bool | Sequence[str] = True,
    fastmath: bool | None = None,
) -> Function:
    """Build a callable for ``outputs`` (a variable, or a list giving a list) as functions of ``inputs``.

    Returns at once: the NumPy interpreter answers the first call. ``backend`` is "auto" (default: compile with
    Numba in the background where it is installed), "numpy" (the interpreter only), "cpu" (compile; an error
    without Numba) or "cuda". ``rewrites`` is True (the default pipeline: merge, fold, stability, simplify,
    fusion), False (run the graph as written) or a list of pass names; ``f.history`` records what each pass did.
    ``fastmath=True`` compiles with LLVM's fast-math flags (not nnan/ninf: NaN and infinity keep their meaning);
    the default is ``nd.options().fastmath`` (False).
    """
    return Function(inputs, outputs, backend=backend, name=name, rewrites=rewrites, fastmath=fastmath)

"""``nd.function``: a callable over a graph that answers at once through the NumPy interpreter.

With ``backend="auto"`` or a target's name, the target registry (``nbdiff/runtime/targets.py``) gives the compile
target, which starts compiling in the background and reports to the function's public ``CompileStatus``
(``nbdiff/runtime/compile_status.py``): progress, events, then a compiled *runner*, which is checked against the
interpreter (every kernel, every variant of it) before it answers alone. ``status`` says where this stands
(``interpreting``, ``compiling i/n kernels``, ``compiled``, ``compiled (unchecked)`` until the first call checks it,
``fallback: <why>``), ``backend`` what answered the last call. This module names no target and imports none.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from nbdiff.config import MATH_CHOICES, options
from nbdiff.errors import BackendError, InputError, node_error
from nbdiff.graph.basic import Variable, as_variable, packed_variables, unpacked_variables
from nbdiff.graph.fgraph import Graph, check_function_inputs
from nbdiff.graph.types import FLOAT_DTYPES, SUPPORTED_DTYPES, numpy_dtype
from nbdiff.rewrite.fusion import kernels_of
from nbdiff.rewrite.pipeline import run_pipeline, select_passes
from nbdiff.runtime import targets
from nbdiff.runtime.compile_status import UNCHECKED, CompileStatus
from nbdiff.runtime.events import KernelEvent
from nbdiff.runtime.interpreter import Plan

__all__ = ["BACKENDS", "Function", "function", "convert_argument", "UNCHECKED"]
BACKENDS = targets.names()  # the ``backend=`` values: "auto", "numpy", then the registered targets


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
        device_outputs: bool = False,
        math: str | None = None,
    ):
        current = options()
        if math is not None and math not in MATH_CHOICES:
            raise BackendError(f"function: math must be one of {', '.join(map(repr, MATH_CHOICES))}, got {math!r}")
        target = targets.choose(backend, current.compile)
        if device_outputs and target is None:
            detail = f"device_outputs=True needs a target with device memory (a GPU backend), got backend={backend!r}"
            raise BackendError(f"function: {detail}")
        if isinstance(inputs, Variable):
            raise node_error(InputError, "function", "inputs must be a list of variables, e.g. nd.function([x], y)")
        self.inputs = check_function_inputs(list(inputs))
        self._single = not isinstance(outputs, (list, tuple))
        output_list = [outputs] if self._single else list(outputs)
        self.outputs = [as_variable(o) for o in output_list]
        self.name = name
        self.rewrites = rewrites
        self.fastmath = fastmath
        self.math = math
        self.device_outputs = device_outputs
        self.graph_as_written = Graph(self.inputs, self.outputs)
        self.graph, self.history = run_pipeline(self.graph_as_written, select_passes(rewrites))
        self.kernels = kernels_of(self.graph)
        self.requested_backend = backend
        self.compile_status = CompileStatus(Plan(self.graph, check_types=current.debug), self._label())
        compilation = None
        if target is not None:
            chosen_fastmath = current.fastmath if fastmath is None else fastmath
            extra: dict[str, Any] = {"device_outputs": True} if device_outputs else {}  # targets with device memory
            if getattr(target, "chooses_math", False):  # the CPU target; CUDA kernels use libdevice's math
                extra["math"] = current.math if math is None else math
            compilation = target.start(self.graph, self.kernels, self.compile_status, chosen_fastmath, **extra)
        self.compile_status.started(compilation)

    @property
    def returns_list(self) -> bool:
        """Whether a call returns a list of arrays (``outputs`` was a list) rather than one array."""
        return not self._single

    @property
    def backend(self) -> str:
        """What answered the last call: "numpy" (the interpreter) or the compiled target's name."""
        return self.compile_status.backend

    # -- calling -------------------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        status = self.compile_status
        fast = status.fast
        if fast is not None and not kwargs:
            results = fast(args)
            if results is not None:
                backend = status.runner.backend  # type: ignore[union-attr]
                if backend != status.backend:  # the first compiled call after interpreted ones: watchers hear it
                    status.answered_by(backend)
                return results[0] if self._single else results
        arrays = self._arguments(args, kwargs)
        results, backend = status.run(args, arrays)
        if backend != status.backend:
            status.answered_by(backend)
        return results[0] if self._single else results

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
        adapter = self.compile_status.adapter  # a device target's: its arrays pass checked, not copied
        return [
            adapter.argument(var, value, position, self._label())
            if adapter is not None and not isinstance(value, np.ndarray) and adapter.accepts(value)
            else convert_argument(var, value, position, self._label())
            for position, (var, value) in enumerate(zip(self.inputs, values))
        ]

    def _label(self) -> str:
        return f"function {self.name}" if self.name else "function"

    # -- status (read from the public ``compile_status``) ---------------------------------------------------------
    @property
    def status(self) -> str:
        """Where compilation stands: "interpreting", "compiling i/n kernels", "compiled", "compiled (unchecked)",
        "fallback: <why>"."""
        return self.compile_status.state

    @property
    def events(self) -> list[KernelEvent]:
        """The compile events so far (queued, compiling, cached, ready, failed per kernel), oldest first."""
        return self.compile_status.events

    def subscribe(self, callback: Callable[[KernelEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on each later compile event (maybe from a worker thread); returns unsubscribe."""
        return self.compile_status.subscribe(callback)

    def subscribe_status(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(status)`` when the agreement check decides the status ("compiled (unchecked)" becoming
        "compiled" or "fallback: ..." on the first call), which no compile event announces; returns unsubscribe."""
        return self.compile_status.subscribe_status(callback)

    def wait(self, timeout: float | None = None) -> str:
        """Block until compilation has finished (or failed), or ``timeout`` seconds; return the status then.

        A compiled function has been checked against the interpreter on the last call's inputs when it was called
        while compiling: "compiled" or "fallback: <why>" is then final. Before any call it is "compiled
        (unchecked)", which the first call turns into "compiled" or "fallback: <why>"."""
        return self.compile_status.wait(timeout)

    # -- pickling ------------------------------------------------------------------------------------------------
    def __reduce__(self) -> tuple:
        """Pickled as what built it (the graph as written and the options): unpickling builds the function again,
        which starts compiling again or finds its kernels in the disk cache; no thread, lock or runner travels."""
        records, references = packed_variables(self.outputs)
        options_ = (self.requested_backend, self.name, self.rewrites, self.fastmath, self.device_outputs, self.math)
        return (_unpickled, (self.inputs, records, references, self._single, *options_))

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
    device_outputs: bool = False,
    math: str | None = None,
) -> Function:
    """Build a callable for ``outputs`` (a variable, or a list giving a list) as functions of ``inputs``.

    Returns at once: the NumPy interpreter answers the first call. ``backend`` is "auto" (default: compile with
    Numba in the background where it is installed), "numpy" (the interpreter only), "cpu" (compile; an error
    without Numba) or "cuda" (numba-cuda kernels on a GPU; without one ``f.status`` says so and the interpreter
    answers). ``rewrites`` is True (the default pipeline: merge, fold, stability, simplify,
    fusion), False (run the graph as written) or a list of pass names; ``f.history`` records what each pass did.
    ``fastmath=True`` compiles with LLVM's fast-math flags (not nnan/ninf: NaN and infinity keep their meaning);
    the default is ``nd.options().fastmath`` (False). ``device_outputs=True`` (a device target: ``backend="cuda"``)
    returns the outputs as device arrays whenever the device answered (``f.backend == "cuda"``); the interpreter's
    answers (while compiling, after a fallback) stay host arrays. Device arrays are accepted as inputs either way.
    ``math`` chooses what compiled CPU kernels call for exp, log, log1p, expm1, tanh, sin, cos, sigmoid, softplus
    and erf: "nbdiff" (nbdiff's own vectorisable functions, a few ulp from NumPy; the default is
    ``nd.options().math``) or "libm" (the C library's scalar functions: loops with them do not vectorise).
    """
    return Function(
        inputs,
        outputs,
        backend=backend,
        name=name,
        rewrites=rewrites,
        fastmath=fastmath,
        device_outputs=device_outputs,
        math=math,
    )


def _unpickled(
    inputs: Sequence[Variable],
    records: Sequence[tuple],
    references: Sequence[Any],
    single: bool,
    *options_: Any,
) -> Function:
    """A pickled function built again (``Function.__reduce__``): its outputs rebuilt, then ``function`` as usual."""
    outputs = unpacked_variables(records, references)
    return function(inputs, outputs[0] if single else outputs, *options_)

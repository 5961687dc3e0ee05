"""The target-neutral compile stages every target shares: plan, write, load or compile, report, check.

``Compilation(target, graph, kernels, status)`` returns at once. One background thread, shared by every function and
target (``_preparer``), asks the target for the function's *units* (what the status panel calls a kernel, each one or
more generated ``Module``s), writes each module into the disk cache (``cache.py``), loads those compiled before
(``target.load``) and sends the others to the compile worker (``worker.py``), a separate process, so compiling never
holds the notebook's GIL. Each unit's events (queued, compiling, cached, ready, failed) go to the function's public
``CompileStatus``. When every unit is loaded the target builds a runner (``target.runner``); the status object
checks it against the interpreter before it answers alone (``CompiledPlan.checked_run``: every kernel, every
variant of it, with a reproducer folder for a mismatch). A failed compile, a mismatch or a dead worker (after its
one retry) leaves the interpreter answering, with the reason in ``f.status``.

What a target implements (``nbdiff/backends/cpu.py`` is one):

- ``name``; ``problem() -> str | None`` (class methods: can it run here);
- ``plan_units(graph, kernels) -> list[Unit]``: the modules to build, from the shared code generator;
- ``warm_up()``: import its compiler while the worker compiles (called on the prepare thread);
- ``load(module) -> callable``: a module's compiled function from the disk cache, never compiling (``CacheMiss``
  when it is not there);
- ``runner(units, plan, root) -> Runner``: what answers calls (a ``CompiledPlan`` of per-kernel runners, or a
  whole-function one);
- optionally ``compiler`` (``"module:function"``): what the worker calls to compile a job of this target (the CUDA
  target's; absent or "": Numba CPU dispatchers), and ``compiles_in_worker = False`` for a target whose "compiling"
  is instant and must happen in the calling thread (the CUDA simulator): its modules are loaded here, and
  ``Compilation(..., inline=True)`` runs the whole preparation in the caller's thread.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from nbdiff.backends import cache, vmath_library
from nbdiff.backends.agreement import outputs_disagreement
from nbdiff.backends.worker import BackgroundThread
from nbdiff.config import options
from nbdiff.graph.basic import Apply
from nbdiff.runtime.events import FINISHED, KernelEvent
from nbdiff.runtime.interpreter import Plan

if TYPE_CHECKING:
    from nbdiff.graph.fgraph import Graph
    from nbdiff.rewrite.fusion import Kernel
    from nbdiff.runtime.compile_status import CompileStatus, Runner

LOAD_SWITCH_INTERVAL = 0.001  # seconds: the GIL switch interval while importing a compiler / loading kernels here

_log = logging.getLogger("nbdiff.compilation")


class KernelRunnerLike(Protocol):
    """One kernel's compiled runner inside a ``CompiledPlan``: the plan step's ``perform``, and what the agreement
    check asks of it."""

    op: Any  # the node's op: its ``perform`` is the reference
    modules: list[Any]  # the compiled variants, by module position
    precision: str | None  # the agreement check's tolerance (None: the outputs' own)

    def compiled(self, *arrays: np.ndarray, variant: int | None = None) -> tuple[np.ndarray, ...]: ...

    def sum_scales(self, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[float | None]: ...

    def call_arguments(self, inputs: Sequence[np.ndarray], variant: int) -> tuple[list, list[int]]: ...


class Target(Protocol):
    """One compile target's specifics (see the module docstring)."""

    name: str

    def plan_units(self, graph: Graph, kernels: Sequence[Kernel]) -> list[Unit]: ...

    def warm_up(self) -> None: ...

    def load(self, module: Module) -> Any: ...

    def runner(self, units: list[Unit], plan: Plan, root: Any) -> Runner: ...


# ---------------------------------------------------------------------------------------------------------------
# What gets compiled
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Module:
    """One generated module: its name, text, the function it defines and the signatures to compile."""

    name: str
    source: str
    function: str
    signatures: tuple[str, ...]
    path: Any = None  # set once written
    dispatcher: Any = None  # set once loaded

    def write_reproducer(
        self, root: Any, arguments: Sequence[Any], expected: Sequence[np.ndarray] | None, reason: str, outputs=()
    ) -> Path:
        """A reproducer folder of this module in ``root``'s reproducers/ (``cache.write_reproducer``)."""
        folder = cache.reproducers_directory(root)
        return cache.write_reproducer(
            folder,
            self.name,
            vmath_library.standalone(self.source),
            arguments,
            expected,
            reason,
            self.signatures,
            outputs,
            self.function,
        )

    def reproducer_note(
        self, root: Any, arguments: Sequence[Any], expected: Sequence[np.ndarray] | None, reason: str, outputs=()
    ) -> str:
        """`` (reproducer: <folder>)`` for a status, or why none could be written (a refused or full cache): the
        reason for falling back matters more than the reproducer, so this never raises."""
        try:
            folder = self.write_reproducer(root, arguments, expected, reason, outputs)
        except Exception as exc:
            return f" (no reproducer: {type(exc).__name__}: {exc})"
        return f" (reproducer: {folder})"


@dataclass
class Unit:
    """What the status panel calls a kernel: "k0" (its serial and parallel modules) or the entry point."""

    name: str
    modules: list[Module]
    kernel: Kernel | None = None  # a fused kernel's unit
    entry: Any = None  # a whole-function unit's description (the CPU target's scalar entry point)
    node: Apply | None = None  # the graph node the unit runs (fused kernels and compiled ops)
    op_kernel: Any = None  # a compiled op's kernel description (the target's own)
    optional: bool = False  # its failure leaves the others answering (a whole-plan entry point beside its kernels)
    state: str = "new"
    compile_seconds: float = 0.0
    pending: int = 0
    failure: str = ""
    started: float = field(default_factory=perf_counter)


class CompiledPlan:
    """The interpreter's plan with compiled kernels swapped in."""

    mismatched: str | None = None  # the kernel the agreement check found wrong
    fast = None  # no raw-argument path: calls take the checked, converted arrays

    def __init__(self, backend: str, plan: Plan, runners: dict[int, Any], units: list[Unit], cache_root: Any = None):
        self.backend = backend  # the target's name
        self.plan = plan.with_performers(runners)
        self.runners = runners
        self.units = units
        self.cache_root = cache_root  # the cache folder whose reproducers/ gets mismatches (None: the current one)

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.plan.run(arrays)

    def learn(self, args: tuple, arrays: Sequence[np.ndarray]) -> None:
        """Nothing to learn: the plan takes arrays."""

    def checked_run(self, interpreter: Plan, arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], str | None]:
        """The compiled results and why they disagree with the interpreter's (None when they agree): each kernel
        is compared with its ``perform`` on the same inputs, every variant of it (the ``parallel=True`` module
        too, which runs small inputs as well), so a mismatch names the kernel and its module."""
        problems: list[tuple[str, str]] = []  # (kernel, reason)

        def checking(unit: Unit, runner: KernelRunnerLike) -> Callable[..., tuple[np.ndarray, ...]]:
            def run(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
                expected = runner.op.perform(*inputs)  # a user's mistake raises here, as in the interpreter
                for variant in range(len(runner.modules)):
                    if not problems:
                        problem = _variant_problem(unit, runner, variant, inputs, expected, self.cache_root)
                        if problem is not None:
                            problems.append((unit.name, problem))
                return expected

            return run

        by_node = {id(unit.node): unit for unit in self.units if unit.node is not None}
        performers = {node: checking(by_node[node], runner) for node, runner in self.runners.items()}
        # The interpreter's values flow from kernel to kernel, each compared with the compiled kernel's; when all
        # agree they are the answer (equal to the compiled one within the tolerance).
        results = interpreter.with_performers(performers).run(arrays)
        if problems:
            self.mismatched = problems[0][0]
            return [], problems[0][1]
        return results, None


def _variant_problem(
    unit: Unit,
    runner: KernelRunnerLike,
    variant: int,
    inputs: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    root: Any,
) -> str | None:
    """Why module ``variant`` of a kernel disagrees with the interpreter's ``expected`` (None when it agrees), with
    the path of a reproducer of the failing call (in ``root``'s reproducers/)."""
    which = f"kernel {unit.name}" + (" (its parallel=True module)" if variant == 1 else "")
    try:
        got = runner.compiled(*inputs, variant=variant)
    except Exception as exc:  # the compiled kernel failed where the interpreter did not
        return f"{which} raised {type(exc).__name__}: {exc}"
    problem = outputs_disagreement(expected, got, runner.sum_scales(inputs, expected), runner.precision)
    if problem is None:
        return None
    try:
        arguments, outputs = runner.call_arguments(inputs, variant)
    except Exception as exc:  # the reason matters more than the reproducer
        where = f" (no reproducer: {exc})"
    else:
        flat = [np.ravel(e) for e in expected]
        where = unit.modules[variant].reproducer_note(root, arguments, flat, problem, outputs)
    return f"{which} disagrees with the interpreter: {problem}{where}"


# ---------------------------------------------------------------------------------------------------------------
# The background compilation of one function
# ---------------------------------------------------------------------------------------------------------------
class Compilation:
    """Compiles one function's units for ``target`` in the background, reporting to its ``CompileStatus``."""

    def __init__(
        self, target: Target, graph: Graph, kernels: Sequence[Kernel], status: CompileStatus, inline: bool = False
    ):
        self.target = target
        self.graph, self.kernels = graph, list(kernels)
        self.status = status
        self.root = cache.cache_directory()  # read here: options are per thread, and the work runs in others
        self.freeze_gc = options().freeze_gc
        self.timeout = options().compile_timeout  # seconds a compile job may take in the worker
        self.units: list[Unit] = []
        self._lock = threading.Lock()
        self._finished = False
        status.started(self)  # before any report: a mismatch found later is reported back here
        if inline:  # the caller's thread does it all (a target whose kernels must load and launch there)
            self._prepare()
        else:
            _preparer.call(self._prepare)  # one thread prepares every function in turn: no thread per function

    # -- stages ------------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Generate and write every module; load those compiled before, send the rest to the worker."""
        try:
            self.units = self.target.plan_units(self.graph, self.kernels)
            if not self.units:
                self.status.nothing_to_compile("nothing to compile (no fused kernels: NumPy runs every op)")
                return
            directory = cache.kernels_directory(self.root)
            for unit in self.units:
                for module in unit.modules:
                    module.path = cache.write_module(directory, module.name, module.source)
            self._update_status()
            for unit in self.units:
                if all(cache.is_compiled(m.path, m.signatures) for m in unit.modules) and self._load_cached(unit):
                    continue
                self._submit(unit)
            with collector_paused(self.freeze_gc, loading=False):
                self.target.warm_up()  # while the worker compiles, so loading its results takes milliseconds
        except Exception as exc:  # code generation or the cache folder: the interpreter keeps answering
            _log.debug("nbdiff: preparing compilation failed", exc_info=True)
            self._prepare_failed(exc)

    def _prepare_failed(self, exc: Exception) -> None:
        """The reason in ``f.status`` once, and a failed event for each unit not finished; no traceback (a refused
        or unwritable cache folder fails every function alike)."""
        if isinstance(exc, cache.CacheRefused):
            reason = str(exc)
        elif isinstance(exc, OSError):
            reason = f"the kernel cache in {self.root} cannot be used: {type(exc).__name__}: {exc}"
        else:
            reason = f"preparing the kernels failed: {type(exc).__name__}: {exc}"
        self._fail(reason)
        for unit in self.units:
            if unit.state not in FINISHED:
                self._unit_failed(unit, reason)

    def _load_cached(self, unit: Unit) -> bool:
        """Load a unit compiled before; False (and no event) when the compiler's cache lacks it after all."""
        start = perf_counter()
        try:
            with collector_paused(self.freeze_gc, loading=True), gentle_switching():
                self.target.warm_up()
                for m in unit.modules:
                    m.dispatcher = self.target.load(m)
        except cache.CacheMiss:
            return False
        except Exception as exc:
            self._unit_failed(unit, f"loading the cached kernel failed: {type(exc).__name__}: {exc}")
            return True
        self._emit(unit, "cached", perf_counter() - start)
        return True

    def _submit(self, unit: Unit) -> None:
        from nbdiff.backends.worker import CompileJob, compile_worker

        self._emit(unit, "queued")
        if not getattr(self.target, "compiles_in_worker", True):
            self._load_here(unit)
            return
        unit.pending = len(unit.modules)
        worker = compile_worker()
        compiler = getattr(self.target, "compiler", "")
        for module in unit.modules:
            label = f"{unit.name} of {self.status.label}"
            job = CompileJob(str(module.path), module.name, module.function, module.signatures, label, compiler)
            worker.submit(
                job,
                on_start=lambda unit=unit: self._started(unit),
                on_done=lambda result, unit=unit, module=module: self._compiled(unit, module, result),
                timeout=self.timeout,
            )

    def _load_here(self, unit: Unit) -> None:
        """A unit of a target that compiles nothing ahead (the CUDA simulator): its modules loaded in this thread."""
        self._emit(unit, "compiling")
        start = perf_counter()
        try:
            for m in unit.modules:
                m.dispatcher = self.target.load(m)
        except Exception as exc:
            self._unit_failed(unit, f"loading the kernel failed: {type(exc).__name__}: {exc}")
            return
        self._emit(unit, "ready", perf_counter() - start)

    def _started(self, unit: Unit) -> None:
        """The worker began one of the unit's modules (called on the worker's callback thread)."""
        with self._lock:
            if unit.state != "queued":
                return
            unit.started = perf_counter()
        self._emit(unit, "compiling")

    def _compiled(self, unit: Unit, module: Module, result: Any) -> None:
        """A worker result for one of the unit's modules (on the worker's callback thread): load it here (ms) once
        all the unit's are compiled."""
        with self._lock:
            if unit.state == "failed":
                return
            unit.compile_seconds += result.seconds
            unit.pending -= 1
            done = unit.pending == 0
        if not result.ok:
            folder = module.reproducer_note(self.root, [], None, result.error)
            self._unit_failed(unit, f"compiling failed: {result.error}{folder}")
            return
        if not done:
            return
        try:
            with collector_paused(self.freeze_gc, loading=True), gentle_switching():
                self.target.warm_up()  # the callback thread may get here while the preparing one still imports
                for m in unit.modules:
                    m.dispatcher = self.target.load(m)
        except Exception as exc:
            self._unit_failed(unit, f"loading the compiled kernel failed: {type(exc).__name__}: {exc}")
            return
        if unit.state == "queued":  # the worker may answer before its "started" message is handled
            self._emit(unit, "compiling")
        self._emit(unit, "ready", unit.compile_seconds)

    def _unit_failed(self, unit: Unit, reason: str) -> None:
        with self._lock:
            if unit.state == "failed":
                return
            unit.failure = reason
        self._emit(unit, "failed", reason=reason)

    def _unit_finished(self) -> None:
        """Once every unit is finished, hand the runner (or the first failure) to the function."""
        with self._lock:
            if self._finished or any(u.state not in FINISHED for u in self.units):
                return
            self._finished = True
        failed = [u for u in self.units if u.state == "failed" and not u.optional]
        if failed:
            self.status.failed(f"kernel {failed[0].name}: {failed[0].failure}")
            return
        try:
            runner = self._runner()
        except Exception as exc:
            self.status.failed(f"assembling the compiled function failed: {type(exc).__name__}: {exc}")
            return
        self.status.ready(runner)

    def _runner(self) -> Runner:
        return self.target.runner(self.units, self.status.plan, self.root)

    # -- reporting ----------------------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self.status.failed(reason)

    def _update_status(self) -> None:
        done = sum(u.state in FINISHED for u in self.units)
        self.status.progress(done, len(self.units))

    def _emit(self, unit: Unit, state: str, seconds: float | None = None, reason: str = "") -> None:
        """Record ``unit``'s new state and tell the status object. The status is updated first (the last unit to finish
        decides "compiled" or "fallback"), so a subscriber reading ``f.status`` on the event sees where it ends."""
        unit.state = state
        if state in FINISHED:
            self._update_status()
            self._unit_finished()
        self.status.emit(KernelEvent(self.status.label, unit.name, state, seconds, reason))

    def report_mismatch(self, kernel: str, reason: str) -> None:
        """The agreement check found ``kernel`` wrong after the function fell back: a "failed" event says so."""
        unit = next((u for u in self.units if u.name == kernel), None)
        if unit is not None:
            unit.failure = reason
            self._emit(unit, "failed", reason=reason)


class SharedSetting:
    """A process-wide setting that threads change while they need it, with one owner: the first thread in saves
    and changes it (``_change``), the last one out restores it (``_restore``), whatever order overlapping holders
    end in (each restoring what it saw when it came in would leave the changed value for good). ``_joined`` sees
    every holder's options as it comes in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0

    @contextlib.contextmanager
    def _held(self, **options: Any) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._change()
            self._depth += 1
            self._joined(**options)
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._restore(**options)

    def _change(self) -> None:
        raise NotImplementedError

    def _joined(self, **options: Any) -> None:
        return None

    def _restore(self, **options: Any) -> None:
        raise NotImplementedError


class CollectorPause(SharedSetting):
    """Holds off Python's cyclic garbage collector while any thread imports Numba or loads kernels.

    Numba's import and its first kernel load create some 10^5 objects, which trigger full collections; each holds
    the GIL for 30-70 ms here (measured: the two largest main-thread stalls while a function compiled). Paused,
    they pile up in the youngest generation instead, and the first collection after the pause would scan them all
    (15-20 ms); so, with ``freeze`` (the ``freeze_gc`` option), the objects alive at the end of each pause are frozen
    out of later collections (``gc.freeze``) until a pause that loaded a kernel has ended: after Numba's import and
    its first load, once per process. Frozen objects are still freed by reference counting; only cycles among
    them are never collected."""

    def __init__(self) -> None:
        super().__init__()
        self._was_enabled = False
        self._loaded = False  # a pause that loaded a kernel is under way
        self.frozen = False  # Numba and its first load are frozen: later pauses freeze nothing

    def __call__(self, freeze: bool, loading: bool) -> contextlib.AbstractContextManager[None]:
        return self._held(freeze=freeze, loading=loading)

    def _change(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()

    def _joined(self, freeze: bool, loading: bool) -> None:  # type: ignore[override]
        self._loaded = self._loaded or loading

    def _restore(self, freeze: bool, loading: bool) -> None:  # type: ignore[override]
        """With ``freeze`` (the last holder's), freeze what piled up while paused, until a load is over."""
        if freeze and not self.frozen and "numba" in sys.modules:
            gc.freeze()
            self.frozen = self._loaded
        self._loaded = False
        if self._was_enabled:
            gc.enable()


collector_paused = CollectorPause()


class GentleSwitching(SharedSetting):
    """Lets the user's thread take the GIL back every millisecond while any thread imports Numba or loads kernels
    (measured: importing Numba in a thread stalls the main thread up to ~20 ms at the default 5 ms interval). The
    interval is process-wide: the first thread in sets ``LOAD_SWITCH_INTERVAL``, the last one out restores it."""

    def __init__(self) -> None:
        super().__init__()
        self._saved = 0.0

    def __call__(self) -> contextlib.AbstractContextManager[None]:
        return self._held()

    def _change(self) -> None:
        self._saved = sys.getswitchinterval()
        sys.setswitchinterval(min(self._saved, LOAD_SWITCH_INTERVAL))

    def _restore(self) -> None:  # type: ignore[override]
        sys.setswitchinterval(self._saved)


gentle_switching = GentleSwitching()


_preparer = BackgroundThread("nbdiff prepare")  # generates, writes and loads every function's modules, in turn


class FaultHook:
    """A test hook of a target: functions created inside ``with hook(kind):`` generate broken kernels of that kind,
    which the agreement check (or the compile path) must catch; ``hook.current`` is the kind in force, or None."""

    def __init__(self, kinds: Sequence[str], doc: str) -> None:
        self.kinds = tuple(kinds)
        self.current: str | None = None
        self.__doc__ = doc

    @contextlib.contextmanager
    def __call__(self, kind: str) -> Iterator[None]:
        if kind not in self.kinds:
            raise ValueError(f"inject_fault: kind must be one of {', '.join(self.kinds)}, got {kind!r}")
        previous, self.current = self.current, kind
        try:
            yield
        finally:
            self.current = previous

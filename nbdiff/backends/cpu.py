"""The compiled CPU backend: Numba kernels compiled in the background, swapped in once they agree.

``start(function)`` returns at once. One background thread, shared by every function (``_preparer``: a handful
of threads whatever the number of functions), generates one module per kernel (serial, plus a ``parallel=True``
variant where the loop may reach ``PARALLEL_THRESHOLD`` elements) or, for a function of scalars, one
whole-function entry point (``entry_source``). A module compiled before (by this or an earlier process: the disk
cache) is loaded in milliseconds; the others go to the compile worker, a separate process, so compilation never
holds the notebook's GIL. Each kernel's events (queued, compiling, cached, ready, failed) reach
``function._emit``. When every kernel is loaded, the compiled runner becomes the function's *candidate*: its first
call is checked against the interpreter (``Function._first_compiled_call``), and only then answers alone. A failed
compile, a mismatch or a dead worker (after its one retry) leaves the interpreter answering, with the reason in
``f.status`` and a reproducer folder (the module, its arguments, a script) whose path the reason names.

The kernels run inside the interpreter's plan (``Plan.with_performers``): NumPy still runs the ops that are not
fused kernels (matmul through its BLAS, indexing, shape ops), which are compiled code already.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from nbdiff.backends import cache
from nbdiff.backends.agreement import least_precision, outputs_disagreement
from nbdiff.backends.codegen import UnsupportedKernel, kernel_layout, read_inputs, structure_problem
from nbdiff.backends.cpu_source import (
    ArgumentRecipe,
    cpu_module_source,
    kernel_arguments,
    kernel_signature,
    module_name,
    op_module_name,
    op_module_source,
    shaped_outputs,
)
from nbdiff.backends.entry_source import EntryPoint, entry_constants, entry_source, scalar_entry_problem
from nbdiff.backends.worker import BackgroundThread
from nbdiff.config import options
from nbdiff.errors import BackendError
from nbdiff.graph.basic import Apply
from nbdiff.ops.compiled import OpKernel
from nbdiff.ops.fused import FusedElemwise
from nbdiff.runtime.events import ENTRY_POINT, FINISHED, KernelEvent
from nbdiff.runtime.interpreter import Plan

if TYPE_CHECKING:
    from nbdiff.function import Function
    from nbdiff.rewrite.fusion import Kernel

RECIPES_PER_KERNEL = 16  # input shapes whose argument recipe a compiled kernel remembers
_UNKNOWN = object()
PARALLEL_THRESHOLD = 100_000  # loops from this many elements run the parallel=True variant (DESIGN section 5)
LOAD_SWITCH_INTERVAL = 0.001  # seconds: the GIL switch interval while importing Numba / loading kernels here
FAULTS = ("wrong-values", "wrong-parallel-values", "compile-error")  # test hooks: see ``inject_fault``

_log = logging.getLogger("nbdiff.cpu")
_fault: str | None = None


def numba_available() -> bool:
    """Whether Numba can be imported (checked without importing it)."""
    return importlib.util.find_spec("numba") is not None


@contextlib.contextmanager
def inject_fault(kind: str) -> Iterator[None]:
    """Test hook: functions created inside the block generate broken kernels. "wrong-values" adds 1 to each
    kernel's first output (the agreement check must catch it); "wrong-parallel-values" does so in the
    ``parallel=True`` modules only; "compile-error" makes Numba's typing fail."""
    global _fault
    if kind not in FAULTS:
        raise ValueError(f"inject_fault: kind must be one of {', '.join(FAULTS)}, got {kind!r}")
    previous, _fault = _fault, kind
    try:
        yield
    finally:
        _fault = previous


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
            folder, self.name, self.source, arguments, expected, reason, self.signatures, outputs, self.function
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
    entry: EntryPoint | None = None  # the entry point's unit
    node: Apply | None = None  # the graph node the unit runs (fused kernels and compiled ops)
    op_kernel: OpKernel | None = None  # a compiled op's unit
    state: str = "new"
    compile_seconds: float = 0.0
    pending: int = 0
    failure: str = ""
    started: float = field(default_factory=perf_counter)


def plan_units(function: Function, fastmath: bool, fault: str | None) -> list[Unit]:
    """The modules to build for ``function``: one entry point for a function of scalars, else per kernel."""
    if scalar_entry_problem(function.graph) is None and function.graph.nodes:
        entry = entry_source(function.graph, fastmath=fastmath)
        source, name = _with_fault(entry.source, entry.name, _module_fault(fault, False), "    return (")
        return [Unit(ENTRY_POINT, [Module(name, source, "entry", (entry.signature,))], entry=entry)]
    units = []
    for kernel in function.kernels:
        op = kernel.op
        if structure_problem(op) is not None:
            continue  # the interpreter runs it (e.g. a sum over some axes): nothing to compile
        signature = kernel_signature(op, _static_scalars(kernel))
        modules = []
        for parallel in (False, True) if _may_be_large(kernel) else (False,):
            source = cpu_module_source(op, parallel=parallel, fastmath=fastmath)
            name = module_name(op, parallel=parallel, fastmath=fastmath)
            source, name = _with_fault(source, name, _module_fault(fault, parallel), "    for i in")
            modules.append(Module(name, source, "kernel", (signature,)))
        units.append(Unit(kernel.name, modules, kernel=kernel, node=kernel.node))
    return units + _op_units(function, _module_fault(fault, False))


def _op_units(function: Function, fault: str | None) -> list[Unit]:
    """One unit per node whose op describes a compiled kernel of its own (``op_kernel``), named after the op (and
    its position among those of that op, from the second on)."""
    units: list[Unit] = []
    seen: dict[str, int] = {}
    for node in function.graph.nodes:
        describe = getattr(node.op, "op_kernel", None)
        spec = describe(node) if describe is not None else None
        if spec is None:
            continue
        count = seen[spec.name] = seen.get(spec.name, 0) + 1
        name = spec.name if count == 1 else f"{spec.name}#{count}"
        source, module = _with_fault(
            op_module_source(spec), op_module_name(spec), fault, "    for r in", _shift_last_output
        )
        units.append(Unit(name, [Module(module, source, "kernel", (spec.signature,))], node=node, op_kernel=spec))
    return units


def _static_scalars(kernel: Kernel) -> list[int]:
    """The read inputs whose static shape has size 1 (0-d, constants, ``(1, 1)``): passed as scalars."""
    return [r for r in read_inputs(kernel.op) if all(d == 1 for d in kernel.inputs[r].shape)]


def _may_be_large(kernel: Kernel) -> bool:
    """Whether the kernel's loop may reach ``PARALLEL_THRESHOLD`` elements (unknown sizes may)."""
    shapes = [v.shape for v in kernel.inputs]
    if any(d is None for shape in shapes for d in shape):
        return True
    return int(np.prod(np.broadcast_shapes(*shapes), dtype=np.int64)) >= PARALLEL_THRESHOLD


def _module_fault(fault: str | None, parallel: bool) -> str | None:
    """The fault injected into one module: "wrong-parallel-values" is "wrong-values" in a parallel module only."""
    if fault == "wrong-parallel-values":
        return "wrong-values" if parallel else None
    return fault


def _with_fault(
    source: str, name: str, fault: str | None, anchor: str, shift: Callable[[str], str] | None = None
) -> tuple[str, str]:
    """The module text with the injected fault (a test hook), under a name of its own so no cache is shared."""
    if fault is None:
        return source, name
    if fault == "compile-error":
        source = source.replace(anchor, "    undefined_name_injected_by_test_hook(1)\n" + anchor, 1)
    else:
        source = (shift or _shift_first_output)(source)
    return source, f"{name}_fault_{fault.replace('-', '_')}"


def _shift_last_output(source: str) -> str:
    """Adds 1 to the first element of an op kernel's last output (the "wrong-values" fault): a line at the end of
    ``kernel``, whose last parameter is an output buffer by the ``OpKernel`` convention."""
    signature = next(line for line in source.splitlines() if line.startswith("def kernel("))
    last = signature[len("def kernel(") : signature.rindex(")")].split(",")[-1].strip()
    return source.rstrip("\n") + f"\n    {last}.flat[0] = {last}.flat[0] + 1\n"


def _shift_first_output(source: str) -> str:
    """Adds 1 to the first value a module stores or returns (the "wrong-values" fault)."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("out0[i] = ", "sum0[0] = ")):
            lines[i] = line + " + 1"
            break
        if stripped.startswith("return (") and lines[i - 1].startswith("    v"):  # the entry point's return
            lines[i] = line.replace("return (", "return (1 + ", 1)
            break
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Runners: what answers calls once the modules are loaded
# ---------------------------------------------------------------------------------------------------------------
class KernelRunner:
    """Runs one fused kernel compiled (the ``perform`` of its plan step); the interpreter's ``perform`` where the
    compiled signature or flat layout does not fit these inputs (a size-1 input where an array was compiled), and
    where the kernel refuses a value (a ``domain_checks`` condition held): ``perform`` then raises the
    interpreter's error for the step, naming the member's line."""

    def __init__(self, op: FusedElemwise, serial: Any, parallel: Any | None):
        self.op, self.serial, self.parallel = op, serial, parallel
        self.modules = [serial] if parallel is None else [serial, parallel]  # the variants, by module position
        self.precision = least_precision(op.value_dtypes())  # the agreement check's tolerance
        self._recipes: dict[tuple, ArgumentRecipe | None] = {}  # by the inputs' shapes; None: no flat loop fits

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        try:
            return self.compiled(*arrays)
        except ValueError:  # a value outside a member's domain: the interpreter raises its own error
            return self.op.perform(*arrays)

    def compiled(self, *arrays: np.ndarray, variant: int | None = None) -> tuple[np.ndarray, ...]:
        """The kernel's results (``perform``'s where no compiled loop fits the inputs); ``variant`` runs that module
        (0 serial, 1 parallel) whatever the size, else the size chooses. Raises what the kernel raises."""
        shapes = tuple([a.shape for a in arrays])
        recipe = self._recipes.get(shapes, _UNKNOWN)
        if recipe is _UNKNOWN:
            recipe = self._recipe(shapes)
        if recipe is None:
            return self.op.perform(*arrays)
        args = recipe.arguments(arrays)
        if variant is None:
            variant = int(self.parallel is not None and recipe.size >= PARALLEL_THRESHOLD)
        try:
            self.modules[variant](*args)
        except TypeError:  # no compiled signature for these argument types (and compiling here is disabled)
            return self.op.perform(*arrays)
        return shaped_outputs(recipe.layout, args)

    def _recipe(self, shapes: tuple) -> ArgumentRecipe | None:
        """The recipe for inputs of these shapes (None when no flat loop fits them), remembered for a few shapes."""
        try:
            recipe: ArgumentRecipe | None = ArgumentRecipe(kernel_layout(self.op, shapes))
        except UnsupportedKernel:
            recipe = None
        if len(self._recipes) >= RECIPES_PER_KERNEL:
            self._recipes.clear()
        self._recipes[shapes] = recipe
        return recipe

    def sum_scales(self, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[float | None]:
        """For each output, the scale of its rounding error (a trailing sum's: the sum of its terms' magnitudes)."""
        return _sum_scales(self.op, inputs, expected)

    def call_arguments(self, inputs: Sequence[np.ndarray], variant: int) -> tuple[list, list[int]]:
        """For a reproducer of module ``variant``: the call's arguments and the output positions."""
        layout, arguments = kernel_arguments(self.op, inputs)
        return arguments, list(range(len(arguments) - len(layout.outputs), len(arguments)))


class OpRunner:
    """Runs one op through its compiled ``OpKernel``; the op's ``perform`` where the kernel's adapter declines the
    inputs or the compiled signature does not fit them, and where the kernel raises (an index out of range): the
    interpreter's error then comes from ``perform``, as without compiling."""

    def __init__(self, op: Any, spec: OpKernel, dispatcher: Any):
        self.op, self.spec, self.dispatcher = op, spec, dispatcher
        self.modules = [dispatcher]
        self.precision: str | None = None  # the outputs' own tolerance

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        try:
            return self.compiled(*arrays)
        except (ValueError, IndexError):  # values the kernel refuses: the interpreter raises its own error
            return self.op.perform(*arrays)

    def compiled(self, *arrays: np.ndarray, variant: int | None = None) -> tuple[np.ndarray, ...]:
        """The kernel's results (``perform``'s where the adapter declines the inputs); raises what the kernel
        raises. ``variant`` is accepted for symmetry with ``KernelRunner``: an op kernel has one module."""
        prepared = self.spec.arguments(arrays)
        if prepared is None:
            return self.op.perform(*arrays)
        args, finish = prepared
        try:
            self.dispatcher(*args)
        except TypeError:  # no compiled signature for these argument types (and compiling here is disabled)
            return self.op.perform(*arrays)
        return finish()

    def sum_scales(self, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[float | None]:
        return [None] * len(expected)

    def call_arguments(self, inputs: Sequence[np.ndarray], variant: int) -> tuple[list, list[int]]:
        """For a reproducer: the call's arguments and the output positions."""
        prepared = self.spec.arguments(inputs)
        if prepared is None:
            raise UnsupportedKernel(f"{self.spec.name}: the kernel does not run these inputs")
        args = prepared[0]  # the op's outputs are the kernel's last arguments, one buffer each
        return args, list(range(len(args) - self.op.nout, len(args)))


class CompiledPlan:
    """The interpreter's plan with compiled kernels swapped in."""

    backend = "cpu"
    mismatched: str | None = None  # the kernel the agreement check found wrong

    def __init__(self, plan: Plan, runners: dict[int, Any], units: list[Unit], cache_root: Any = None):
        self.plan = plan.with_performers(runners)
        self.runners = runners
        self.units = units
        self.cache_root = cache_root  # the cache folder whose reproducers/ gets mismatches (None: the current one)

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.plan.run(arrays)

    def checked_run(self, interpreter: Plan, arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], str | None]:
        """The compiled results and why they disagree with the interpreter's (None when they agree): each kernel
        is compared with its ``perform`` on the same inputs, every variant of it (the ``parallel=True`` module
        too, which runs small inputs as well), so a mismatch names the kernel and its module."""
        problems: list[tuple[str, str]] = []  # (kernel, reason)

        def checking(unit: Unit, runner: KernelRunner | OpRunner) -> Callable[..., tuple[np.ndarray, ...]]:
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
    runner: KernelRunner | OpRunner,
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


class EntryRunner:
    """Runs a function of scalars through its compiled entry point, in one Numba call; through the interpreter's
    ``plan`` when the entry point refuses a value (a ``domain_checks`` condition held), so that the interpreter
    raises its own error, naming the node's line."""

    backend = "cpu"
    mismatched: str | None = None  # the entry point's name once the agreement check found it wrong

    def __init__(self, entry: EntryPoint, dispatcher: Any, unit: Unit, plan: Plan, cache_root: Any = None):
        self.entry, self.dispatcher, self.unit, self.plan = entry, dispatcher, unit, plan
        self.cache_root = cache_root  # the cache folder whose reproducers/ gets mismatches (None: the current one)
        self.constants = entry_constants(entry)
        self.boxers = [_scalar_boxer(dtype) for dtype in entry.output_dtypes]
        self.precision = least_precision(v.dtype for node in plan.graph.nodes for v in node.outputs)
        self.fast: Callable[[tuple], list[np.ndarray] | None] | None = None  # set by ``learn``

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            return self.compiled(arrays)
        except ValueError:  # a value outside a member's domain: the interpreter raises its own error
            return self.plan.run(arrays)

    def compiled(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The entry point's results as 0-d arrays; raises what it raises."""
        values = self.dispatcher(*(a.reshape(())[()] for a in arrays), *self.constants)
        return [box(v) for box, v in zip(self.boxers, values)]

    def learn(self, args: tuple, arrays: Sequence[np.ndarray]) -> None:
        """After a call checked and converted the normal way: if its raw arguments' types are exactly the inputs'
        scalar types (Python float for float64, int for int64, bool for bool, or the NumPy scalar of the input's
        dtype), later calls with the same types take ``fast``, which skips the checks and conversions."""
        if self.fast is not None or len(args) != len(arrays):  # learnt already, or some passed by name
            return
        if all(type(a) in _exact_types(array.dtype) for a, array in zip(args, arrays)):
            self.fast = _fast_path(tuple(map(type, args)), self.dispatcher, self.constants, self.boxers)

    def checked_run(self, interpreter: Plan, arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], str | None]:
        """The compiled results and why they disagree with the interpreter's (None when they agree)."""
        expected = interpreter.run(arrays)  # a user's mistake raises here, as without compiling
        try:
            got = self.compiled(arrays)
        except Exception as exc:  # the entry point failed where the interpreter did not
            self.mismatched = self.unit.name
            return [], f"the compiled entry point raised {type(exc).__name__}: {exc}"
        problem = outputs_disagreement(expected, got, precision=self.precision)
        if problem is None:
            return got, None
        module = self.unit.modules[0]
        arguments = [a.reshape(())[()] for a in arrays] + list(self.constants)
        where = module.reproducer_note(self.cache_root, arguments, expected, problem)
        self.mismatched = self.unit.name
        return [], f"the compiled entry point disagrees with the interpreter: {problem}{where}"


def _scalar_boxer(dtype: str) -> Callable[[Any], np.ndarray]:
    """Turns a scalar the entry point returns into the interpreter's 0-d array of ``dtype``: ``np.array`` alone where
    Numba's Python scalar already maps to that dtype (float, int, bool: 0.2 µs instead of 0.35 with a dtype)."""
    exact = {"float64": 0.0, "int64": 0, "bool": False}
    if dtype in exact and np.array(exact[dtype]).dtype.name == dtype:
        return np.array
    target = np.dtype(dtype)
    return lambda value: np.array(value, dtype=target)


def _exact_types(dtype: np.dtype) -> tuple[type, ...]:
    """The argument types that are exactly values of ``dtype``: its NumPy scalar type, and Python's own."""
    python = {np.dtype("float64"): float, np.dtype("int64"): int, np.dtype("bool"): bool}.get(dtype)
    return (python, dtype.type) if python is not None else (dtype.type,)


def _fast_path(
    types: tuple[type, ...], dispatcher: Any, constants: Sequence[object], boxers: Sequence[Callable]
) -> Callable[[tuple], list[np.ndarray] | None]:
    """A function of the raw argument tuple: the entry point's results as 0-d arrays when every argument has
    exactly the type in ``types``, else None (the caller then checks and converts them the normal way).

    It is generated for the arity at hand, because a generic type check (``tuple(map(type, args)) in seen``)
    and a zip over the results cost 1 us of the 3 a call takes (W3): the guard is a chain of ``is`` tests."""
    n = len(types)
    guard = " or ".join([f"len(args) != {n}"] + [f"type(args[{i}]) is not t{i}" for i in range(n)])
    call = ", ".join([f"args[{i}]" for i in range(n)] + [f"c{j}" for j in range(len(constants))])
    results = ", ".join(f"b{k}(v[{k}])" for k in range(len(boxers)))
    source = (
        "def fast(args):\n"
        f"    if {guard}:\n"
        "        return None\n"
        "    try:\n"
        f"        v = entry({call})\n"
        "    except (TypeError, OverflowError, ValueError):  # e.g. an int beyond int64: the checks say why\n"
        "        return None\n"
        f"    return [{results}]\n"
    )
    namespace: dict[str, Any] = {"entry": dispatcher}
    namespace.update({f"t{i}": t for i, t in enumerate(types)})
    namespace.update({f"c{j}": c for j, c in enumerate(constants)})
    namespace.update({f"b{k}": b for k, b in enumerate(boxers)})
    exec(compile(source, "<nbdiff fast path>", "exec"), namespace)
    return namespace["fast"]


def _sum_scales(op: FusedElemwise, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[float | None]:
    """For each output, the scale of its rounding error: for a trailing sum, the sum of its terms' magnitudes."""
    if all(r is None for r in op.reductions):
        return [None] * len(expected)
    terms = FusedElemwise(op.input_kinds, op.program, op.results, (None,) * len(op.results)).perform(*inputs)
    with np.errstate(all="ignore"):
        return [
            None if reduction is None else float(np.nansum(np.abs(term), dtype=np.float64))
            for reduction, term in zip(op.reductions, terms)
        ]


# ---------------------------------------------------------------------------------------------------------------
# The background compilation of one function
# ---------------------------------------------------------------------------------------------------------------
class CpuCompilation:
    """Compiles one function's kernels in the background and hands the result to the function."""

    def __init__(self, function: Function, fastmath: bool = False):
        self.function = function
        self.fastmath = fastmath
        self.fault = _fault
        self.root = cache.cache_directory()  # read here: options are per thread, and the work runs in others
        self.freeze_gc = options().freeze_gc
        self.timeout = options().compile_timeout  # seconds a compile job may take in the worker
        self.units: list[Unit] = []
        self._lock = threading.Lock()
        self._finished = False
        _preparer.call(self._prepare)  # one thread prepares every function in turn: no thread per function

    # -- stages ------------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Generate and write every module; load those compiled before, send the rest to the worker."""
        try:
            self.units = plan_units(self.function, self.fastmath, self.fault)
            if not self.units:
                self.function._compiled_nothing("nothing to compile (no fused kernels: NumPy runs every op)")
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
            with _collector_paused(self.freeze_gc, loading=False):
                import_numba_gently()  # while the worker compiles, so loading its results takes milliseconds
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
        """Load a unit compiled before; False (and no event) when Numba's cache lacks it after all."""
        start = perf_counter()
        try:
            with _collector_paused(self.freeze_gc, loading=True), _gentle_switching():
                import_numba_gently()
                for m in unit.modules:
                    m.dispatcher = cache.load_compiled(m.path, m.name, m.signatures, m.function)
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
        unit.pending = len(unit.modules)
        worker = compile_worker()
        for module in unit.modules:
            job = CompileJob(
                str(module.path), module.name, module.function, module.signatures, f"{unit.name} of {self._label()}"
            )
            worker.submit(
                job,
                on_start=lambda unit=unit: self._started(unit),
                on_done=lambda result, unit=unit, module=module: self._compiled(unit, module, result),
                timeout=self.timeout,
            )

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
            with _collector_paused(self.freeze_gc, loading=True), _gentle_switching():
                import_numba_gently()  # the callback thread may get here while the preparing one still imports Numba
                for m in unit.modules:
                    m.dispatcher = cache.load_compiled(m.path, m.name, m.signatures, m.function)
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
        failed = [u for u in self.units if u.state == "failed"]
        if failed:
            self.function._fall_back(f"kernel {failed[0].name}: {failed[0].failure}")
            return
        try:
            runner = self._runner()
        except Exception as exc:
            self.function._fall_back(f"assembling the compiled function failed: {type(exc).__name__}: {exc}")
            return
        self.function._install(runner)

    def _runner(self) -> CompiledPlan | EntryRunner:
        if self.units[0].entry is not None:
            unit = self.units[0]
            entry, dispatcher, plan = unit.entry, unit.modules[0].dispatcher, self.function._plan
            return EntryRunner(entry, dispatcher, unit, plan, self.root)  # type: ignore[arg-type]
        runners: dict[int, KernelRunner | OpRunner] = {}
        for unit in self.units:
            serial = unit.modules[0].dispatcher
            if unit.op_kernel is not None:
                runners[id(unit.node)] = OpRunner(unit.node.op, unit.op_kernel, serial)  # type: ignore[union-attr]
                continue
            parallel = unit.modules[1].dispatcher if len(unit.modules) > 1 else None
            runners[id(unit.node)] = KernelRunner(unit.kernel.op, serial, parallel)  # type: ignore[union-attr]
        return CompiledPlan(self.function._plan, runners, self.units, self.root)

    # -- reporting ----------------------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self.function._fall_back(reason)

    def _update_status(self) -> None:
        done = sum(u.state in FINISHED for u in self.units)
        self.function._set_compiling(done, len(self.units))

    def _emit(self, unit: Unit, state: str, seconds: float | None = None, reason: str = "") -> None:
        """Record ``unit``'s new state and tell the function. The status is updated first (the last unit to finish
        decides "compiled" or "fallback"), so a subscriber reading ``f.status`` on the event sees where it ends."""
        unit.state = state
        if state in FINISHED:
            self._update_status()
            self._unit_finished()
        self.function._emit(KernelEvent(self._label(), unit.name, state, seconds, reason))

    def report_mismatch(self, kernel: str, reason: str) -> None:
        """The agreement check found ``kernel`` wrong after the function fell back: a "failed" event says so."""
        unit = next((u for u in self.units if u.name == kernel), None)
        if unit is not None:
            unit.failure = reason
            self._emit(unit, "failed", reason=reason)

    def _label(self) -> str:
        return self.function._label()


def import_numba_gently() -> None:
    """Import Numba in this (background) thread with as little hold on the GIL as possible: the 1 ms switch
    interval, and llvmlite's shared library opened first by a ctypes call, which releases the GIL (opening it is
    35-45 ms of relocations here, which ``ctypes.CDLL`` inside llvmlite would do holding the GIL)."""
    global _numba_imported
    if _numba_imported:
        return
    with _numba_import_lock:  # "numba" is in sys.modules long before its import finishes: wait for the importer
        if _numba_imported:
            return
        with _gentle_switching():
            _preload_llvmlite()
            import numba  # noqa: F401
            import numba.core.compiler_lock  # noqa: F401  (what ``cache.load_compiled`` uses)
        _numba_imported = True


_numba_import_lock = threading.Lock()
_numba_imported = False


def _preload_llvmlite() -> None:
    """``dlopen`` llvmlite's library through a foreign call (GIL released); llvmlite's own load then finds it open.
    POSIX only; on any failure llvmlite opens it itself, as without this."""
    if os.name != "posix":
        return
    try:
        spec = importlib.util.find_spec("llvmlite")
        if spec is None or spec.origin is None:
            return
        libraries = sorted(Path(spec.origin).parent.joinpath("binding").glob("libllvmlite.*"))
        if not libraries:
            return
        libc = ctypes.CDLL(None)
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.dlopen(os.fsencode(libraries[0]), os.RTLD_NOW | os.RTLD_LOCAL)
    except (OSError, AttributeError, ImportError, ValueError):
        return


class _SharedSetting:
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


class _CollectorPause(_SharedSetting):
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


_collector_paused = _CollectorPause()


class _GentleSwitching(_SharedSetting):
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


_gentle_switching = _GentleSwitching()


_preparer = BackgroundThread("nbdiff prepare")  # generates, writes and loads every function's modules, in turn


def start(function: Function, backend: str, fastmath: bool = False) -> CpuCompilation | None:
    """Start compiling ``function`` in the background for ``backend`` ("auto" or "cpu"); None when "auto" finds
    no Numba. "cpu" without Numba raises ``BackendError``."""
    if not numba_available():
        if backend == "cpu":
            raise BackendError(
                "function: backend='cpu' needs Numba, which is not installed (pip install numba); "
                "backend='auto' or 'numpy' runs the NumPy interpreter"
            )
        return None
    return CpuCompilation(function, fastmath=fastmath)

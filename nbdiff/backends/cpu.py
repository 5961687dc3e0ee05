"""The CPU target: Numba kernels, compiled in the worker, loaded from Numba's disk cache, run in the plan.

``CpuTarget`` is what the target registry (``nbdiff/runtime/targets.py``) hands ``nd.function`` for
``backend="cpu"`` (and "auto" where Numba is installed); the compile stages themselves are the shared ones in
``compilation.py``. This module holds the CPU specifics: which modules a function needs (one per fused kernel,
serial plus a ``parallel=True`` variant where the loop may reach ``PARALLEL_THRESHOLD`` elements, one per compiled
op from ``cpu_ops.py``, or a whole-function entry point for a function of scalars, ``entry_source``; beside
them, where every step has a compiled form, a whole-plan entry point, ``cpu_program``), loading a module from
Numba's cache (``numba_loading.py``), and the runners answering calls: ``KernelRunner`` (its parallel module
where ``parallelism.runs_parallel`` says so) and ``OpRunner`` inside the interpreter's plan
(``Plan.with_performers``: NumPy still runs matmul through its BLAS, indexing and shape ops), ``EntryRunner``, or
``ProgramRunner`` (``program_runner.py``) over that plan.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from nbdiff.backends import (
    cpu_scan,  # registers the Scan kernel with cpu_ops; runs loops over compiled bodies
    numba_loading,
    numpy_blas,
)
from nbdiff.backends.agreement import least_precision, outputs_disagreement
from nbdiff.backends.codegen import UnsupportedKernel, kernel_layout, read_inputs, structure_problem
from nbdiff.backends.compilation import Compilation, CompiledPlan, FaultHook, Module, Unit, gentle_switching
from nbdiff.backends.cpu_ops import OpKernel, op_kernel
from nbdiff.backends.cpu_program import Program, program_source
from nbdiff.backends.cpu_rows import (
    RowsForm,
    kernel_form,
    may_run_parallel,
    rows_module_name,
    rows_module_source,
    rows_recipe,
    rows_signature,
)
from nbdiff.backends.cpu_source import (
    ArgumentRecipe,
    cpu_module_source,
    kernel_signature,
    module_name,
    op_module_name,
    op_module_source,
)
from nbdiff.backends.entry_source import EntryPoint, entry_constants, entry_source, scalar_entry_problem
from nbdiff.backends.parallelism import PARALLEL_THRESHOLD, blas, runs_parallel
from nbdiff.backends.program_runner import ProgramRunner
from nbdiff.errors import BackendError
from nbdiff.ops.fused import FusedElemwise
from nbdiff.ops.linalg import MatMul
from nbdiff.runtime.events import ENTRY_POINT
from nbdiff.runtime.interpreter import Plan

if TYPE_CHECKING:
    from nbdiff.graph.fgraph import Graph
    from nbdiff.rewrite.fusion import Kernel
    from nbdiff.runtime.compile_status import CompileStatus

CPU = "cpu"
RECIPES_PER_KERNEL = 16  # input shapes whose argument recipe a compiled kernel remembers
_UNKNOWN = object()
PROGRAM = "plan"  # the unit of a whole-plan entry point (``cpu_program``)
FAULTS = (  # test hooks: see ``inject_fault``
    "wrong-values",
    "wrong-parallel-values",
    "compile-error",
    "wrong-program-values",
    "program-compile-error",
)


def numba_available() -> bool:
    """Whether Numba can be imported (checked without importing it)."""
    return importlib.util.find_spec("numba") is not None


inject_fault = FaultHook(
    FAULTS,
    'Test hook: functions created inside the block generate broken kernels. "wrong-values" adds 1 to each '
    'kernel\'s first output (the agreement check must catch it); "wrong-parallel-values" does so in the '
    '``parallel=True`` modules only; "compile-error" makes Numba\'s typing fail; "wrong-program-values" and '
    '"program-compile-error" do those in the whole-plan entry point only.',
)


def plan_units(function: Any, fastmath: bool, fault: str | None, math: str = "nbdiff") -> list[Unit]:
    """The modules to build for an ``nd.function`` (its rewritten graph and kernels)."""
    return graph_units(function.graph, function.kernels, fastmath, fault, math=math)


def graph_units(
    graph: Graph, kernels: Sequence[Kernel], fastmath: bool, fault: str | None, entry: bool = True, math: str = "nbdiff"
) -> list[Unit]:
    """The modules to build for ``graph``: one entry point for a function of scalars (where ``entry``: scalar code
    has no loop to vectorise, so it calls libm whatever ``math``), else per kernel."""
    if entry and scalar_entry_problem(graph) is None and graph.nodes:
        entry = entry_source(graph, fastmath=fastmath)
        source, name = _with_fault(entry.source, entry.name, _module_fault(fault, False), "    return (")
        return [Unit(ENTRY_POINT, [Module(name, source, "entry", (entry.signature,))], entry=entry)]
    units = []
    for kernel in kernels:
        op = kernel.op
        form = kernel_form(op, _static_shapes(kernel))
        if form is None and structure_problem(op) is not None:
            continue  # the interpreter runs it (e.g. a sum over axes no loop form reduces): nothing to compile
        large = _may_be_large(kernel) and (form is None or may_run_parallel(form))
        modules = []
        for parallel in (False, True) if large else (False,):
            if form is None:
                signature = kernel_signature(op, _static_scalars(kernel))
                source = cpu_module_source(op, parallel=parallel, fastmath=fastmath, math=math)
                name = module_name(op, parallel=parallel, fastmath=fastmath, math=math)
            else:
                signature = rows_signature(op, form)
                source = rows_module_source(op, form, parallel=parallel, fastmath=fastmath, math=math)
                name = rows_module_name(op, form, parallel=parallel, fastmath=fastmath, math=math)
            anchor = "    for i in" if form is None else "    for o in"
            source, name = _with_fault(source, name, _module_fault(fault, parallel), anchor)
            modules.append(Module(name, source, "kernel", (signature,)))
        units.append(Unit(kernel.name, modules, kernel=kernel, node=kernel.node))
    units += _op_units(graph, _module_fault(fault, False))
    if entry and units:
        units += _program_unit(graph, fastmath, fault, math)
    return units


def _program_unit(graph: Graph, fastmath: bool, fault: str | None, math: str) -> list[Unit]:
    """The whole-plan entry point (``cpu_program``) as an optional unit beside the kernels, where every step has a
    compiled form (a matmul needs NumPy's own CBLAS, ``numpy_blas``, or else SciPy, through which Numba calls
    BLAS); none otherwise."""
    products = [node for node in graph.nodes if isinstance(node.op, MatMul)]
    if any(numpy_blas.gemm_symbol(node.outputs[0].dtype) is None for node in products):
        if importlib.util.find_spec("scipy") is None:
            return []
    try:
        program = program_source(graph, fastmath=fastmath, parallel_threshold=PARALLEL_THRESHOLD, math=math)
    except UnsupportedKernel:
        return []  # a step without a compiled form: the mixed plan runs alone
    kind = {"wrong-program-values": "wrong-values", "program-compile-error": "compile-error"}.get(fault or "")
    source, name = _with_fault(program.source, program.name, kind, "    return None", _shift_program_output)
    module = Module(name, source, "entry", (program.signature,))
    return [Unit(PROGRAM, [module], entry=program, optional=True)]


def _op_units(graph: Graph, fault: str | None) -> list[Unit]:
    """One unit per node whose op describes a compiled kernel of its own (``op_kernel``), named after the op (and
    its position among those of that op, from the second on)."""
    units: list[Unit] = []
    seen: dict[str, int] = {}
    for node in graph.nodes:
        spec = op_kernel(node)
        if spec is None:
            continue
        count = seen[spec.name] = seen.get(spec.name, 0) + 1
        name = spec.name if count == 1 else f"{spec.name}#{count}"
        source, module = _with_fault(
            op_module_source(spec), op_module_name(spec), fault, "    for r in", _shift_last_output
        )
        units.append(Unit(name, [Module(module, source, "kernel", (spec.signature,))], node=node, op_kernel=spec))
    return units


def _static_shapes(kernel: Kernel) -> list[tuple[int | None, ...]]:
    """The static shapes of the kernel's inputs (``None`` for sizes known only at run time)."""
    return [tuple(v.type.shape) for v in kernel.inputs]


def _static_scalars(kernel: Kernel) -> list[int]:
    """The read inputs whose static shape has size 1 (0-d, constants, ``(1, 1)``): passed as scalars."""
    return [r for r in read_inputs(kernel.op) if all(d == 1 for d in kernel.inputs[r].type.shape)]


def _may_be_large(kernel: Kernel) -> bool:
    """Whether the kernel's loop may reach ``PARALLEL_THRESHOLD`` elements (unknown sizes may)."""
    shapes = [v.type.shape for v in kernel.inputs]
    if any(d is None for shape in shapes for d in shape):
        return True
    return int(np.prod(np.broadcast_shapes(*shapes), dtype=np.int64)) >= PARALLEL_THRESHOLD


def _module_fault(fault: str | None, parallel: bool) -> str | None:
    """The fault injected into one kernel module: "wrong-parallel-values" is "wrong-values" in a parallel module
    only; the whole-plan entry point's own faults in none."""
    if fault == "wrong-parallel-values":
        return "wrong-values" if parallel else None
    if fault in ("wrong-program-values", "program-compile-error"):
        return None
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


def _shift_program_output(source: str) -> str:
    """Adds 1 to the first element of a whole-plan entry point's first output (the "wrong-values" fault), after
    every step."""
    return source.replace("    return None\n", "    o0.ravel()[0] = o0.ravel()[0] + 1\n    return None\n")


def _shift_first_output(source: str) -> str:
    """Adds 1 to the first value a module stores or returns (the "wrong-values" fault)."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("out0[i] = ", "sum0[0] = ", "out0[o, i] = ", "sum0[o] = ", "sum0[i] = ")):
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

    def __init__(self, op: FusedElemwise, serial: Any, parallel: Any | None, form: RowsForm | None = None):
        self.op, self.serial, self.parallel = op, serial, parallel
        self.form = form  # the rows form the modules were generated in (``cpu_rows``); None: the flat loop
        self.modules = [serial] if parallel is None else [serial, parallel]  # the variants, by module position
        self.precision = least_precision(op.value_dtypes())  # the agreement check's tolerance
        self._recipes: dict[tuple, Any] = {}  # by the inputs' shapes; None: no loop fits

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
            variant = int(self.parallel is not None and runs_parallel(recipe.size))
        try:
            self.modules[variant](*args)
        except TypeError:  # no compiled signature for these argument types (and compiling here is disabled)
            return self.op.perform(*arrays)
        return recipe.shaped(args)

    def _recipe(self, shapes: tuple) -> Any:
        """The recipe for inputs of these shapes (None when the kernel's loop does not fit them), remembered for a
        few shapes."""
        recipe: Any = None
        if self.form is not None:
            recipe = rows_recipe(self.op, self.form, shapes)
        else:
            try:
                recipe = ArgumentRecipe(kernel_layout(self.op, shapes))
            except UnsupportedKernel:
                pass
        if len(self._recipes) >= RECIPES_PER_KERNEL:
            self._recipes.clear()
        self._recipes[shapes] = recipe
        return recipe

    def sum_scales(self, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[float | None]:
        """For each output, the scale of its rounding error (a trailing sum's: the sum of its terms' magnitudes)."""
        return _sum_scales(self.op, inputs, expected)

    def call_arguments(self, inputs: Sequence[np.ndarray], variant: int) -> tuple[list, list[int]]:
        """For a reproducer of module ``variant``: the call's arguments and the output positions."""
        recipe = self._recipe(tuple([a.shape for a in inputs]))
        if recipe is None:
            raise UnsupportedKernel(f"fused kernel {self.op.kernel_name}: no loop fits these inputs")
        arguments = recipe.arguments(inputs)
        return arguments, list(range(len(arguments) - len(recipe.buffers), len(arguments)))


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
        """A sum's tolerance scales with its terms' magnitudes (``OpKernel.sums``); other outputs' with their own."""
        if self.spec.sums:
            with np.errstate(all="ignore"):
                return [float(np.nansum(np.abs(inputs[0]), dtype=np.float64))] * len(expected)
        return [None] * len(expected)

    def call_arguments(self, inputs: Sequence[np.ndarray], variant: int) -> tuple[list, list[int]]:
        """For a reproducer: the call's arguments and the output positions."""
        prepared = self.spec.arguments(inputs)
        if prepared is None:
            raise UnsupportedKernel(f"{self.spec.name}: the kernel does not run these inputs")
        args = prepared[0]  # the op's outputs are the kernel's last arguments, one buffer each
        return args, list(range(len(args) - self.op.nout, len(args)))


class EntryRunner:
    """Runs a function of scalars through its compiled entry point, in one Numba call; through the interpreter's
    ``plan`` when the entry point refuses a value (a ``domain_checks`` condition held), so that the interpreter
    raises its own error, naming the node's line."""

    backend = CPU
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
    """For each output, the scale of its rounding error (``FusedElemwise.rounding_scales``)."""
    return list(op.rounding_scales(*inputs))


# ---------------------------------------------------------------------------------------------------------------
# The CPU target
# ---------------------------------------------------------------------------------------------------------------
class CpuTarget:
    """Numba on the CPU: what the shared compile stages (``compilation.py``) ask of this target."""

    name = "cpu"
    chooses_math = True  # nd.function(math=...) picks vmath or libm for its kernels (the CUDA target uses its own)

    def __init__(self, fastmath: bool = False, fault: str | None = None, math: str = "nbdiff"):
        self.fastmath = fastmath
        self.math = math  # "nbdiff" (vmath's vectorisable functions) or "libm"
        self.fault = fault  # the injected fault (a test hook) in force when the function was made
        self.scan_bodies: list[cpu_scan.ScanBody] = []  # loops whose bodies' kernels this compilation builds

    @classmethod
    def problem(cls) -> str | None:
        """Why this target cannot run here: Numba missing; None when it can."""
        if not numba_available():
            return "needs Numba, which is not installed (pip install numba)"
        return None

    @classmethod
    def start(
        cls,
        graph: Graph,
        kernels: Sequence[Kernel],
        status: CompileStatus,
        fastmath: bool,
        device_outputs: bool = False,
        math: str = "nbdiff",
    ) -> Compilation:
        """Begin compiling ``graph``'s kernels in the background, reporting to ``status``."""
        if device_outputs:
            raise BackendError("function: device_outputs=True needs a target with device memory (backend='cuda')")
        return Compilation(cls(fastmath, inject_fault.current, math), graph, kernels, status)

    def plan_units(self, graph: Graph, kernels: Sequence[Kernel]) -> list[Unit]:
        """The modules to build (``graph_units``), and those of the bodies of loops without a kernel of their own
        (``cpu_scan.scan_bodies``)."""
        units = graph_units(graph, kernels, self.fastmath, self.fault, math=self.math)
        if units and isinstance(units[0].entry, EntryPoint):
            return units
        self.scan_bodies = cpu_scan.scan_bodies(
            graph,
            lambda body, body_kernels: graph_units(
                body, body_kernels, self.fastmath, self.fault, entry=False, math=self.math
            ),
        )
        for body in self.scan_bodies:
            units += [*body.units, body.loop]
        return units

    def warm_up(self) -> None:
        """Import Numba gently (``import_numba_gently``)."""
        import_numba_gently()

    def load(self, module: Module) -> Any:
        """The module's dispatcher, loaded from Numba's disk cache (``CacheMiss`` when it is not there)."""
        return numba_loading.load_compiled(module.path, module.name, module.signatures, module.function)

    def runner(self, units: list[Unit], plan: Plan, root: Any) -> CompiledPlan | EntryRunner | ProgramRunner:
        """The scalar entry point's runner; or the plan with a runner per kernel and compiled op, under the
        whole-plan entry point's runner where that compiled."""
        if isinstance(units[0].entry, EntryPoint):
            unit = units[0]
            return EntryRunner(unit.entry, unit.modules[0].dispatcher, unit, plan, root)
        program = next((u for u in units if u.name == PROGRAM and isinstance(u.entry, Program)), None)
        units = [u for u in units if u is not program]
        mixed = self._mixed_plan(units, plan, root)
        if program is None or program.state == "failed":
            return mixed
        return ProgramRunner(mixed, program.entry, program)

    def _mixed_plan(self, units: list[Unit], plan: Plan, root: Any) -> CompiledPlan:
        """The interpreter's plan with a runner per kernel and compiled op (and loops over compiled bodies)."""
        inner = {id(unit) for body in self.scan_bodies for unit in [*body.units, body.loop]}
        runners = {id(unit.node): _kernel_runner(unit) for unit in units if id(unit) not in inner}
        for body in self.scan_bodies:
            body_runners = {id(unit.node): _kernel_runner(unit) for unit in body.units}
            body_plan = Plan(body.graph).with_performers(body_runners)
            runners[id(body.node)] = cpu_scan.ScanRunner(body.node.op, body_plan)
        if any(isinstance(node.op, MatMul) for node in plan.graph.nodes):
            return BlasLimitedPlan(self.name, plan, runners, units, root)
        return CompiledPlan(self.name, plan, runners, units, root)


class BlasLimitedPlan(CompiledPlan):
    """The mixed plan of a function with matmuls: NumPy's BLAS on one thread while the machine's cores are busy
    (``parallelism.blas``)."""

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return blas.call(CompiledPlan.run, self, arrays)


def _kernel_runner(unit: Unit) -> KernelRunner | OpRunner:
    """The runner of a fused kernel's or a compiled op's unit, its modules loaded."""
    serial = unit.modules[0].dispatcher
    if unit.op_kernel is not None:
        return OpRunner(unit.node.op, unit.op_kernel, serial)  # type: ignore[union-attr]
    parallel = unit.modules[1].dispatcher if len(unit.modules) > 1 else None
    kernel = unit.kernel
    return KernelRunner(kernel.op, serial, parallel, kernel_form(kernel.op, _static_shapes(kernel)))  # type: ignore[union-attr]


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
        with gentle_switching():
            _preload_llvmlite()
            import numba  # noqa: F401
            import numba.core.compiler_lock  # noqa: F401  (what ``numba_loading.load_compiled`` uses)
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

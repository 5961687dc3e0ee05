"""The CUDA target: what the shared compile stages (``nbdiff/backends/compilation.py``) ask of ``backend="cuda"``.

- ``problem()``: ``nbdiff.cuda.cuda_problem()`` (numba-cuda, its bindings, a GPU and driver; the simulator counts).
  ``backend="cuda"`` where it cannot run does not raise (``reports_problem``): ``start`` reports the reason as the
  function's fallback status and the interpreter answers. "auto" never picks this target.
- ``plan_units``: one unit per node the device plan runs through a generated module: each fused kernel (and each
  elementwise node fusion left alone, as a one-member kernel) with its eager ``kernel_signature``, and each op with a
  CUDA op kernel (``op_kernels``) with its module texts and signatures.
- compiling: on a GPU, the shared compile worker compiles each module through ``compile_in_worker`` (the job's
  ``compiler``): ``cuda.jit(cache=True)`` with the eager signature writes numba-cuda's disk cache, which ``load``
  then reads in the notebook's process. Under the simulator nothing compiles (decorating is instant) and launches
  must stay in one host thread, so the whole preparation runs in the caller's thread (``Compilation(inline=True)``)
  and the modules are imported there.
- ``runner``: ``CudaRunner``, a ``DevicePlan`` (values stay on the device between the kernels of one call) whose
  kernel library uses the loaded modules; its agreement check runs each device step alone on the interpreter's
  inputs and compares it with ``perform`` (``agreement.py``'s tolerance), naming the kernel that disagrees.
- device arrays: ``CudaArguments`` lets them through as inputs (checked, not copied); ``device_outputs=True``
  returns device arrays whenever the device answered.

Importing this module imports nothing of numba; the target imports ``numba.cuda`` once ``problem()`` is asked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nbdiff.backends.agreement import least_precision, outputs_disagreement
from nbdiff.backends.compilation import Compilation, FaultHook, Module, Unit
from nbdiff.cuda import cuda_problem, simulated
from nbdiff.errors import InputError, NbdiffError, node_error
from nbdiff.graph.types import numpy_dtype
from nbdiff.ops.elemwise import Elemwise
from nbdiff.ops.fused import FusedElemwise

if TYPE_CHECKING:
    from nbdiff.graph.basic import Apply, Variable
    from nbdiff.graph.fgraph import Graph
    from nbdiff.rewrite.fusion import Kernel
    from nbdiff.runtime.compile_status import CompileStatus
    from nbdiff.runtime.interpreter import Plan

CUDA = "cuda"
FAULTS = ("wrong-values",)  # test hooks: see ``inject_fault``
COMPILER = "nbdiff.cuda.target:compile_in_worker"  # what the compile worker calls for this target's jobs


inject_fault = FaultHook(
    FAULTS,
    'Test hook: functions created inside the block generate broken fused kernels ("wrong-values" adds 1 to each '
    "kernel's first elementwise output), which the agreement check must catch.",
)


# ---------------------------------------------------------------------------------------------------------------
# Planning: the modules a function's device plan launches
# ---------------------------------------------------------------------------------------------------------------
def graph_units(graph: Graph, kernels: Sequence[Kernel], fault: str | None = None) -> list[Unit]:
    """One unit per node the device plan runs through generated modules (module docstring); ``unit.op_kernel`` is
    the list of names the device plan asks its library for, one per module."""
    from nbdiff.cuda.device_plan import device_kernel_op, single_member_kernel
    from nbdiff.cuda.library import op_module_name
    from nbdiff.cuda.op_kernels import cuda_op_kernel
    from nbdiff.cuda.source import cuda_module_source, kernel_signature, module_name

    kernel_names = {id(k.node): k.name for k in kernels}
    units: list[Unit] = []
    seen: dict[str, int] = {}
    for node in graph.nodes:
        op = node.op
        if isinstance(op, (FusedElemwise, Elemwise)):
            fused = op if isinstance(op, FusedElemwise) else single_member_kernel(node)
            kernel_op = device_kernel_op(fused)
            if kernel_op is None:
                continue  # the device plan runs it on the host
            name = module_name(kernel_op)
            source, faulted = _with_fault(cuda_module_source(kernel_op), name, fault)
            modules = [Module(faulted, source, "kernel", (kernel_signature(kernel_op),))]
            installs = [name]
            unit_name = kernel_names.get(id(node)) or _counted(seen, op.name)
        else:
            spec = cuda_op_kernel(node)
            if spec is None or not spec.modules:
                continue  # a host step, or data movement through the library's helpers
            modules, installs = [], []
            for label, text in spec.modules:
                name = op_module_name(label, text)
                functions = [(f, s) for lab, f, s in spec.signatures if lab == label]
                for function, signature in functions or [("", "")]:
                    modules.append(Module(name, text, function, (signature,) if signature else ()))
                    installs.append(name)
            unit_name = _counted(seen, spec.name)
        units.append(Unit(unit_name, modules, node=node, op_kernel=installs))
    return units


def _counted(seen: dict[str, int], name: str) -> str:
    """``name``, then ``name#2``, ``name#3`` for later units of the same name."""
    count = seen[name] = seen.get(name, 0) + 1
    return name if count == 1 else f"{name}#{count}"


def _with_fault(source: str, name: str, fault: str | None) -> tuple[str, str]:
    """The module text with the injected fault (a test hook: the kernel's first output is made wrong, whether it is
    written per element or summed by blocks) under a name of its own, so no cache is shared."""
    if fault is None:
        return source, name
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*out0\[i\] = ", line):  # an elementwise output: one more than the interpreter's
            lines[i] = line + " + 1"
            break
        if re.match(r"\s*cuda\.atomic\.add\(sum0, 0, .*\)$", line):  # a summed output: each block adds one more
            lines[i] = line[:-1] + " + 1)"
            break
    else:
        raise ValueError(f"inject_fault({fault!r}): kernel {name} writes no output this hook knows how to change")
    return "\n".join(lines) + "\n", f"{name}_fault_{fault.replace('-', '_')}"


# ---------------------------------------------------------------------------------------------------------------
# Compiling (the worker's side) and loading (the notebook's)
# ---------------------------------------------------------------------------------------------------------------
def compile_in_worker(job: Any) -> None:
    """In the compile worker: import the job's module and compile its kernel for each eager signature, which
    numba-cuda's ``cache=True`` writes to its disk cache beside the module (the worker then marks it compiled)."""
    from numba import cuda  # noqa: F401  (numba-cuda, before the module's own import)

    from nbdiff.backends.cache import import_module_from

    module = import_module_from(Path(job.path), job.name)
    if job.function:
        dispatcher = getattr(module, job.function)
        for signature in job.signatures:
            dispatcher.compile(signature)


def load_module(module: Module) -> Any:
    """The module imported in this process; on a GPU each eager signature is bound, read from numba-cuda's disk
    cache (compiled by the worker). The simulator has nothing to load."""
    from nbdiff.backends.cache import import_module_from

    loaded = import_module_from(Path(module.path), module.name)
    if module.function and not simulated():
        dispatcher = getattr(loaded, module.function)
        for signature in module.signatures:
            dispatcher.compile(signature)
    return loaded


# ---------------------------------------------------------------------------------------------------------------
# Device arrays as arguments
# ---------------------------------------------------------------------------------------------------------------
class CudaArguments:
    """Device arrays as arguments (``ArgumentAdapter``): checked against their input's type, never copied; copied
    to the host only where the interpreter answers."""

    def accepts(self, value: Any) -> bool:
        from nbdiff.cuda.library import is_device_array

        return is_device_array(value)

    def argument(self, var: Variable, value: Any, position: int, where: str) -> Any:
        """``value`` itself when its dtype is the input's (no cast: that would copy) and its shape fits."""
        from nbdiff.cuda.library import as_device_array

        device = as_device_array(value)
        shape, dtype = tuple(device.shape), np.dtype(device.dtype)
        if dtype != numpy_dtype(var.dtype):
            problem = f"expected a device array of dtype {var.dtype} (device arrays are not cast), got {dtype}"
        elif len(shape) != var.ndim:
            problem = f"expected {var.ndim} dimension(s), got a device array of shape {shape}"
        elif not var.type.accepts(shape):
            problem = f"expected shape {var.type.describe()}, got a device array of shape {shape}"
        else:
            return device
        label = f"{where}: argument {position} ({var.label()}: {var.type})"
        raise node_error(InputError, label, problem)

    def to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value.copy_to_host())


# ---------------------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------------------
class CudaRunner:
    """Answers calls with a ``DevicePlan`` over the loaded modules; checked node by node against the interpreter."""

    backend = CUDA
    fast = None  # no raw-argument path: calls take checked arrays (host or device)

    def __init__(self, units: list[Unit], plan: Plan, root: Any, device_outputs: bool = False):
        from nbdiff.cuda.device_plan import DevicePlan
        from nbdiff.cuda.library import KernelLibrary

        library = KernelLibrary(root)
        for unit in units:
            for module, name in zip(unit.modules, unit.op_kernel):
                library.install(name, module.dispatcher)
        self.device = DevicePlan(plan.graph, library=library)
        self.units = {id(unit.node): unit for unit in units}
        self.cache_root = root
        self.device_outputs = device_outputs
        self.mismatched: str | None = None

    def run(self, arrays: Sequence[Any]) -> list[Any]:
        return self.device.run(arrays, device_outputs=self.device_outputs)

    def learn(self, args: tuple, arrays: Sequence[Any]) -> None:
        """Nothing to learn: the device plan takes arrays."""

    def checked_run(self, interpreter: Plan, arrays: Sequence[np.ndarray]) -> tuple[list[Any], str | None]:
        """The interpreter's results when every device step agrees with ``perform`` on the interpreter's inputs
        (then equal to the device's within the tolerance), else why the first that disagrees does."""
        problems: list[tuple[str, str]] = []

        def checking(node: Apply) -> Any:
            def run(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
                expected = node.op.perform(*inputs)  # a user's mistake raises here, as in the interpreter
                if not problems:
                    problem = self._step_problem(node, inputs, expected)
                    if problem is not None:
                        problems.append(problem)
                return expected

            return run

        device = self.device
        performers = {id(node): checking(node) for node in device.graph.nodes if device.runs_on_device(node)}
        results = interpreter.with_performers(performers).run(arrays)
        if problems:
            self.mismatched = problems[0][0]
            return [], problems[0][1]
        if self.device_outputs:
            from numba import cuda

            results = [cuda.to_device(np.ascontiguousarray(r)) for r in results]
        return results, None

    def _step_problem(self, node: Apply, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]):
        """(kernel, why) when the device's step disagrees with ``expected``; None when it agrees."""
        unit = self.units.get(id(node))
        name = unit.name if unit is not None else node.op.name
        which = f"kernel {name}"
        try:
            got = self.device.step_results(node, inputs)
        except NbdiffError as exc:
            return name, f"{which} raised {type(exc).__name__} where the interpreter did not: {exc}"
        except Exception as exc:
            return name, f"{which} raised {type(exc).__name__}: {exc}"
        problem = outputs_disagreement(expected, got, _scales(node, inputs, expected), _precision(node))
        if problem is None:
            return None
        where = ""
        if unit is not None:
            flat = [np.ravel(e) for e in expected]
            where = unit.modules[0].reproducer_note(self.cache_root, list(inputs), flat, problem)
        return name, f"{which} disagrees with the interpreter: {problem}{where}"


def _precision(node: Apply) -> str | None:
    """The least precise float dtype the step computes through (the agreement tolerance)."""
    if isinstance(node.op, FusedElemwise):
        return least_precision(node.op.value_dtypes())
    return least_precision([v.dtype for v in (*node.inputs, *node.outputs)])


def _scales(node: Apply, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[float | None]:
    """Each output's rounding-error scale: for a sum (a fused trailing sum, a sum or matmul op) the magnitude of
    its terms, i.e. the step computed on the inputs' absolute values; else the output's own (None)."""
    op = node.op
    if isinstance(op, FusedElemwise):
        return list(op.rounding_scales(*inputs))
    if isinstance(op, Elemwise):
        return [None] * len(expected)
    try:
        with np.errstate(all="ignore"):
            magnitudes = op.perform(*[np.abs(a) if a.dtype.kind == "f" else a for a in inputs])
        scales = [float(np.nanmax(np.abs(m), initial=0.0)) if m.dtype.kind == "f" else None for m in magnitudes]
    except Exception:  # an op whose perform refuses the absolute values: the outputs' own scale
        return [None] * len(expected)
    return [None if s is None else max(s, float(np.nanmax(np.abs(e), initial=0.0))) for s, e in zip(scales, expected)]


# ---------------------------------------------------------------------------------------------------------------
# The target
# ---------------------------------------------------------------------------------------------------------------
class _Unavailable:
    """The compilation of a function whose CUDA target cannot run here: nothing to report a mismatch to."""

    def report_mismatch(self, kernel: str, reason: str) -> None:
        return None


class CudaTarget:
    """numba-cuda kernels run by a device plan: what the shared compile stages ask of this target."""

    name = CUDA
    reports_problem = True  # backend="cuda" without a GPU: a fallback status, not an error
    compiler = COMPILER

    def __init__(self, fault: str | None = None, device_outputs: bool = False):
        self.fault = fault
        self.device_outputs = device_outputs
        self.compiles_in_worker = not simulated()  # the simulator compiles nothing: load in the caller's thread

    @classmethod
    def problem(cls) -> str | None:
        """Why this target cannot run here (``cuda_problem``); None when it can."""
        return cuda_problem()

    @classmethod
    def start(
        cls,
        graph: Graph,
        kernels: Sequence[Kernel],
        status: CompileStatus,
        fastmath: bool,
        device_outputs: bool = False,
    ) -> Any:
        """Begin compiling ``graph``'s kernels (in the caller's thread under the simulator), reporting to
        ``status``; where CUDA cannot run, the status says why and the interpreter answers. ``fastmath`` is not
        used: the CUDA kernels are compiled without fast-math flags."""
        problem = cls.problem()
        if problem is not None:
            unavailable = _Unavailable()
            status.started(unavailable)
            status.failed(f"CUDA unavailable: {problem}")
            return unavailable
        status.adapter = CudaArguments()
        target = cls(inject_fault.current, device_outputs)
        return Compilation(target, graph, kernels, status, inline=not target.compiles_in_worker)

    def plan_units(self, graph: Graph, kernels: Sequence[Kernel]) -> list[Unit]:
        """The modules to build (``graph_units``)."""
        return graph_units(graph, kernels, self.fault)

    def warm_up(self) -> None:
        """numba-cuda is imported by ``problem()`` already."""
        from numba import cuda  # noqa: F401

    def load(self, module: Module) -> Any:
        """The module, its kernel bound from numba-cuda's disk cache (``load_module``)."""
        return load_module(module)

    def runner(self, units: list[Unit], plan: Plan, root: Any) -> CudaRunner:
        """A ``CudaRunner`` over the loaded modules."""
        return CudaRunner(units, plan, root, self.device_outputs)


__all__ = ["CudaTarget", "CudaRunner", "CudaArguments", "compile_in_worker", "graph_units", "inject_fault"]

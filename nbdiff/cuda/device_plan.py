"""``DevicePlan``: a rewritten graph run with its values resident on a CUDA device.

The interpreter's ``Plan`` numbers the storage slots, orders the steps and knows when each value dies; a device
plan keeps the same schedule but stores device arrays in the slots. Each step runs, in order of preference:

1. a fused elementwise kernel (``FusedElemwise`` nodes, and single elementwise nodes wrapped as one-member
   kernels) from ``nbdiff.cuda.source``; a trailing sum over some axes only runs as the kernel without it, then a
   device sum over those axes;
2. a registered op kernel (``nbdiff.cuda.op_kernels``);
3. otherwise, or when a kernel declines its inputs, the op's ``perform`` on the host: its inputs are copied to the
   host and its outputs back (``DeviceStats.host_steps`` counts such round trips, ``to_host``/``to_device`` the
   arrays copied), so the result is always the interpreter's.

Inputs may be host arrays (copied once) or device arrays (used in place); constants are uploaded once per plan.
Outputs come back as host arrays, or as device arrays with ``device_outputs=True``. Importing this module imports
``numba.cuda``: check ``nbdiff.cuda.cuda_problem()`` first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from numba import cuda

from nbdiff.backends.codegen import UnsupportedKernel, kernel_layout, structure_problem
from nbdiff.cuda.launch import launch_config
from nbdiff.cuda.library import DeviceArray, KernelLibrary, as_device_array, c_order, flat, is_device_array
from nbdiff.cuda.op_kernels import _stand_in, cuda_op_kernel, sum_axes
from nbdiff.cuda.source import cuda_module_source, module_name, without_reductions
from nbdiff.errors import ExecutionError, NbdiffError, ShapeError, node_error
from nbdiff.graph.basic import Apply
from nbdiff.graph.fgraph import Graph
from nbdiff.ops.elemwise import Elemwise
from nbdiff.ops.fused import FusedElemwise, Instruction
from nbdiff.ops.reduce import Sum
from nbdiff.runtime.interpreter import Plan

Runner = Callable[[Sequence[DeviceArray]], "tuple | None"]


@dataclass
class DeviceStats:
    """What a plan's runs moved between host and device, accumulated over runs (``reset`` to start again).

    ``host_steps``: steps that ran ``perform`` on the host (each a round trip); ``to_host`` / ``to_device``: arrays
    copied for them; ``inputs``: host inputs uploaded; ``outputs``: outputs copied back; ``kernel_steps``: steps run
    by device kernels."""

    host_steps: int = 0
    to_host: int = 0
    to_device: int = 0
    inputs: int = 0
    outputs: int = 0
    kernel_steps: int = 0

    def reset(self) -> None:
        """Zero every count."""
        self.__init__()  # type: ignore[misc]


def single_member_kernel(node: Apply) -> FusedElemwise:
    """An elementwise node that fusion left alone, as a one-member fused kernel (same calling convention)."""
    kinds = tuple((v.dtype, v.ndim) for v in node.inputs)
    n = len(kinds)
    program = (Instruction(node.op, tuple(range(n))),)
    return FusedElemwise(kinds, program, (n,), (None,), kernel_name=node.op.name)


class DevicePlan:
    """A graph scheduled like the interpreter's ``Plan``, run with device-resident values (module docstring)."""

    def __init__(self, graph: Graph, root: Path | None = None, library: KernelLibrary | None = None):
        self.graph = graph
        self.plan = Plan(graph)
        self.library = library or KernelLibrary(root)
        self.stats = DeviceStats()
        self._runners: dict[int, Runner | None] = {}
        self._constants: dict[int, DeviceArray] = {}

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, arrays: Sequence[Any], device_outputs: bool = False) -> list[Any]:
        """Evaluate the graph on ``arrays`` (host arrays of the inputs' dtypes, or device arrays); the outputs as
        host arrays, or device arrays when ``device_outputs``."""
        plan = self.plan
        storage: list[Any] = [None] * len(plan.template)
        for index, data in enumerate(plan.template):
            if data is not None:
                storage[index] = self._constant(index, data)
        for index, array in zip(plan.input_slots, arrays):
            storage[index] = self._input(array)
        for step in plan.steps:
            args = [storage[i] for i in step.inputs]
            results = self._run_step(step.node, args)
            del args
            for index, result in zip(step.outputs, results):
                storage[index] = result
            for index in step.free:
                storage[index] = None
        for node in self.library.raised_errors():
            raise node_error(
                ShapeError, node.op.name, "failed at run time: a class index is out of bounds", [], node.provenance
            )
        outputs = [storage[i] for i in plan.output_slots]
        if device_outputs:
            return outputs
        self.stats.outputs += len(outputs)
        return [np.asarray(out.copy_to_host()) for out in outputs]

    def _constant(self, index: int, data: np.ndarray) -> DeviceArray:
        """A constant's device copy, uploaded on first use."""
        device = self._constants.get(index)
        if device is None:
            device = self._constants[index] = self.library.upload(np.asarray(data))
        return device

    def _input(self, array: Any) -> DeviceArray:
        """An input as a C-contiguous device array: a device array as it is, a host array uploaded."""
        if is_device_array(array):
            device = as_device_array(array)
            if device.is_c_contiguous():
                return device
            array = device.copy_to_host()
            self.stats.to_host += 1
        self.stats.inputs += 1
        return cuda.to_device(c_order(array))

    def _run_step(self, node: Apply, args: list[DeviceArray]) -> tuple:
        """One node: its device runner where one exists and accepts these inputs, else the host's ``perform``."""
        runner = self._runner(node)
        try:
            results = runner(args) if runner is not None else None
        except NbdiffError:
            raise
        except Exception as exc:
            raise _step_error(node, args, exc) from exc
        if results is not None:
            self.stats.kernel_steps += 1
            return results
        return self._on_host(node, args)

    def _on_host(self, node: Apply, args: list[DeviceArray]) -> tuple:
        """``perform`` on host copies of the inputs, its outputs copied back (counted in ``stats``)."""
        self.stats.host_steps += 1
        self.stats.to_host += len(args)
        host = [np.asarray(a.copy_to_host()) for a in args]
        try:
            results = node.op.perform(*host)
        except NbdiffError:
            raise
        except Exception as exc:
            raise _step_error(node, host, exc) from exc
        self.stats.to_device += len(results)
        return tuple(cuda.to_device(c_order(r)) for r in results)

    # -- one step, for the agreement check ------------------------------------------------------------------------
    def runs_on_device(self, node: Apply) -> bool:
        """Whether ``node`` has a device runner (a fused or op kernel), i.e. is not a host ``perform`` step."""
        return self._runner(node) is not None

    def step_results(self, node: Apply, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``node`` run alone on the device on host ``arrays`` (uploaded), its outputs copied back: what the
        agreement check compares with ``perform``. A kernel's error flag raised on these inputs is cleared."""
        results = self._run_step(node, [cuda.to_device(c_order(a)) for a in arrays])
        self.library.raised_errors()
        return [np.asarray(r.copy_to_host()) for r in results]

    # -- runners -------------------------------------------------------------------------------------------------
    def _runner(self, node: Apply) -> Runner | None:
        """The device runner of ``node`` (built once), or None for the host fallback."""
        key = id(node)
        if key not in self._runners:
            self._runners[key] = self._build_runner(node)
        return self._runners[key]

    def _build_runner(self, node: Apply) -> Runner | None:
        op = node.op
        if isinstance(op, FusedElemwise):
            return self._fused_runner(op)
        if isinstance(op, Elemwise):
            fused = single_member_kernel(node)
            return self._fused_runner(fused)
        spec = cuda_op_kernel(node)
        if spec is None:
            return None
        library = self.library
        return lambda args: spec.run(library, args)

    def _fused_runner(self, op: FusedElemwise) -> Runner | None:
        """The runner of a fused kernel; None when no flat loop can run its structure."""
        kernel_op = device_kernel_op(op)
        if kernel_op is None:
            return None
        source = cuda_module_source(kernel_op)
        name = module_name(kernel_op)
        library = self.library

        def run(args: Sequence[DeviceArray]) -> tuple | None:
            if any(a.dtype.name != dtype for a, (dtype, _) in zip(args, op.input_kinds)):
                return None
            try:
                layout = kernel_layout(kernel_op, [tuple(a.shape) for a in args])
            except UnsupportedKernel:
                return None
            kernel = library.module(name, source).kernel
            call = [layout.size] + [
                _read_argument(library, args[r], layout.loop_shape, scalar, expand)
                for r, scalar, expand in zip(layout.read, layout.scalar, layout.expand)
            ]
            buffers = [
                library.full(1, dtype, 0) if reduced else library.empty(layout.size, dtype)
                for (dtype, _), reduced in zip(layout.outputs, layout.reduced)
            ]
            config = launch_config(layout.size)
            kernel[config.blocks, config.threads](*call, *buffers)
            results = [b.reshape(shape) for b, (_, shape) in zip(buffers, layout.outputs)]
            if kernel_op is not op:
                results = [_reduced(library, value, r) for value, r in zip(results, op.reductions)]
            return tuple(results)

        return run


def device_kernel_op(op: FusedElemwise) -> FusedElemwise | None:
    """The fused kernel the device launches for ``op``: ``op`` itself, or without its trailing sums over some axes
    (a device sum follows); None when no flat loop can run it."""
    if structure_problem(op) is None:
        return op
    if any(r is not None and not isinstance(r, Sum) for r in op.reductions):
        return None
    kernel_op = without_reductions(op)
    return kernel_op if structure_problem(kernel_op) is None else None


def _read_argument(library: KernelLibrary, array: DeviceArray, loop: tuple[int, ...], scalar: bool, expand: bool):
    """A fused kernel's input argument: 1 element (a size-1 input), the input expanded to the loop shape by a
    gather (broadcast along some axes), or the input itself, flat."""
    if scalar:
        return array.reshape(1)
    if expand:
        shape = tuple(array.shape)
        size = int(math.prod(loop))

        def build() -> np.ndarray:
            return np.broadcast_to(np.arange(int(math.prod(shape))).reshape(shape), loop)

        return library.gather(array, library.index_map(("expand", shape, loop), build), (size,))
    return flat(array)


def _reduced(library: KernelLibrary, value: DeviceArray, reduction: Sum | None) -> DeviceArray:
    """A fused output's trailing sum over some axes, on the device."""
    if reduction is None:
        return value
    (expected,) = reduction.perform(_stand_in(tuple(value.shape), value.dtype.name))
    return sum_axes(library, value, reduction.axes, expected.dtype.name, expected.shape)


def _step_error(node: Apply, args: Sequence[Any], exc: Exception) -> NbdiffError:
    """The interpreter's error for a failed step: the op, the inputs' shapes and dtypes, the user's line."""
    cls = ShapeError if isinstance(exc, (ValueError, IndexError)) else ExecutionError
    values = [np.broadcast_to(np.zeros((), a.dtype), a.shape) for a in args]
    return node_error(cls, node.op.name, f"failed at run time: {exc}", values, node.provenance)


__all__ = ["DevicePlan", "DeviceStats", "device_kernel_op", "single_member_kernel"]

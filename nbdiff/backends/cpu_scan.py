"""The CPU target's kernel for ``Scan``: the whole loop in one compiled kernel, where its body is elementwise.

A body whose every node is an elementwise op over 0-d and 1-d values (the Euler step ``y + dt * (-k * y +
sin(t))``, a cumulative product) becomes one plain Python function that Numba compiles like any op kernel: per
step, the 0-d values are computed once, then one loop over the ``n`` elements computes the 1-d values, writes the
per-step outputs into their stacks and the new carries into the carries' output buffers (each element's new values
are computed from its old ones before any is written). Per-element code is each op's ``scalar_code`` with typed
literals (``elemwise_expression``, as fused kernels use). Anything else (a matmul, a reduction, the run-time shape
checks of a gradient body) gets no kernel of its own.

Such a body (an RNN step: a matmul and a fused ``tanh``) is compiled the other way (``scan_bodies``): its graph is
rewritten with the whole pipeline, fusion included, its fused kernels and op kernels become units of the function
being compiled (``scan0.k0``, ...), and a ``ScanRunner`` runs the loop in Python with the body's plan calling those
compiled kernels each step. The agreement check compares that loop with the interpreter's, as it does any kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from nbdiff.backends.codegen import UnsupportedKernel
from nbdiff.backends.compilation import Unit
from nbdiff.backends.cpu_ops import Arguments, OpKernel, op_kernel, register
from nbdiff.graph.basic import Apply, Constant, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.ops.scan import Scan
from nbdiff.runtime.interpreter import Plan


@register(Scan)
def scan_kernel(node: Apply) -> OpKernel | None:
    """The op kernel of a Scan node whose rewritten body is elementwise over 0-d and 1-d values, else None."""
    op: Scan = node.op
    graph: Graph = op.plan().graph
    if _problem(graph) is not None:
        return None
    source = _source(op, graph)
    types = ["int64", "int64"] + [_array_type(v.dtype, v.ndim) for v in op.split(node.inputs)[1]]
    types += [_array_type(v.dtype, v.ndim) for v in op.split(node.inputs)[2]]
    types += [_array_type(v.dtype, v.ndim) for v in op.split(node.inputs)[3]]
    types += [_array_type(v.dtype, v.ndim) for v in node.outputs[: op.n_carry]]
    types += [_array_type(v.dtype, 2 if v.ndim == 2 else 1) for v in node.outputs[op.n_carry :]]
    return OpKernel("scan", source, tuple(types), lambda arrays: _arguments(op, arrays))


def _problem(graph: Graph) -> str | None:
    """Why the body cannot be one elementwise loop (None: it can)."""
    from nbdiff.ops.elemwise import Elemwise

    for var in [*graph.inputs, *graph.outputs]:
        if var.ndim > 1:
            return f"{var.label()} has {var.ndim} dimensions"
    for node in graph.nodes:
        if not isinstance(node.op, Elemwise) or not isinstance(getattr(node.op, "scalar_code", None), str):
            return f"{node.op.name} is not elementwise"
        dtypes = [v.dtype for v in node.inputs]
        if node.op.domain_check(dtypes, node.out.dtype) is not None:
            return f"{node.op.name} may refuse values"
        if node.out.ndim > 1 or any(isinstance(v, Constant) and v.ndim for v in node.inputs):
            return f"{node.op.name} is not over 0-d and 1-d values"
    if any(isinstance(v, Constant) and v.ndim for v in graph.outputs):
        return "an output is a constant array"
    return None


def _array_type(dtype: str, ndim: int) -> str:
    """Numba's type string for a C-contiguous array (0-d values travel as one-element 1-d arrays)."""
    from nbdiff.backends.cpu_source import numba_type_name

    return f"{numba_type_name(dtype)}[:, ::1]" if ndim == 2 else f"{numba_type_name(dtype)}[::1]"


def _source(op: Scan, graph: Graph) -> str:
    """The kernel's text: ``kernel(steps, n, *carries, *sequences, *invariants, *out_carries, *out_ys)``."""
    from nbdiff.backends.codegen import elemwise_expression, typed_literal

    n_c, n_s = op.n_carry, op.n_seq
    inputs = graph.inputs
    carries, slices, invariants = inputs[:n_c], inputs[n_c : n_c + n_s], inputs[n_c + n_s :]
    params = ["steps", "n", *(f"c{k}" for k in range(n_c)), *(f"x{k}" for k in range(n_s))]
    params += [f"v{k}" for k in range(len(invariants))]
    params += [f"oc{k}" for k in range(n_c)] + [f"oy{k}" for k in range(len(graph.outputs) - n_c)]
    names: dict[int, str] = {}
    before, scalar, vector, scalar_after, vector_after = [], [], [], [], []
    for k, var in enumerate(carries):
        names[id(var)] = f"c{k}_"
        if var.ndim:
            before.append(f"for i in range(n):\n        oc{k}[i] = c{k}[i]")
            vector.append(f"c{k}_ = oc{k}[i]")
        else:
            before.append(f"c{k}_ = c{k}[0]")
    for k, var in enumerate(slices):
        names[id(var)] = f"x{k}_"
        (vector if var.ndim else scalar).append(f"x{k}_ = x{k}[t, i]" if var.ndim else f"x{k}_ = x{k}[t]")
    for k, var in enumerate(invariants):
        names[id(var)] = f"v{k}_"
        (vector if var.ndim else before).append(f"v{k}_ = v{k}[i]" if var.ndim else f"v{k}_ = v{k}[0]")
    for j, node in enumerate(graph.nodes):
        args = [typed_literal(v.data.item(), v.dtype) if isinstance(v, Constant) else names[id(v)] for v in node.inputs]
        names[id(node.out)] = f"r{j}"
        line = f"r{j} = " + elemwise_expression(node.op, args, [v.dtype for v in node.inputs], node.out.dtype)
        (vector if node.out.ndim else scalar).append(line)
    for position, var in enumerate(graph.outputs):  # every new value is computed before any is written
        value = _output_name(var, names)
        if position < n_c:
            target = vector_after if var.ndim else scalar_after
            target.append(f"oc{position}[i] = {value}" if var.ndim else f"n{position}_ = {value}")
        else:
            k = position - n_c
            (vector_after if var.ndim else scalar_after).append(
                f"oy{k}[t, i] = {value}" if var.ndim else f"oy{k}[t] = {value}"
            )
    scalar_after += [f"c{k}_ = n{k}_" for k, var in enumerate(graph.outputs[:n_c]) if not var.ndim]
    after = [f"oc{k}[0] = c{k}_" for k, var in enumerate(carries) if not var.ndim]
    step = "steps - 1 - s" if op.reverse else "s"
    lines = [f"def kernel({', '.join(params)}):"]
    lines += [f"    {line}" for line in before]
    lines += ["    for s in range(steps):", f"        t = {step}"]
    lines += [f"        {line}" for line in scalar]
    if vector or vector_after:
        lines += ["        for i in range(n):"] + [f"            {line}" for line in vector + vector_after]
    lines += [f"        {line}" for line in scalar_after]
    lines += [f"    {line}" for line in after]
    return "\n".join(lines) + "\n"


def _output_name(var: Variable, names: dict[int, str]) -> str:
    """A body output's value in the kernel: its name, or a constant's literal."""
    if isinstance(var, Constant):
        from nbdiff.backends.codegen import typed_literal

        return typed_literal(var.data.item(), var.dtype)
    return names[id(var)]


def _arguments(op: Scan, arrays: Sequence[np.ndarray]) -> Arguments | None:
    """The kernel's arguments and a function returning the op's outputs; None where the loop does not fit (no step,
    sequences of different lengths, 1-d values of different lengths): ``perform`` runs (and raises) then."""
    from nbdiff.ops.scan import run_length

    length, carries, seqs, invariants = op.split(arrays)
    try:
        steps = run_length(length, seqs)
    except ValueError:
        return None
    sizes = {c.shape[0] for c in carries if c.ndim} | {s.shape[1] for s in seqs if s.ndim == 2}
    sizes |= {v.shape[0] for v in invariants if v.ndim}
    if steps == 0 or len(sizes) > 1:
        return None
    n = sizes.pop() if sizes else 1
    flat = [_plain(a).reshape(-1) for a in (*carries, *invariants)]
    sequences = [_plain(s) for s in seqs]
    out_carries = [np.empty(max(c.size, 1) if c.ndim else 1, c.dtype) for c in carries]
    out_ys = [np.empty((steps, n) if y.ndim else (steps,), y.dtype) for y in op.plan().graph.outputs[op.n_carry :]]
    args = [np.int64(steps), np.int64(n), *flat[: len(carries)], *sequences, *flat[len(carries) :]]

    def finish() -> tuple[np.ndarray, ...]:
        shaped = [out.reshape(c.shape) for out, c in zip(out_carries, carries)]
        return (*shaped, *out_ys)

    return [*args, *out_carries, *out_ys], finish


def _plain(array: np.ndarray) -> np.ndarray:
    """``array`` as the kernel's signature takes it: C-contiguous and writeable (constants are read-only arrays,
    which Numba types apart), copied only where it is not."""
    if array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, order="C")


# ---------------------------------------------------------------------------------------------------------------
# Bodies without a whole-loop kernel: their kernels compiled, the loop run in Python
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ScanBody:
    """A Scan node whose loop has no kernel of its own: its body rewritten with fusion, the units of the body's
    kernels, and ``loop``, the unit the status panel shows for the loop (no module: it is ready when they are)."""

    node: Apply
    graph: Graph
    units: list[Unit]
    loop: Unit


def scan_bodies(graph: Graph, plan_units: Callable[[Graph, Sequence[Any]], list[Unit]]) -> list[ScanBody]:
    """For each Scan node of ``graph`` without a whole-loop kernel whose body has something to compile: its body,
    rewritten by the default pipeline, and the units ``plan_units(body_graph, body_kernels)`` gives for it (renamed
    ``scan<i>.<unit>`` so the status panel tells them from the function's own)."""
    from nbdiff.rewrite.fusion import kernels_of
    from nbdiff.rewrite.pipeline import run_pipeline, select_passes

    bodies = []
    for node in graph.nodes:
        if not isinstance(node.op, Scan) or op_kernel(node) is not None:
            continue
        body, _ = run_pipeline(node.op.body, select_passes(True))
        units = plan_units(body, kernels_of(body))
        if not units:
            continue  # NumPy runs every op of the body: the interpreter's loop is as good
        name = f"scan{len(bodies)}"
        for unit in units:
            unit.name = f"{name}.{unit.name}"
        bodies.append(ScanBody(node, body, units, Unit(name, [], node=node)))
    return bodies


class ScanRunner:
    """Runs a Scan node's loop in Python with its body's plan calling the body's compiled kernels (the plan step's
    ``perform``); checked against the interpreter's loop like a kernel with one variant."""

    precision = None  # the outputs' own tolerance
    modules = ("loop",)  # one variant: the loop with the compiled body

    def __init__(self, op: Scan, body: Plan):
        self.op, self.body = op, body

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.op.loop(self.body.run, arrays)

    def compiled(self, *arrays: np.ndarray, variant: int | None = None) -> tuple[np.ndarray, ...]:
        return self(*arrays)

    def sum_scales(self, inputs: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> list[float | None]:
        return [None] * len(expected)

    def call_arguments(self, inputs: Sequence[np.ndarray], variant: int) -> tuple[list, list[int]]:
        raise UnsupportedKernel("a loop over compiled kernels has no single module to replay")

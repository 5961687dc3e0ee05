"""The Numba CPU module for a fused kernel, and the helper that calls it as the interpreter would be called.

``cpu_module_source(op, parallel=..., fastmath=..., math=...)`` is the complete text of a Python module defining
``kernel``, a ``numba.njit(cache=True, ...)`` function looping over the flat index ``i`` of the kernel's loop shape
(``numba.prange`` when parallel) around the scalar body of ``nbdiff.backends.codegen``. The text depends only on the
kernel's structure and the three options (``module_name`` names it by ``op.structural_hash()`` and them), so a
module written once is reused, with Numba's disk cache, for every kernel of that structure whatever its constants'
values. Under ``math="nbdiff"`` (the default) the scalar body calls the vectorisable functions of
``nbdiff.backends.vmath``, whose text the module then contains, and a serial loop's trailing sums add with
``bits.accumulate`` (reassociable), so LLVM vectorises the loop. A parallel module with sums runs ``prange`` over
blocks of ``SUM_BLOCK`` elements, each block a serial (vectorised) loop with its own accumulators, and adds the
blocks' partial sums at the end: a ``prange`` reduction's ``+=`` would keep the loop scalar.

The calling convention (``run_compiled`` implements it) is written into each module's docstring:
``CALLING_CONVENTION`` below.
"""

from __future__ import annotations

import hashlib
from types import ModuleType
from typing import Sequence

import numpy as np

from nbdiff.backends.codegen import (
    DOMAIN_ERROR,
    Layout,
    UnsupportedKernel,
    domain_checks,
    dtype_constructor,
    kernel_layout,
    module_definitions,
    output_dtypes,
    read_inputs,
    scalar_body,
    structure_problem,
    value_name,
)
from nbdiff.backends.cpu_ops import OpKernel
from nbdiff.backends.vmath import ACCUMULATE
from nbdiff.ops.fused import FusedElemwise

SUM_BLOCK = 8192  # elements per parallel block of a kernel with sums: enough for vector loops, 13+ blocks at 1e5

MODULE_IMPORTS = ("import math", "", "import numba", "import numpy as np")  # what every generated module imports
GENERATOR_VERSION = 6  # part of every module's name: a changed generator never reuses an old module or its cache
# ``fastmath=True`` enables these LLVM flags: everything but "nnan" and "ninf", so NaN and infinity keep their
# meaning (maximum, minimum and clip propagate NaN as NumPy does; ``x != x`` is not folded away).
FASTMATH_FLAGS = ("afn", "arcp", "contract", "nsz", "reassoc")

CALLING_CONVENTION = """\
Calling convention: kernel(n, <inputs>, <outputs>)
- n: the number of elements of the loop shape (the shape every member's result has).
- inputs: each input the loop reads, in input order (parameters in<r>, r = the fused node's input position),
  either as a 1-D contiguous array of n elements (the caller ravels a full-shape input in C order, after
  expanding an input broadcast along some axes to the loop shape) or as a scalar value of the input's dtype (a
  size-1 input: a constant, a broadcast scalar). Numba compiles one
  specialisation per combination. Inputs the loop does not read (a fill's shape source) are not passed.
- outputs, in output order, preallocated by the caller: out<j>, a 1-D array of n elements of the output's dtype,
  for an elementwise result; sum<j>, a 1-element array of the sum's dtype, for a result reduced by a trailing
  Sum over all axes (float32 sums accumulate in float64). The caller reshapes them to the interpreter's shapes.
A kernel with members that NumPy refuses some values of (``codegen.domain_checks``: integer power with a negative
exponent) raises ValueError after its loop when any element had such values; its outputs are then meaningless
and the caller runs the interpreter's perform, which raises the interpreter's error.
Kernels with a trailing sum over some axes only do not fit this layout: nbdiff.backends.codegen.supports() says
so and the interpreter runs them."""


def module_name(op: FusedElemwise, *, parallel: bool, fastmath: bool, math: str = "nbdiff") -> str:
    """The module's name: the kernel's structural hash, the flags, the math library and the generator version."""
    flags = ("par" if parallel else "ser") + ("_fm" if fastmath else "") + ("_libm" if math == "libm" else "")
    return f"nbdiff_kernel_{op.structural_hash()}_{flags}_v{GENERATOR_VERSION}"


def cpu_module_source(op: FusedElemwise, *, parallel: bool, fastmath: bool, math: str = "nbdiff") -> str:
    """The complete text of the Numba module computing ``op`` (raises ``UnsupportedKernel`` for a structure no
    flat loop can run, e.g. a trailing sum over some axes only)."""
    problem = structure_problem(op)
    if problem is not None:
        raise UnsupportedKernel(f"fused kernel {op.kernel_name}: {problem}")
    return "\n".join(_header(op, parallel, fastmath, math) + _kernel_lines(op, parallel, fastmath, math)) + "\n"


def accumulates(op: FusedElemwise, math: str, dtype: str | None = None) -> bool:
    """Whether the kernel's float sums (the one of output ``dtype``, or any) add with ``vmath.ACCUMULATE``: under
    ``math="nbdiff"``, in the serial loop or each parallel block's (integer sums vectorise as they are: their adds
    are associative)."""
    if math != "nbdiff":
        return False
    dtypes = output_dtypes(op)
    floats = [d for d, r in zip(dtypes, op.reductions) if r is not None and d.startswith("float")]
    return bool(floats) if dtype is None else dtype in floats


def _header(op: FusedElemwise, parallel: bool, fastmath: bool, math: str) -> list[str]:
    """The docstring (structure and calling convention), the imports and the input accessor ``_at``."""
    structure = "\n".join("    " + line for line in op.canonical_text().splitlines())
    return [
        f'"""Fused kernel {op.structural_hash()} (parallel={parallel}, fastmath={fastmath}, math={math}), generated by',
        f"nbdiff.backends.cpu_source version {GENERATOR_VERSION}: do not edit.",
        "",
        "Structure:",
        structure,
        "",
        CALLING_CONVENTION,
        '"""',
        "",
        *MODULE_IMPORTS,
        "from numba import types",
        "from numba.extending import overload",
        "",
        "",
        "def _at(a, i):",
        '    """Element i of a kernel input: a 1-D array\'s element, or the scalar itself."""',
        "    return a[i] if isinstance(a, np.ndarray) else a",
        "",
        "",
        "@overload(_at)",
        "def _at_compiled(a, i):",
        '    """The compiled _at, chosen by the argument\'s type: one source serves arrays and scalars."""',
        "    if isinstance(a, types.Array):",
        "        return lambda a, i: a[i]",
        "    return lambda a, i: a",
        "",
        "",
        *module_definitions([op], math, [ACCUMULATE] if accumulates(op, math) else [], fastmath),
    ]


def _kernel_lines(op: FusedElemwise, parallel: bool, fastmath: bool, math: str) -> list[str]:
    """The decorated ``kernel``: accumulators, the loop (loads, body, stores), then the sums' stores."""
    n = op.n_inputs
    dtypes = output_dtypes(op)
    sums = {j: (dtypes[j], _accumulator_dtype(dtypes[j])) for j, r in enumerate(op.reductions) if r is not None}
    inputs = [f"in{r}" for r in read_inputs(op)]
    outputs = [f"out{j}" if reduction is None else f"sum{j}" for j, reduction in enumerate(op.reductions)]
    flags = "{" + ", ".join(f'"{flag}"' for flag in FASTMATH_FLAGS) + "}" if fastmath else "False"
    checks = domain_checks(op, math)
    blocked = parallel and bool(sums)
    lines = [
        f'@numba.njit(cache=True, parallel={parallel}, fastmath={flags}, error_model="numpy")',
        f"def kernel({', '.join(['n'] + inputs + outputs)}):",
    ]
    counters = [f"acc{j} = {dtype_constructor(accumulator)}(0)" for j, (_, accumulator) in sums.items()]
    counters += ["outside = np.int64(0)"] if checks else []
    if blocked:  # each block's sums in a serial inner loop, which vectorises; then the blocks' partial sums
        lines.append(f"    blocks = (n + {SUM_BLOCK - 1}) // {SUM_BLOCK}")
        lines += [f"    part{j} = np.zeros(blocks, {dtype_constructor(a)})" for j, (_, a) in sums.items()]
        lines += ["    outside_blocks = np.zeros(blocks, np.int64)"] if checks else []
        lines.append("    for b in numba.prange(blocks):")
        lines += ["        " + line for line in counters]
        lines.append(f"        for i in range(b * {SUM_BLOCK}, min(n, (b + 1) * {SUM_BLOCK})):")
    else:
        lines += ["    " + line for line in counters]
        lines.append(f"    for i in {'numba.prange' if parallel else 'range'}(n):")
    indent = "            " if blocked else "        "
    loop: list[str] = [f"{value_name(r, n)} = _at(in{r}, i)" for r in read_inputs(op)]
    loop += scalar_body(op, math)
    if checks:  # counted, not raised in the loop: a raise inside prange would make the loop serial
        loop.append(f"outside += np.int64({' or '.join(checks)})")
    for j, (ref, reduction) in enumerate(zip(op.results, op.reductions)):
        if reduction is None:
            loop.append(f"out{j}[i] = {value_name(ref, n)}")
        else:
            value = f"{dtype_constructor(sums[j][1])}({value_name(ref, n)})"
            loop.append(_accumulation(j, value, accumulates(op, math, dtypes[j])))
    lines += [indent + line for line in loop]
    total, outside = ("part{}.sum()", "outside_blocks.sum()") if blocked else ("acc{}", "outside")
    if blocked:
        lines += [f"        part{j}[b] = acc{j}" for j in sums]
        lines += ["        outside_blocks[b] = outside"] if checks else []
    lines += [f"    sum{j}[0] = {dtype_constructor(dtype)}({total.format(j)})" for j, (dtype, _) in sums.items()]
    if checks:
        lines += [f"    if {outside}:", f"        raise ValueError({DOMAIN_ERROR!r})"]
    return lines


def _accumulation(j: int, value: str, reassociable: bool) -> str:
    """The loop statement adding ``value`` to sum ``j``: with ``accumulate`` where ``reassociable``."""
    if reassociable:
        return f"acc{j} = {ACCUMULATE}(acc{j}, {value})"
    return f"acc{j} += {value}"


def _accumulator_dtype(dtype: str) -> str:
    """The dtype a trailing sum of ``dtype`` accumulates in: its own, float64 for float32 (NumPy's pairwise
    float32 sums are far more accurate than a float32 running sum; a float64 one stays close to them)."""
    return "float64" if dtype == "float32" else dtype


# ---------------------------------------------------------------------------------------------------------------
# Compiled ops (``nbdiff.backends.cpu_ops``)
# ---------------------------------------------------------------------------------------------------------------
def op_module_name(spec: OpKernel) -> str:
    """The module of an op's kernel: named by the op, a hash of its text and types, and the generator version."""
    digest = hashlib.sha1((spec.source + spec.signature).encode()).hexdigest()[:16]
    return f"nbdiff_op_{spec.name}_{digest}_v{GENERATOR_VERSION}"


def op_module_source(spec: OpKernel) -> str:
    """The complete text of the Numba module of an op's kernel: its source under ``numba.njit``."""
    return "\n".join(
        [
            f'"""Kernel of the op {spec.name}, generated by nbdiff.backends.cpu_source version {GENERATOR_VERSION}:',
            f"do not edit. Compiled for {spec.signature}; the op's perform is the reference it must agree with.",
            '"""',
            "",
            *MODULE_IMPORTS,
            "",
            "",
            '@numba.njit(cache=True, error_model="numpy")',
            spec.source.rstrip("\n"),
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# Signatures and calls
# ---------------------------------------------------------------------------------------------------------------
def numba_type_name(dtype: str) -> str:
    """The Numba name of a NumPy dtype in signature strings (``boolean`` for bool, else the dtype's own name)."""
    return "boolean" if dtype == "bool" else dtype


def kernel_signature(op: FusedElemwise, scalar_inputs: Sequence[int]) -> str:
    """The Numba argument signature of ``kernel`` when the inputs at positions ``scalar_inputs`` (fused-node input
    positions) are passed as scalars and the other read inputs as flat arrays: ``(int64, float64[::1], ...)``."""
    kinds = op.input_kinds
    args = ["int64"]
    for r in read_inputs(op):
        name = numba_type_name(kinds[r][0])
        args.append(name if r in scalar_inputs else f"{name}[::1]")
    args += [f"{numba_type_name(dtype)}[::1]" for dtype in output_dtypes(op)]
    return "(" + ", ".join(args) + ")"


def kernel_arguments(op: FusedElemwise, arrays: Sequence[np.ndarray]) -> tuple[Layout, list[object]]:
    """The layout for these inputs and the kernel's arguments by the calling convention, output buffers last
    (``UnsupportedKernel`` when the shapes do not fit a flat loop). ``arrays`` must have the kernel's dtypes."""
    layout = kernel_layout(op, [a.shape for a in arrays])
    return layout, ArgumentRecipe(layout).arguments(arrays)


class ArgumentRecipe:
    """How to turn input arrays of one set of shapes into a kernel's arguments, worked out once per layout: a
    compiled call of a small kernel costs a few microseconds, and re-deriving this per call cost as much again."""

    SCALAR, EXPAND, FLAT = 0, 1, 2

    def __init__(self, layout: Layout):
        self.layout = layout
        self.size = layout.size
        self.reads = [
            (r, self.SCALAR if scalar else self.EXPAND if expand else self.FLAT)
            for r, scalar, expand in zip(layout.read, layout.scalar, layout.expand)
        ]
        self.buffers = [
            (np.dtype(dtype), 1 if reduced else layout.size)
            for (dtype, _), reduced in zip(layout.outputs, layout.reduced)
        ]

    def shaped(self, args: Sequence[object]) -> tuple[np.ndarray, ...]:
        """The output buffers of a call with these arguments, reshaped to the interpreter's shapes."""
        return shaped_outputs(self.layout, args)

    def arguments(self, arrays: Sequence[np.ndarray]) -> list[object]:
        """The kernel's arguments for ``arrays`` (of this recipe's shapes), output buffers last."""
        args: list[object] = [self.size]
        for r, kind in self.reads:
            array = arrays[r]
            if kind == self.FLAT:
                args.append(np.ascontiguousarray(array).reshape(-1))
            elif kind == self.SCALAR:
                args.append(array.reshape(())[()])
            else:  # broadcast along some axes: one copy at the loop's shape (reshaping the view copies)
                args.append(np.broadcast_to(array, self.layout.loop_shape).reshape(-1))
        args += [np.empty(size, dtype=dtype) for dtype, size in self.buffers]
        return args


def shaped_outputs(layout: Layout, args: Sequence[object]) -> tuple[np.ndarray, ...]:
    """The output buffers (the last arguments of a call) reshaped to the interpreter's shapes."""
    buffers = args[len(args) - len(layout.outputs) :]
    return tuple(buffer.reshape(shape) for buffer, (_, shape) in zip(buffers, layout.outputs))  # type: ignore[union-attr]


def run_compiled(op: FusedElemwise, module: ModuleType, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """``op.perform(*arrays)`` computed by ``module.kernel`` (a module of ``cpu_module_source(op)``): arguments
    prepared by the calling convention, outputs with exactly the interpreter's dtypes and shapes.

    Raises ``UnsupportedKernel`` when the inputs' dtypes differ from the kernel's or their shapes do not fit the
    layout (check ``supports`` first, and use the interpreter then)."""
    arrays = [np.asarray(a) for a in arrays]
    for r, (array, (dtype, _)) in enumerate(zip(arrays, op.input_kinds)):
        if array.dtype.name != dtype:
            raise UnsupportedKernel(f"fused kernel {op.kernel_name}: input {r} is {array.dtype.name}, not {dtype}")
    layout, args = kernel_arguments(op, arrays)
    module.kernel(*args)
    return shaped_outputs(layout, args)

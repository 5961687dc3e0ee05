"""The whole plan of an array function as one Numba entry point: one compiled call per function call.

Calling compiled code from Python costs microseconds per kernel (preparing its arrays, Numba's dispatch, NumPy
steps between kernels), which is most of a call on 1e3 elements. Where every step of a function's plan has a
compiled form here (``STEP_FORMS``: fused kernels, matmul through ``np.dot``, matrix transposes, whole sums,
reduced sizes, reshapes that are views, ``sum_to_like`` that sums nothing), ``program_source`` writes one module
whose ``entry`` runs them all in graph order:

    entry(<inputs>, <constants>, p, <buffers>, <outputs>)

- inputs and constants: C-contiguous arrays of the graph's dtypes and ranks (constants are arguments, so an edited
  constant does not recompile; the module's name is the hash of its text, which depends only on the structure);
- ``p``: int64 parameters the code reads that depend on the input shapes (loop sizes, reshaped dimensions, counts);
- buffers: one C-contiguous array per intermediate value a step writes, allocated once per input-shape signature
  and reused across calls (never returned);
- outputs: one fresh array per graph output per call, written by the step that computes it (the caller keeps it).

What the code assumes about shapes (a fused input read as one value or element by element, a loop below the
parallel threshold, a ``sum_to_like`` with nothing to sum) is checked per input-shape signature by ``frame_for``,
which works out the parameters and buffers for that signature, or says why the entry point does not fit it (the
runner then takes the mixed plan, ``cpu.CompiledPlan``). A fused loop whose values leave an op's domain raises
``ValueError`` after the loop, as the kernels do, and the runner lets the plan raise the interpreter's error.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np

from nbdiff.backends import (
    cpu_row_ops,  # noqa: F401  (registers the row-wise op kernels with cpu_ops)
    numpy_blas,
)
from nbdiff.backends.codegen import (
    DOMAIN_ERROR,
    FULL,
    SCALAR,
    RowsForm,
    UnsupportedKernel,
    domain_checks,
    dtype_constructor,
    kernel_layout,
    module_definitions,
    output_dtypes,
    read_inputs,
    rows_layout,
    scalar_body,
    structure_problem,
    value_name,
)
from nbdiff.backends.cpu_ops import op_kernel
from nbdiff.backends.cpu_rows import kernel_form, rows_function
from nbdiff.backends.cpu_source import FASTMATH_FLAGS, GENERATOR_VERSION, MODULE_IMPORTS, accumulates, numba_type_name
from nbdiff.backends.vmath import ACCUMULATE
from nbdiff.graph.basic import Apply, Constant, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.types import TensorType, is_float
from nbdiff.ops.broadcast import SumToLike
from nbdiff.ops.elemwise import Elemwise
from nbdiff.ops.fused import FusedElemwise, Instruction, member_kind
from nbdiff.ops.linalg import MatMul, MatrixTranspose
from nbdiff.ops.reduce import ReducedSize, Sum
from nbdiff.ops.shape import ExpandDims, Reshape, Squeeze, Transpose

FRAME_BYTES = 32 << 20  # the most a signature's reused buffers may hold (a large call gains nothing from them)
# A check on one input-shape signature: the shapes of every value (by id) -> why the code does not fit, or None.
Check = Callable[[dict[int, tuple[int, ...]]], str | None]
# A parameter's value for one signature, from the shapes of every value (by id).
Parameter = Callable[[dict[int, tuple[int, ...]]], int]


@dataclass
class Program:
    """The entry point's module text and what running it needs: argument order, parameters, per-signature checks."""

    name: str = ""
    source: str = ""
    signature: str = ""
    inputs: tuple[Variable, ...] = ()
    constants: tuple[Constant, ...] = ()
    buffers: list[Variable] = field(default_factory=list)  # intermediates a step writes, in argument order
    outputs: list[Variable] = field(default_factory=list)  # distinct graph outputs, in argument order
    parameters: list[Parameter] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    nodes: tuple[Apply, ...] = ()
    names: dict[int, str] = field(default_factory=dict)  # value id -> its name in the entry's code
    layouts: dict[int, str] = field(default_factory=dict)  # value id -> "C" or "F" (views of C arrays)
    math: str = "nbdiff"  # the fused loops' math library (``vmath`` or libm), as in ``cpu_source``
    fused: list[FusedElemwise] = field(default_factory=list)  # every loop's kernel (a lone elementwise node's too)
    blas: set[str] = field(default_factory=set)  # dtypes of the products computed by NumPy's BLAS (``numpy_blas``)

    def parameter(self, value: Parameter) -> str:
        """The code reading a new parameter."""
        self.parameters.append(value)
        return f"p[{len(self.parameters) - 1}]"


@dataclass(frozen=True)
class Frame:
    """What calls with one input-shape signature pass after the inputs and constants: the parameters and the
    reused buffers; and the (shape, dtype) of each output the caller allocates per call."""

    tail: tuple[np.ndarray, ...]
    outputs: tuple[tuple[tuple[int, ...], np.dtype], ...]


# ---------------------------------------------------------------------------------------------------------------
# Which graphs: every step has a form
# ---------------------------------------------------------------------------------------------------------------
def program_source(graph: Graph, *, fastmath: bool, parallel_threshold: int, math: str = "nbdiff") -> Program:
    """The entry-point module of ``graph`` (``UnsupportedKernel`` naming the first step without a compiled form)."""
    flags = "{" + ", ".join(f'"{flag}"' for flag in FASTMATH_FLAGS) + "}" if fastmath else "False"
    program = Program(inputs=tuple(graph.inputs), constants=tuple(graph.constants), nodes=tuple(graph.nodes), math=math)
    for position, var in enumerate(graph.inputs):
        _bind(program, var, f"in{position}", "C")
    for position, constant in enumerate(program.constants):
        _bind(program, constant, f"c{position}", "C")
    outputs = {id(v): v for v in graph.outputs}
    program.outputs = list(outputs.values())
    for var in program.outputs:
        if id(var) in program.names:
            raise UnsupportedKernel(f"output {var.label()} is an input or constant, which no step writes")
    functions: list[str] = []
    body: list[str] = []
    for k, node in enumerate(graph.nodes):
        form = STEP_FORMS.get(Elemwise if isinstance(node.op, Elemwise) else type(node.op))
        if form is None and op_kernel(node) is not None:
            form = OP_KERNEL_FORM
        if form is None:
            raise UnsupportedKernel(f"{node.op.name} has no compiled form in a whole-plan entry point")
        for var in node.outputs:
            if form.writes:
                _bind_written(program, var, outputs)
        body += form.emit(program, node, k, functions, flags, parallel_threshold)
    for var in program.outputs:
        if not program.names.get(id(var), "").startswith("o"):
            raise UnsupportedKernel(f"output {var.label()} is a view or alias, which no step writes")
    parameters = (
        [f"in{p}" for p in range(len(program.inputs))]
        + [f"c{p}" for p in range(len(program.constants))]
        + ["p"]
        + [program.names[id(v)] for v in program.buffers]
        + [program.names[id(v)] for v in program.outputs]
    )
    entry = [
        f'@numba.njit(cache=True, fastmath={flags}, error_model="numpy")',
        f"def entry({', '.join(parameters)}):",
        *body,
        "    return None",
    ]
    extra = [ACCUMULATE] if any(accumulates(op, math) for op in program.fused) else []
    definitions = module_definitions(program.fused, math, extra, fastmath)  # what the loops call
    blas = numpy_blas.module_lines(program.blas)
    code = "\n".join([*MODULE_IMPORTS, "", ""] + definitions + blas + functions + entry) + "\n"
    digest = hashlib.sha256(code.encode()).hexdigest()[:20]
    program.name = f"nbdiff_program_{digest}_v{GENERATOR_VERSION}"
    header = f'"""Whole-plan entry point {digest}, generated by nbdiff.backends.cpu_program: do not edit."""\n\n'
    program.source = header + code
    arrays = [*program.inputs, *program.constants]
    types = [_array_type(v.dtype, v.ndim) for v in arrays] + ["int64[::1]"]
    types += [_array_type(v.dtype, v.ndim) for v in program.buffers + program.outputs]
    program.signature = "(" + ", ".join(types) + ")"
    return program


def _bind(program: Program, var: Variable, name: str, layout: str) -> None:
    program.names[id(var)] = name
    program.layouts[id(var)] = layout


def _bind_written(program: Program, var: Variable, outputs: dict[int, Variable]) -> None:
    """A value a step writes: an output array (``o<j>``) or a reused buffer (``b<j>``)."""
    if id(var) in outputs:
        _bind(program, var, f"o{list(outputs).index(id(var))}", "C")
    else:
        _bind(program, var, f"b{len(program.buffers)}", "C")
        program.buffers.append(var)


def _array_type(dtype: str, ndim: int) -> str:
    """Numba's type string of a C-contiguous array: ``float64[:, ::1]``, ``float64[::1]``, and for a 0-d array
    ``Array(float64, 0, 'C')`` (signature strings are read in ``numba.types``' namespace)."""
    if ndim == 0:
        return f"Array({numba_type_name(dtype)}, 0, 'C')"
    return f"{numba_type_name(dtype)}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


# ---------------------------------------------------------------------------------------------------------------
# The steps' compiled forms
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepForm:
    """How one op runs inside the entry point: ``writes`` (its outputs are arrays it fills: buffers or outputs)
    or not (its output is a view or an alias of its input), and ``emit(program, node, k, functions, flags,
    threshold)``, which returns the entry's lines (and may add module-level functions and per-signature checks),
    raising ``UnsupportedKernel`` for a node it cannot run."""

    writes: bool
    emit: Callable[..., list[str]]


def _emit_fused(program: Program, node: Apply, k: int, functions: list[str], flags: str, threshold: int) -> list[str]:
    """A fused kernel: a module-level loop function ``loop<k>`` (serial: loops from ``threshold`` elements take
    the mixed plan's parallel module instead, see ``frame_for``), called with flat views of its arrays."""
    op: FusedElemwise = node.op  # type: ignore[assignment]
    form = kernel_form(op, [tuple(v.type.shape) for v in node.inputs])
    if form is not None:
        return _emit_rows(program, node, k, functions, flags, threshold, form)
    problem = structure_problem(op)
    if problem is not None:
        raise UnsupportedKernel(f"fused kernel {op.kernel_name}: {problem}")
    scalars = tuple(r for r in read_inputs(op) if _static_size_one(node.inputs[r]))
    functions += _loop_function(op, f"loop{k}", flags, scalars, program.math)
    program.fused.append(op)
    inputs = [node.inputs[r] for r in range(op.n_inputs)]

    def check(shapes: dict[int, tuple[int, ...]]) -> str | None:
        try:
            layout = kernel_layout(op, [shapes[id(v)] for v in inputs])
        except UnsupportedKernel as exc:
            return str(exc)
        if layout.size >= threshold:
            return f"kernel {op.kernel_name} loops over {layout.size} elements: its parallel module runs it"
        for r, scalar, expand in zip(layout.read, layout.scalar, layout.expand):
            if expand or scalar != (r in scalars):
                return f"kernel {op.kernel_name} reads input {r} broadcast at these shapes"
        return None

    program.checks.append(check)
    size = program.parameter(lambda shapes: kernel_layout(op, [shapes[id(v)] for v in inputs]).size)
    arguments = [size]
    for r in read_inputs(op):
        name = _contiguous(program, inputs[r])
        arguments.append(f"{name}.ravel()[0]" if r in scalars else f"{name}.ravel()")
    arguments += [f"{program.names[id(v)]}.ravel()" for v in node.outputs]
    return [f"    loop{k}({', '.join(arguments)})"]


def _emit_rows(
    program: Program, node: Apply, k: int, functions: list[str], flags: str, threshold: int, form: RowsForm
) -> list[str]:
    """A fused kernel in the rows form (``cpu_rows``): a module-level loop ``loop<k>(n_outer, n_inner, ...)``, its
    full inputs and elementwise outputs as 2-D views, columns, rows and sums flat, scalars as values."""
    op: FusedElemwise = node.op  # type: ignore[assignment]
    functions += rows_function(op, form, f"loop{k}", False, flags, program.math)
    program.fused.append(op)
    inputs = [node.inputs[r] for r in range(op.n_inputs)]

    def layout(shapes: dict[int, tuple[int, ...]]) -> object:
        return rows_layout(op, form, [shapes[id(v)] for v in inputs])

    def check(shapes: dict[int, tuple[int, ...]]) -> str | None:
        found = layout(shapes)
        if isinstance(found, str):
            return f"kernel {op.kernel_name}: {found}"
        if found.size >= threshold:  # type: ignore[attr-defined]
            return f"kernel {op.kernel_name} loops over {found.size} elements: its parallel module runs it"  # type: ignore[attr-defined]
        return None

    program.checks.append(check)
    outer = program.parameter(lambda shapes: layout(shapes).n_outer)  # type: ignore[attr-defined]
    inner = program.parameter(lambda shapes: layout(shapes).n_inner)  # type: ignore[attr-defined]
    rows = f"({outer}, {inner})"
    arguments = [outer, inner]
    for r, kind in form.reads:
        name = _contiguous(program, inputs[r])
        if kind == SCALAR:
            arguments.append(f"{name}.ravel()[0]")
        else:
            arguments.append(f"{name}.reshape({rows})" if kind == FULL else f"{name}.ravel()")
    for var, kind in zip(node.outputs, form.sums):
        name = program.names[id(var)]
        arguments.append(f"{name}.reshape({rows})" if kind is None else f"{name}.ravel()")
    return [f"    loop{k}({', '.join(arguments)})"]


def _emit_op_kernel(program: Program, node: Apply, k: int, functions: list[str], *_: object) -> list[str]:
    """An op with a CPU kernel of its own (``cpu_ops``) that has an entry form: its kernel as a module-level
    function ``op<k>``, called with the arguments its ``entry`` spells; ``fits`` checked per signature."""
    spec = op_kernel(node)
    if spec is None or spec.entry is None:
        raise UnsupportedKernel(f"{node.op.name} has no compiled form in a whole-plan entry point")
    functions += ['@numba.njit(cache=True, error_model="numpy")', spec.source.replace("def kernel(", f"def op{k}(", 1)]
    functions += ["", ""]
    inputs = list(node.inputs)
    program.checks.append(lambda shapes: spec.fits([shapes[id(v)] for v in inputs]))
    names = [_contiguous(program, v) for v in inputs]
    outputs = [program.names[id(v)] for v in node.outputs]
    return [f"    op{k}({', '.join(spec.entry(names, outputs))})"]


def _emit_elemwise(
    program: Program, node: Apply, k: int, functions: list[str], flags: str, threshold: int
) -> list[str]:
    """A lone elementwise node (fusion leaves one without a partner or a bias in its own step): emitted as a fused
    kernel of that one member."""
    if member_kind(node.op) != "elemwise" or len(node.outputs) != 1:
        raise UnsupportedKernel(f"{node.op.name} has no compiled form in a whole-plan entry point")
    n = len(node.inputs)
    op = FusedElemwise(
        input_kinds=tuple((v.dtype, v.ndim) for v in node.inputs),
        program=(Instruction(node.op, tuple(range(n))),),
        results=(n,),
        reductions=(None,),
        member_provenance=(node.provenance,),
        kernel_name=node.op.name,
    )
    alone = SimpleNamespace(op=op, inputs=node.inputs, outputs=node.outputs)
    return _emit_fused(program, alone, k, functions, flags, threshold)  # type: ignore[arg-type]


def _static_size_one(var: Variable) -> bool:
    """Whether the static type says the value has one element (read as a scalar by the loop)."""
    return all(d == 1 for d in var.type.shape)


def _contiguous(program: Program, var: Variable) -> str:
    """The code of ``var`` as a C-contiguous array (a transposed view is copied: ``ravel`` would copy it anyway)."""
    name = program.names[id(var)]
    return name if program.layouts[id(var)] == "C" else f"np.ascontiguousarray({name})"


def _loop_function(op: FusedElemwise, name: str, flags: str, scalars: Sequence[int], math: str) -> list[str]:
    """The kernel's serial loop as a module-level function ``name(n, <reads>, <outputs>)``: the calling convention
    of ``cpu_source`` (flat arrays in, the ``scalars`` as values; flat outputs or one-element sums out), with
    stores spelt ``out<j>[i] = `` and ``sum<j>[0] = `` as there (the fault hook finds them)."""
    n = op.n_inputs
    dtypes = output_dtypes(op)
    accumulators = {j: "float64" if dtypes[j] == "float32" else dtypes[j] for j, r in enumerate(op.reductions) if r}
    outputs = [f"out{j}" if reduction is None else f"sum{j}" for j, reduction in enumerate(op.reductions)]
    lines = [
        f'@numba.njit(cache=True, fastmath={flags}, error_model="numpy")',
        f"def {name}({', '.join(['n'] + [f'in{r}' for r in read_inputs(op)] + outputs)}):",
    ]
    lines += [f"    acc{j} = {dtype_constructor(dtype)}(0)" for j, dtype in accumulators.items()]
    checks = domain_checks(op, math)
    if checks:
        lines.append("    outside = np.int64(0)")
    lines += [f"    {value_name(r, n)} = in{r}" for r in read_inputs(op) if r in scalars]
    lines.append("    for i in range(n):")
    lines += [f"        {value_name(r, n)} = in{r}[i]" for r in read_inputs(op) if r not in scalars]
    lines += ["        " + line for line in scalar_body(op, math)]
    if checks:
        lines.append(f"        outside += np.int64({' or '.join(checks)})")
    for j, (ref, reduction) in enumerate(zip(op.results, op.reductions)):
        if reduction is None:
            lines.append(f"        out{j}[i] = {value_name(ref, n)}")
        elif accumulates(op, math, dtypes[j]):
            lines.append(
                f"        acc{j} = {ACCUMULATE}(acc{j}, {dtype_constructor(accumulators[j])}({value_name(ref, n)}))"
            )
        else:
            lines.append(f"        acc{j} += {dtype_constructor(accumulators[j])}({value_name(ref, n)})")
    lines += [f"    sum{j}[0] = {dtype_constructor(dtypes[j])}(acc{j})" for j in accumulators]
    if checks:
        lines += ["    if outside:", f"        raise ValueError({DOMAIN_ERROR!r})"]
    return lines + ["", ""]


def _emit_matmul(program: Program, node: Apply, k: int, *_: object) -> list[str]:
    """The product into the output's array, for float operands of one dtype with at most 2 dimensions each: by
    NumPy's own BLAS where it has a CBLAS gemm (``numpy_blas``), else by ``np.dot`` (SciPy's, through Numba)."""
    a, b = node.inputs
    (out,) = node.outputs
    if not (is_float(a.dtype) and a.dtype == b.dtype == out.dtype and 1 <= a.ndim <= 2 and 1 <= b.ndim <= 2):
        raise UnsupportedKernel(f"matmul of {a.type} and {b.type} has no compiled form (float, at most 2-d)")
    program.checks.append(lambda shapes: _empty_problem(shapes, (a, b)))
    x, y, target = program.names[id(a)], program.names[id(b)], program.names[id(out)]
    if numpy_blas.gemm_symbol(out.dtype) is not None:  # NumPy's own BLAS: one thread pool in the process
        program.blas.add(out.dtype)
        operands = (x, a.ndim, program.layouts[id(a)]), (y, b.ndim, program.layouts[id(b)])
        return [numpy_blas.gemm_call(out.dtype, *operands, target)]
    if a.ndim == 1 and b.ndim == 1:
        return [f"    {target}.ravel()[0] = np.dot({x}, {y})"]
    return [f"    np.dot({x}, {y}, {target})"]


def _empty_problem(shapes: dict[int, tuple[int, ...]], values: Sequence[Variable]) -> str | None:
    """Why BLAS is not called here: an operand without elements."""
    if any(math.prod(shapes[id(v)]) == 0 for v in values):
        return "a matmul operand has no elements"
    return None


def _emit_transpose(program: Program, node: Apply, *_: object) -> list[str]:
    """The transposed view of a matrix (a C array's is an F array and the other way round): ``matrix_transpose``
    and ``transpose`` of a 2-d value."""
    (x,), (out,) = node.inputs, node.outputs
    if x.ndim != 2 or tuple(getattr(node.op, "axes", None) or (1, 0)) != (1, 0):
        raise UnsupportedKernel(f"{node.op.name} of a {x.ndim}-d value has no compiled form")
    _bind(program, out, f"v{len(program.names)}", "F" if program.layouts[id(x)] == "C" else "C")
    return [f"    {program.names[id(out)]} = {program.names[id(x)]}.T"]


def _emit_reshape(program: Program, node: Apply, *_: object) -> list[str]:
    """``expand_dims``, ``squeeze`` and ``reshape`` as a view with the result's dimensions (parameters)."""
    (x,), (out,) = node.inputs[:1], node.outputs
    if program.layouts[id(x)] != "C":
        raise UnsupportedKernel(f"{node.op.name} of a transposed view has no compiled form")
    dims = [program.parameter(lambda shapes, axis=axis: shapes[id(out)][axis]) for axis in range(out.ndim)]
    shape = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    _bind(program, out, f"v{len(program.names)}", "C")
    return [f"    {program.names[id(out)]} = {program.names[id(x)]}.reshape({shape})"]


def _emit_sum_to_like(program: Program, node: Apply, *_: object) -> list[str]:
    """``sum_to_like(g, x)`` where the shapes are equal (checked per signature): ``g`` itself."""
    g, like = node.inputs
    (out,) = node.outputs
    program.checks.append(
        lambda shapes: None if shapes[id(g)] == shapes[id(like)] else f"sum_to_like sums {shapes[id(g)]}"
    )
    positions = [j for j, v in enumerate(program.outputs) if v is out]
    if positions:  # a graph output (a bias gradient after its sum): copied into the output's array
        _bind(program, out, f"o{positions[0]}", "C")
        return [f"    o{positions[0]}.ravel()[:] = {_contiguous(program, g)}.ravel()"]
    _bind(program, out, program.names[id(g)], program.layouts[id(g)])
    return []


def _emit_sum(program: Program, node: Apply, k: int, functions: list[str], *_: object) -> list[str]:
    """A sum over every axis: one loop, float32 accumulating in float64 as the fused kernels' sums do."""
    op: Sum = node.op  # type: ignore[assignment]
    (x,), (out,) = node.inputs, node.outputs
    if tuple(op.axes) != tuple(range(x.ndim)) and op_kernel(node) is not None:
        return _emit_op_kernel(program, node, k, functions)  # a sum per row or per column
    if tuple(op.axes) != tuple(range(x.ndim)) or op.keepdims or out.dtype not in ("float32", "float64", "int64"):
        raise UnsupportedKernel(f"{op.name} over axes {op.axes} of a {x.ndim}-d value has no compiled form")
    accumulator = "float64" if out.dtype == "float32" else out.dtype
    source = _contiguous(program, x)
    return [
        f"    acc{k} = {dtype_constructor(accumulator)}(0)",
        f"    for e in {source}.ravel():",
        f"        acc{k} += {dtype_constructor(accumulator)}(e)",
        f"    {program.names[id(out)]}.ravel()[0] = {dtype_constructor(out.dtype)}(acc{k})",
    ]


def _emit_reduced_size(program: Program, node: Apply, *_: object) -> list[str]:
    """The number of elements a reduction combines: a parameter of the signature, in the op's dtype."""
    op: ReducedSize = node.op  # type: ignore[assignment]
    (x,), (out,) = node.inputs, node.outputs
    count = program.parameter(lambda shapes: math.prod(shapes[id(x)][a] for a in op.axes))
    return [f"    {program.names[id(out)]}.ravel()[0] = {dtype_constructor(out.dtype)}({count})"]


STEP_FORMS: dict[type, StepForm] = {
    FusedElemwise: StepForm(True, _emit_fused),
    Elemwise: StepForm(True, _emit_elemwise),
    MatMul: StepForm(True, _emit_matmul),
    MatrixTranspose: StepForm(False, _emit_transpose),
    Transpose: StepForm(False, _emit_transpose),
    ExpandDims: StepForm(False, _emit_reshape),
    Squeeze: StepForm(False, _emit_reshape),
    Reshape: StepForm(False, _emit_reshape),
    SumToLike: StepForm(False, _emit_sum_to_like),
    Sum: StepForm(True, _emit_sum),
    ReducedSize: StepForm(True, _emit_reduced_size),
}


OP_KERNEL_FORM = StepForm(True, _emit_op_kernel)  # any op with an entry form in ``cpu_ops``


# ---------------------------------------------------------------------------------------------------------------
# Per input-shape signature
# ---------------------------------------------------------------------------------------------------------------
def frame_for(program: Program, input_shapes: Sequence[tuple[int, ...]]) -> Frame | str:
    """The parameters, buffers and output specs for inputs of these shapes, or why the entry point does not fit
    them (a value-dependent shape, a broadcast read, a loop large enough for the parallel module, buffers beyond
    ``FRAME_BYTES``...)."""
    shapes = value_shapes(program, input_shapes)
    if isinstance(shapes, str):
        return shapes
    for check in program.checks:
        problem = check(shapes)
        if problem is not None:
            return problem
    held = sum(math.prod(shapes[id(v)]) * np.dtype(v.dtype).itemsize for v in program.buffers)
    if held > FRAME_BYTES:
        return f"its buffers would hold {held} bytes (at most {FRAME_BYTES} are kept per signature)"
    parameters = np.array([parameter(shapes) for parameter in program.parameters] or [0], dtype=np.int64)
    buffers = tuple(np.empty(shapes[id(v)], dtype=v.dtype) for v in program.buffers)
    outputs = tuple((shapes[id(v)], np.dtype(v.dtype)) for v in program.outputs)
    return Frame((parameters, *buffers), outputs)


def value_shapes(program: Program, input_shapes: Sequence[tuple[int, ...]]) -> dict[int, tuple[int, ...]] | str:
    """The shape of every value for inputs of these shapes, by the ops' own inference (a string saying why when a
    shape depends on values)."""
    shapes: dict[int, tuple[int, ...]] = {}
    types: dict[int, TensorType] = {}
    for var, shape in zip(program.inputs, input_shapes):
        types[id(var)] = TensorType(var.dtype, tuple(shape))
    for constant in program.constants:
        types[id(constant)] = TensorType(constant.dtype, tuple(np.shape(constant.data)))
    for node in program.nodes:
        try:
            inferred = node.op.infer(*(_placeholder(types[id(v)]) for v in node.inputs))
        except Exception as exc:  # a typed error for the user's mistake: the mixed plan raises it with the line
            return f"{node.op.name} refuses these shapes ({type(exc).__name__}: {exc})"
        for var, type_ in zip(node.outputs, inferred):
            types[id(var)] = type_
    for key, type_ in types.items():
        if any(d is None for d in type_.shape):
            return "a shape depends on the values"
        shapes[key] = tuple(int(d) for d in type_.shape)
    return shapes


def _placeholder(type_: TensorType) -> Variable:
    """A bare variable of ``type_`` for replaying inference (no provenance: it is thrown away)."""
    var = Variable.__new__(Variable)
    var.type, var.owner, var.index, var.name, var._provenance = type_, None, 0, None, None
    return var

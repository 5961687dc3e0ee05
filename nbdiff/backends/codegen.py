"""Target-neutral kernel code generation: from a ``FusedElemwise`` op to the scalar body of its loop.

A compiled backend runs a fused kernel as one flat loop over the elements of its *loop shape* (the shape every
member's result has). Per element, the target binds ``a0``, ``a1``, ... to the element values of the inputs the
loop reads, then runs the lines of ``scalar_body(op)``: one assignment ``t<k> = ...`` per member instruction.

- An elementwise member uses its op's ``scalar_code`` (a Python expression over ``{0}``, ``{1}``, ... using
  ``math``). Numeric literals in it are typed with the member's dtype (``np.float32(1.0)``: an untyped float
  literal would promote a float32 computation to float64, and the CUDA simulator does so even where Numba's CPU
  target would not). Integer arguments of a member with a float result are converted to that dtype first, as
  NumPy's loops do, and the whole expression is converted to the member's dtype, so integer arithmetic wraps
  where NumPy's does and float32 stays float32.
- Under ``math="nbdiff"`` (CPU targets) an elementwise member whose op names a ``vmath`` function (``math_name``)
  on float32 or float64 values calls it instead (``vm_exp_f64(a0)``): branch-free code that LLVM vectorises;
  ``module_definitions(ops, math)`` then adds its text to the module. The default, ``"libm"``, is the op's
  ``scalar_code`` (what the CUDA target emits: libdevice's math).
- A pass-through member (a broadcast, a no-op un-broadcast, a checked shape) copies its first argument.
- A fill is a typed literal of its value.
- A member whose NumPy function raises on some values (integer ``power`` with a negative exponent) adds a condition
  to ``domain_checks(op)``; the target tests it per element and raises ``ValueError(DOMAIN_ERROR)``, and the
  backend's runner then runs the interpreter's ``perform``, which raises the interpreter's error.

Constants are kernel *arguments* (inputs of the fused node), so the generated text depends only on the kernel's
structure. Dtype constructors are spelled ``np.<dtype>`` (``np.bool_`` for bool): targets import NumPy as ``np``.

``kernel_layout`` decides, from the inputs' run-time shapes, whether the flat-loop layout applies: every input
the loop reads has the loop's size (passed as a flat array), size 1 (passed as a scalar) or broadcasts to the loop
shape along some axes (expanded by the caller, then passed flat), and every trailing ``Sum`` reduces all axes.
Anything else is left to the interpreter (``supports`` says so).
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nbdiff.backends import vmath, vmath_library
from nbdiff.errors import BackendError, NbdiffError
from nbdiff.graph.basic import Op, Variable
from nbdiff.graph.types import SUPPORTED_DTYPES, TensorType, is_float, is_integer
from nbdiff.ops.fused import MAX_FUSED_NDIM, FusedElemwise, member_kind
from nbdiff.ops.reduce import Sum

LAYOUT_CACHE_SIZE = 512  # (kernel structure, input shapes) pairs whose layout is remembered
DOMAIN_ERROR = "nbdiff: a value outside an op's domain"  # what a kernel raises when a domain check held


class UnsupportedKernel(BackendError):
    """A fused kernel, or a set of input shapes, that the flat-loop kernel layout cannot run."""


def dtype_constructor(dtype: str) -> str:
    """The expression that converts a scalar to ``dtype`` in generated code: ``np.float32``, ``np.bool_``."""
    return "np.bool_" if dtype == "bool" else f"np.{dtype}"


DTYPE_CONSTRUCTORS = {dtype: dtype_constructor(dtype) for dtype in SUPPORTED_DTYPES}


def value_name(ref: int, n_inputs: int) -> str:
    """The scalar name of a reference in generated code: ``a<r>`` for input ``r``, ``t<k>`` for instruction ``k``."""
    return f"a{ref}" if ref < n_inputs else f"t{ref - n_inputs}"


# ---------------------------------------------------------------------------------------------------------------
# The scalar body
# ---------------------------------------------------------------------------------------------------------------
def scalar_body(op: FusedElemwise, math: str = "libm") -> list[str]:
    """One assignment per member instruction, in program order (see the module docstring). ``math="nbdiff"`` (CPU
    targets) calls the vectorisable function of ``vmath`` for a member whose op names one (``math_name``) on
    float32 or float64 values; "libm" (and every other member) uses the op's ``scalar_code``."""
    n = op.n_inputs
    dtypes = op.value_dtypes()
    lines = []
    for k, (member, args) in enumerate(op.program):
        dtype = dtypes[n + k]
        names = [value_name(r, n) for r in args]
        kind = member_kind(member)
        if kind == "pass":
            expression = names[0]
        elif kind == "fill":
            expression = typed_literal(member.value, dtype)  # type: ignore[attr-defined]
        elif kind == "elemwise" and math == "nbdiff" and _vector_math(member, [dtypes[r] for r in args], dtype):
            call = f"{vmath.function_name(member.math_name, dtype)}({_coerced(names[0], dtypes[args[0]], dtype)})"
            expression = f"{dtype_constructor(dtype)}({call})"
        elif kind == "elemwise":
            expression = elemwise_expression(member, names, [dtypes[r] for r in args], dtype)
        else:
            raise UnsupportedKernel(f"member t{k} ({member.name}) cannot run inside a fused loop")
        lines.append(f"{value_name(n + k, n)} = {expression}")
    return lines


def _vector_math(member: Op, arg_dtypes: Sequence[str], dtype: str) -> bool:
    """Whether ``member`` runs as a ``vmath`` function under ``math="nbdiff"``: its op names one for ``dtype``, and
    it has one argument (an integer one is converted to ``dtype`` first, as NumPy's loop does)."""
    name = getattr(member, "math_name", None)
    return name is not None and len(arg_dtypes) == 1 and vmath.supports(name, dtype)


def vmath_names(ops: Sequence[FusedElemwise], math: str) -> list[str]:
    """The ``vmath`` functions the scalar bodies of ``ops`` call under ``math`` (none under "libm")."""
    if math != "nbdiff":
        return []
    dtypes_of = {op: op.value_dtypes() for op in ops}
    names = []
    for op in ops:
        dtypes = dtypes_of[op]
        for k, (member, args) in enumerate(op.program):
            dtype = dtypes[op.n_inputs + k]
            if member_kind(member) == "elemwise" and _vector_math(member, [dtypes[r] for r in args], dtype):
                name = vmath.function_name(member.math_name, dtype)  # type: ignore[attr-defined]
                if name not in names:
                    names.append(name)
    return names


def module_definitions(
    ops: Sequence[FusedElemwise], math: str = "libm", extra: Sequence[str] = (), fastmath: bool = False
) -> list[str]:
    """The module-level lines the members of ``ops`` need (a user-defined op's ``numba.njit`` function, a foreign
    function's binding: ``module_code()``; under ``math="nbdiff"`` the binding of the ``vmath`` functions they
    call and the ``extra`` ones, such as ``vmath.ACCUMULATE``, from the library module shared by every kernel of
    the folder (``vmath_library``; for a kernel compiled with ``fastmath`` flags, the library whose functions are
    not inlined into it: ``vmath.definitions``), each block once, in first-use order. Emitted after the imports, so
    a kernel module reaches every function its scalar body calls from its own text and the library beside it (the
    worker imports it from disk)."""
    blocks: list[tuple[str, ...]] = []
    for op in ops:
        for member, _ in op.program:
            code = getattr(member, "module_code", None)
            block = tuple(code()) if code is not None else ()
            if block and block not in blocks:
                blocks.append(block)
    names = vmath_names(ops, math) + list(extra) if math == "nbdiff" else []
    lines = vmath_library.binding_lines(names, inline=not fastmath)
    return lines + [line for block in blocks for line in (*block, "", "")]


def domain_checks(op: FusedElemwise, math: str = "libm") -> list[str]:
    """The conditions, over the scalar body's names, under which a member's values are outside its domain (NumPy
    raises on them: ``Elemwise.domain_check``), or, under ``math="nbdiff"``, outside the range of its ``vmath``
    function (``vmath.RANGE_LIMITS``: sin and cos of finite ``|x| > 1.05e8``). A kernel tests them per element and
    raises ``DOMAIN_ERROR`` after its loop, and the runner then runs the interpreter's ``perform`` for that step,
    which raises its own error or, for a value out of vmath's range, computes the step with NumPy."""
    n = op.n_inputs
    dtypes = op.value_dtypes()
    checks = []
    for k, (member, args) in enumerate(op.program):
        check = getattr(member, "domain_check", None) if member_kind(member) == "elemwise" else None
        condition = check([dtypes[r] for r in args], dtypes[n + k]) if check is not None else None
        if condition is not None:
            checks.append("(" + condition.format(*(value_name(r, n) for r in args)) + ")")
        arg_dtypes = [dtypes[r] for r in args]
        if math == "nbdiff" and member_kind(member) == "elemwise" and _vector_math(member, arg_dtypes, dtypes[n + k]):
            limit = vmath.RANGE_LIMITS.get(member.math_name)  # type: ignore[attr-defined]
            if limit is not None:
                name = value_name(args[0], n)
                checks.append(f"((abs({name}) > {limit!r}) & (abs({name}) < math.inf))")
    return list(dict.fromkeys(checks))  # sin and cos of one value check it once


def elemwise_expression(op: Op, names: Sequence[str], arg_dtypes: Sequence[str], dtype: str) -> str:
    """``op``'s scalar code on ``names`` with typed literals, converted to the result ``dtype``."""
    args = [_coerced(name, arg_dtype, dtype) for name, arg_dtype in zip(names, arg_dtypes)]
    tree = ast.parse(op.scalar_code.format(*args), mode="eval")  # type: ignore[attr-defined]
    tree = _TypedLiterals(_literal_dtype(arg_dtypes, dtype)).visit(tree)
    return f"{dtype_constructor(dtype)}({ast.unparse(tree)})"


def _coerced(name: str, arg_dtype: str, dtype: str) -> str:
    """An integer argument of a member with a float result, converted to that float dtype (NumPy's loop dtype)."""
    if is_float(dtype) and is_integer(arg_dtype) and arg_dtype != "bool":
        return f"{dtype_constructor(dtype)}({name})"
    return name


def _literal_dtype(arg_dtypes: Sequence[str], dtype: str) -> str:
    """The dtype of a member's literals: its result's, or for a boolean result its arguments' common dtype."""
    if dtype != "bool" or not arg_dtypes:
        return dtype
    return np.result_type(*arg_dtypes).name


def typed_literal(value: float, dtype: str) -> str:
    """``value`` as a literal of ``dtype`` in generated code: ``np.float32(0.5)``, ``np.int8(3)``, ``True``,
    ``np.float64(math.inf)``. A value that ``dtype`` cannot hold exactly stays an untyped Python literal."""
    if dtype == "bool":
        return "True" if value else "False"
    if is_float(dtype):
        if math.isnan(value):
            text = "math.nan"
        elif math.isinf(value):
            text = "math.inf" if value > 0 else "-math.inf"
        else:
            text = repr(float(value))
        return f"{dtype_constructor(dtype)}({text})"
    info = np.iinfo(dtype)
    if not math.isfinite(value) or value != int(value) or not info.min <= int(value) <= info.max:
        return repr(value)
    return f"{dtype_constructor(dtype)}({int(value)})"


class _TypedLiterals(ast.NodeTransformer):
    """Rewrites numeric literals as typed literals of one dtype, and bare dtype calls (``float32(x)``, the scalar
    code of ``astype``) as ``np.float32(x)``."""

    def __init__(self, dtype: str):
        self.dtype = dtype

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return node
        return ast.parse(typed_literal(value, self.dtype), mode="eval").body

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in DTYPE_CONSTRUCTORS:
            node.func = ast.parse(DTYPE_CONSTRUCTORS[node.func.id], mode="eval").body
        return node


# ---------------------------------------------------------------------------------------------------------------
# Structure and layout
# ---------------------------------------------------------------------------------------------------------------
def read_inputs(op: FusedElemwise) -> tuple[int, ...]:
    """The inputs whose values the loop reads (in input order): arguments of elementwise members, the first
    argument of pass-through members, inputs that are outputs. The others only give a shape (``zeros_like(x)``)
    and are no kernel arguments."""
    n = op.n_inputs
    read: set[int] = {r for r in op.results if r < n}
    for member, args in op.program:
        read.update(r for r in _value_args(member, args) if r < n)
    return tuple(sorted(read))


def _value_args(member: Op, args: tuple[int, ...]) -> tuple[int, ...]:
    """The references whose values ``member`` reads per element (not those that only give it a shape)."""
    kind = member_kind(member)
    return args if kind == "elemwise" else args[:1] if kind == "pass" else ()


def structure_problem(op: FusedElemwise) -> str | None:
    """Why no flat-loop kernel can run ``op`` whatever its inputs' shapes (None when one can)."""
    n = op.n_inputs
    if any(ndim > MAX_FUSED_NDIM for _, ndim in op.input_kinds):
        return f"an input has more than {MAX_FUSED_NDIM} dimensions, the most a kernel's layout handles"
    for k, (member, _) in enumerate(op.program):
        if member_kind(member) is None:
            return f"member t{k} ({member.name}) cannot run inside a fused loop"
    types = _replay(op, [TensorType(dtype, (None,) * ndim) for dtype, ndim in op.input_kinds])
    for ref, reduction in zip(op.results, op.reductions):
        if reduction is None:
            continue
        ndim = types[ref].ndim
        if not isinstance(reduction, Sum):
            return f"the trailing {reduction.name} of {value_name(ref, n)} is not a sum"
        if tuple(reduction.axes) != tuple(range(ndim)):
            return (
                f"the trailing sum of {value_name(ref, n)} reduces axes {reduction.axes} of a {ndim}-d value, "
                "not all of them: not supported by this kernel layout"
            )
    return None


def output_dtypes(op: FusedElemwise) -> list[str]:
    """The dtype of each output (a trailing sum's is NumPy's: integers and bool sum to 64-bit integers)."""
    return [out.dtype for out in op.infer(*(_placeholder(TensorType(d, (None,) * k)) for d, k in op.input_kinds))]


@dataclass(frozen=True)
class Layout:
    """How a flat-loop kernel runs ``op`` on inputs of given shapes.

    ``read`` are the inputs passed to the kernel (``read_inputs``) and ``scalar`` says, for each, whether it is
    passed as a scalar (size 1) rather than a flat array of ``size`` elements; ``expand`` marks the inputs
    broadcast along some axes only (a bias ``(n,)`` added to ``(m, n)``), which the caller expands to the loop
    shape before flattening. ``outputs`` is the interpreter's ``(dtype, shape)`` of each output; ``reduced`` marks
    the outputs that are trailing sums.
    """

    loop_shape: tuple[int, ...]
    size: int
    read: tuple[int, ...]
    scalar: tuple[bool, ...]
    expand: tuple[bool, ...]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    reduced: tuple[bool, ...]


def kernel_layout(op: FusedElemwise, input_shapes: Sequence[tuple[int, ...]]) -> Layout:
    """The layout for these input shapes; ``UnsupportedKernel`` (saying why) when the flat loop cannot run them."""
    result = _analyse(op, tuple(tuple(int(d) for d in shape) for shape in input_shapes))
    if isinstance(result, str):
        raise UnsupportedKernel(f"fused kernel {op.kernel_name}: {result}")
    return result


def why_unsupported(op: FusedElemwise, input_shapes: Sequence[tuple[int, ...]]) -> str | None:
    """Why the flat-loop layout cannot run ``op`` on inputs of these shapes; None when it can."""
    result = _analyse(op, tuple(tuple(int(d) for d in shape) for shape in input_shapes))
    return result if isinstance(result, str) else None


def supports(op: FusedElemwise, input_shapes: Sequence[tuple[int, ...]]) -> bool:
    """Whether a flat-loop kernel computes ``op`` on inputs of these shapes (else: use the interpreter)."""
    return why_unsupported(op, input_shapes) is None


@functools.lru_cache(maxsize=LAYOUT_CACHE_SIZE)
def _analyse(op: FusedElemwise, shapes: tuple[tuple[int, ...], ...]) -> Layout | str:
    """The layout, or the reason there is none (the structure and the shapes decide it: cached by both)."""
    problem = structure_problem(op)
    if problem is not None:
        return problem
    n = op.n_inputs
    types = _run_time_types(op, shapes)
    if isinstance(types, str):
        return types
    loop = types[n].shape
    size = math.prod(loop)
    problem = _shape_problem(op, [t.shape for t in types], loop, size)
    if problem is not None:
        return problem
    read = read_inputs(op)
    outputs = []
    for ref, reduction in zip(op.results, op.reductions):
        out = types[ref] if reduction is None else reduction.infer(_placeholder(types[ref]))[0]
        outputs.append((out.dtype, tuple(out.shape)))
    return Layout(
        loop_shape=loop,
        size=size,
        read=read,
        scalar=tuple(math.prod(shapes[r]) == 1 for r in read),
        expand=tuple(math.prod(shapes[r]) not in (1, size) for r in read),
        outputs=tuple(outputs),
        reduced=tuple(reduction is not None for reduction in op.reductions),
    )


def _run_time_types(op: FusedElemwise, shapes: tuple[tuple[int, ...], ...]) -> list[TensorType] | str:
    """Every reference's type for inputs of these run-time shapes, or why the members reject them."""
    n = op.n_inputs
    if len(shapes) != n or any(len(s) != ndim for s, (_, ndim) in zip(shapes, op.input_kinds)):
        return f"expects {n} inputs of {[ndim for _, ndim in op.input_kinds]} dimensions, got shapes {list(shapes)}"
    try:
        return _replay(op, [TensorType(dtype, shape) for (dtype, _), shape in zip(op.input_kinds, shapes)])
    except NbdiffError as exc:
        return f"the members reject these shapes ({exc})"


def _shape_problem(op: FusedElemwise, shapes: list[tuple[int, ...]], loop: tuple[int, ...], size: int) -> str | None:
    """Why the references' run-time ``shapes`` do not fit one flat loop over ``loop``: every member's result and
    every output must have the loop's shape, every value read must have its size or size 1."""
    n = op.n_inputs
    for k in range(len(op.program)):
        if shapes[n + k] != loop:
            return f"member t{k} has shape {shapes[n + k]}, not the loop shape {loop}"
    for k, (member, args) in enumerate(op.program):
        for r in _value_args(member, args):
            problem = _read_problem(shapes[r], loop, size, f"argument {value_name(r, n)} of member t{k}")
            if problem is not None:
                return problem
    for ref in op.results:
        if shapes[ref] != loop:
            return f"output {value_name(ref, n)} has shape {shapes[ref]}, not the loop shape {loop}"
    return None


def _read_problem(shape: tuple[int, ...], loop: tuple[int, ...], size: int, what: str) -> str | None:
    """Why a value of ``shape`` cannot be read in ``loop``: flat (its size), as a scalar (size 1), or expanded by
    the caller (broadcast along some axes); None when it can."""
    if shape == loop:
        return None
    try:
        broadcast = np.broadcast_shapes(shape, loop)
    except ValueError:
        broadcast = None
    if broadcast != loop:
        return f"{what} has shape {shape}, which does not broadcast to the loop shape {loop} without a reduction"
    return None


def _replay(op: FusedElemwise, input_types: Sequence[TensorType]) -> list[TensorType]:
    """The type of every reference (inputs, then each instruction's result) by the members' own inference."""
    types = list(input_types)
    for member, args in op.program:
        (out,) = member.infer(*(_placeholder(types[r]) for r in args))
        types.append(out)
    return types


def _placeholder(type_: TensorType) -> Variable:
    """A bare variable of ``type_`` for replaying inference (no provenance: it is thrown away)."""
    var = Variable.__new__(Variable)
    var.type, var.owner, var.index, var.name, var._provenance = type_, None, 0, None, None
    return var


# ---------------------------------------------------------------------------------------------------------------
# The rows-of-columns form: a 2-D loop for broadcast reads and partial sums
# ---------------------------------------------------------------------------------------------------------------
FULL, COLUMN, ROW, SCALAR = "full", "column", "row", "scalar"  # how the rows form reads an input
TOTAL = "total"  # a sum over every axis; ROW: over the last axis (one per row); COLUMN: over all but the last


@dataclass(frozen=True)
class RowsForm:
    """A kernel's loop as ``n_outer`` rows of ``n_inner`` columns (the loop shape's last axis, and the product of
    the others), fixed by the kernel's structure and its inputs' static shapes.

    ``reads`` pairs each read input with how the loop reads it: ``full`` (the loop's shape: element ``[o, i]``),
    ``column`` (broadcast along rows, a bias of shape ``(n_inner,)``: read in place at ``[i]``, never copied to the
    batch's shape), ``row`` (one value per row, shape ``(..., 1)``: ``[o]``) or ``scalar`` (one element).
    ``sums`` gives per output ``None`` (an elementwise result), ``total``, ``row`` (a trailing sum over the last
    axis, accumulated per row inside the loop) or ``column`` (a leading sum over every axis but the last, as in a
    bias gradient: accumulated per column)."""

    ndim: int
    reads: tuple[tuple[int, str], ...]
    sums: tuple[str | None, ...]

    @property
    def broadcasts(self) -> bool:
        """Whether the form reads an input in place that a flat loop would have to copy, or sums some axes."""
        return any(kind in (COLUMN, ROW) for _, kind in self.reads) or any(s in (ROW, COLUMN) for s in self.sums)


def rows_form(op: FusedElemwise, static_shapes: Sequence[tuple[int | None, ...]]) -> RowsForm | None:
    """The rows form of ``op`` for inputs of these static shapes (``None`` for unknown sizes); None where the loop
    has fewer than 2 dimensions, an input broadcasts otherwise than along rows or columns, or a sum reduces other
    axes than all, the last, or all but the last."""
    if any(member_kind(member) is None for member, _ in op.program) or not op.program:
        return None
    if any(len(shape) > MAX_FUSED_NDIM for shape in static_shapes):
        return None
    types = _replay(op, [TensorType(dtype, (None,) * ndim) for dtype, ndim in op.input_kinds])
    ndim = types[op.n_inputs].ndim
    if ndim < 2:
        return None
    reads = []
    for r in read_inputs(op):
        kind = _read_kind(tuple(static_shapes[r]), ndim)
        if kind is None:
            return None
        reads.append((r, kind))
    sums: list[str | None] = []
    for ref, reduction in zip(op.results, op.reductions):
        if types[ref].ndim != ndim:
            return None
        if reduction is None:
            sums.append(None)
            continue
        if not isinstance(reduction, Sum):
            return None
        axes = tuple(reduction.axes)
        kind = {tuple(range(ndim)): TOTAL, (ndim - 1,): ROW, tuple(range(ndim - 1)): COLUMN}.get(axes)
        if kind is None:
            return None
        sums.append(kind)
    return RowsForm(ndim, tuple(reads), tuple(sums))


def _read_kind(shape: tuple[int | None, ...], ndim: int) -> str | None:
    """How the rows form reads an input of this static shape in a loop of ``ndim`` dimensions (None: it cannot)."""
    if all(d == 1 for d in shape):
        return SCALAR
    if len(shape) > ndim:
        return None
    if shape[-1] != 1 and all(d == 1 for d in shape[:-1]):
        return COLUMN
    if len(shape) == ndim and shape[-1] == 1 and not any(d == 1 for d in shape[:-1]):
        return ROW
    if len(shape) == ndim and not any(d == 1 for d in shape):
        return FULL
    return None


@dataclass(frozen=True)
class RowsLayout:
    """How a rows-form kernel runs on inputs of given shapes: the loop's shape, rows and columns, and the
    interpreter's ``(dtype, shape)`` of each output."""

    loop_shape: tuple[int, ...]
    n_outer: int
    n_inner: int
    outputs: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return self.n_outer * self.n_inner


def rows_layout(op: FusedElemwise, form: RowsForm, input_shapes: Sequence[tuple[int, ...]]) -> RowsLayout | str:
    """The rows layout for these run-time shapes, or why the form does not fit them (an input of another shape
    than its read kind says: a bias of one element where ``column`` was compiled)."""
    return _rows_analyse(op, form, tuple(tuple(int(d) for d in shape) for shape in input_shapes))


@functools.lru_cache(maxsize=LAYOUT_CACHE_SIZE)
def _rows_analyse(op: FusedElemwise, form: RowsForm, shapes: tuple[tuple[int, ...], ...]) -> RowsLayout | str:
    """``rows_layout``, cached by the structure, the form and the shapes."""
    n = op.n_inputs
    types = _run_time_types(op, shapes)
    if isinstance(types, str):
        return types
    loop = tuple(types[n].shape)
    if len(loop) != form.ndim:
        return f"the loop has {len(loop)} dimensions, not {form.ndim}"
    problem = _shape_problem(op, [t.shape for t in types], loop, math.prod(loop))
    if problem is not None:
        return problem
    n_inner = loop[-1]
    n_outer = math.prod(loop[:-1])
    for r, kind in form.reads:
        if not _fits(shapes[r], kind, loop):
            return f"input {r} has shape {shapes[r]}, not a {kind} of the loop shape {loop}"
    outputs = []
    for ref, reduction in zip(op.results, op.reductions):
        out = types[ref] if reduction is None else reduction.infer(_placeholder(types[ref]))[0]
        outputs.append((out.dtype, tuple(out.shape)))
    return RowsLayout(loop, n_outer, n_inner, tuple(outputs))


def _fits(shape: tuple[int, ...], kind: str, loop: tuple[int, ...]) -> bool:
    """Whether an input of run-time ``shape`` is what its read ``kind`` says in a loop of shape ``loop``."""
    if kind == SCALAR:
        return math.prod(shape) == 1
    if kind == FULL:
        return shape == loop
    if kind == ROW:
        return shape == loop[:-1] + (1,)
    return len(shape) >= 1 and shape[-1] == loop[-1] and math.prod(shape) == loop[-1]

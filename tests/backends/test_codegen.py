"""The kernel code generator: Numba CPU modules of fused kernels agree with the interpreter (``op.perform``, the
specification) in values, dtypes and shapes; layouts the flat loop cannot run are refused; the module text depends
on the structure only; every elementwise op's ``scalar_code`` compiles and agrees with its ``perform``.

Numba compiles each distinct module once per test session (the ``compiled`` fixture); most are serial.
Tolerances: float64 1e-12 relative, float32 1e-5 relative. Compiled transcendentals (libm through LLVM) and
NumPy's SIMD loops may differ in the last few ulps, which the gradient's products and sums carry along and
cancellation turns into larger relative differences near zero: so the absolute tolerance is ``tolerance`` times
the output's scale (its largest finite magnitude; for a trailing sum, ``sum(|terms|)``, the scale of a
summation's rounding error).
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends.codegen import UnsupportedKernel, kernel_layout, scalar_body, supports, why_unsupported
from nbdiff.backends.cpu_source import SUM_BLOCK, cpu_module_source, module_name, run_compiled
from nbdiff.backends.vmath import SIN_COS_LIMIT
from nbdiff.errors import DTypeError
from nbdiff.graph.basic import registered_ops
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.types import SUPPORTED_DTYPES, TensorType, is_float
from nbdiff.ops.elemwise import Cast, Clip, Elemwise, Power, Where
from nbdiff.ops.fused import FusedElemwise, Instruction
from nbdiff.runtime.interpreter import Plan

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """``load(op, parallel=False, fastmath=False)``: the module of ``op`` written to a session directory and
    imported (once per distinct module name, so Numba compiles each kernel once per session)."""
    directory = tmp_path_factory.mktemp("kernels")
    modules = {}

    def load(op: FusedElemwise, parallel: bool = False, fastmath: bool = False, math: str = "nbdiff"):
        name = module_name(op, parallel=parallel, fastmath=fastmath, math=math)
        if name not in modules:
            path = directory / f"{name}.py"
            path.write_text(cpu_module_source(op, parallel=parallel, fastmath=fastmath, math=math))
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            modules[name] = module
        return modules[name]

    yield load
    for name in modules:
        sys.modules.pop(name, None)


def kernel_inputs(f: nd.Function, kernel, args) -> list[np.ndarray]:
    """The values of ``kernel``'s inputs when ``f`` runs on ``args`` (computed by the interpreter)."""
    return Plan(Graph(f.graph.inputs, list(kernel.inputs))).run([np.asarray(a) for a in args])


def unreduced(op: FusedElemwise) -> FusedElemwise:
    """``op`` without its trailing sums: the terms each sum adds up."""
    return FusedElemwise(op.input_kinds, op.program, op.results, (None,) * len(op.results))


def assert_agrees(op: FusedElemwise, arrays, got) -> None:
    """``got`` (a compiled run) has the interpreter's dtypes and shapes, and its values within the tolerance."""
    with np.errstate(all="ignore"):
        expected = op.perform(*arrays)
        terms = unreduced(op).perform(*arrays)
    assert len(got) == len(expected)
    for j, (value, reference) in enumerate(zip(got, expected)):
        assert type(value) is np.ndarray, f"output {j}"
        assert (value.dtype, value.shape) == (reference.dtype, reference.shape), f"output {j}"
        if not is_float(reference.dtype.name):
            np.testing.assert_array_equal(value, reference, err_msg=f"output {j}")
            continue
        rtol = TOLERANCE[reference.dtype.name]
        atol = rtol * scale(terms[j], reduced=op.reductions[j] is not None)
        np.testing.assert_allclose(value, reference, rtol=rtol, atol=atol, err_msg=f"output {j}")


def scale(terms: np.ndarray, reduced: bool) -> float:
    """The magnitude an output's rounding differences are relative to: the sum of ``|terms|`` for a sum, the
    largest finite ``|value|`` for an elementwise output (a result that cancels to near zero is compared at the
    scale of the values that cancelled)."""
    finite = np.abs(terms[np.isfinite(terms)]).astype("float64")
    if finite.size == 0:
        return 0.0
    return float(finite.sum() if reduced else finite.max())


def check_function(compiled, f: nd.Function, args, parallel: bool = False, fastmath: bool = False) -> int:
    """Every kernel of ``f`` compiled and compared with the interpreter on ``args``; the number of kernels."""
    assert f.kernels, "the function has no fused kernel"
    for kernel in f.kernels:
        op = kernel.op
        arrays = kernel_inputs(f, kernel, args)
        assert supports(op, [a.shape for a in arrays]), why_unsupported(op, [a.shape for a in arrays])
        got = run_compiled(op, compiled(op, parallel, fastmath), arrays)
        assert_agrees(op, arrays, got)
    return len(f.kernels)


def w1_function(dtype: str = "float64") -> nd.Function:
    """Value and gradient of the reference workload sum(tanh(x) exp(-x^2) + log1p(x^2) sin(3x))."""
    x = nd.vector("x", dtype=dtype)
    y = nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))
    return nd.function([x], [y, nd.grad(y, x)])


EXTREMES = [-np.inf, -1000.0, -30.0, -1.0, -1e-20, -0.0, 0.0, 1e-20, 0.5, 30.0, 1000.0, np.inf, np.nan]


def sample(dtype: str, n: int = 1001, seed: int = 0, extremes: bool = False) -> np.ndarray:
    values = np.random.default_rng(seed).uniform(-3, 3, n)
    if extremes:
        values[: len(EXTREMES)] = EXTREMES
    return values.astype(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Fused graphs against the interpreter
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_w1_value_and_gradient_agree(compiled, dtype):
    f = w1_function(dtype)
    assert check_function(compiled, f, [sample(dtype)]) <= 2


@pytest.mark.parametrize("n", [0, 1, 7])
def test_empty_and_tiny_loops(compiled, n):
    """n = 0 (the sum is 0), n = 1 (every input is a scalar: another specialisation of the same module)."""
    check_function(compiled, w1_function(), [sample("float64", n)])


@pytest.mark.parametrize("n", [0, 1, SUM_BLOCK - 1, SUM_BLOCK, SUM_BLOCK + 1, 200_001])
def test_w1_in_parallel_agrees(compiled, n):
    """The parallel module sums in blocks of ``SUM_BLOCK``: none, one partial, exactly one, a ragged last one."""
    f = w1_function()
    check_function(compiled, f, [sample("float64", n, seed=3)], parallel=True)


def test_float32_kernels_stay_float32():
    """No float64 conversion and no untyped literal (which would promote the loop to float64) in a float32
    kernel's body, whose members' scalar code has literals (sigmoid, softplus, tanh's derivative)."""
    x = nd.vector("x", dtype="float32")
    y = nd.sum(nd.sigmoid(x) * nd.softplus(x) + nd.tanh(x))
    (kernel,) = nd.function([x], [y, nd.grad(y, x)]).kernels
    body = scalar_body(kernel.op)
    assert all("float64" not in line for line in body), body
    assert sum(line.count("np.float32(") for line in body) >= 4  # sigmoid's 1.0s, softplus's 0.0s
    assert untyped_literals(body) == []


def untyped_literals(lines: list[str]) -> list[str]:
    """Numeric literals in generated lines that are not the argument of a dtype constructor ``np.<dtype>(...)``."""
    found = []
    for line in lines:
        tree = ast.parse(line)
        typed = {
            id(arg)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("np.")
            for arg in node.args
        }
        found += [
            ast.unparse(node)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and id(node) not in typed
        ]
    return found


def selection_function(dtype: str = "float64") -> nd.Function:
    """Comparisons, where, clip, maximum and minimum, with the gradients of both inputs."""
    x, y = nd.vector("x", dtype=dtype), nd.vector("y", dtype=dtype)
    out = nd.where(x > y, nd.clip(x, -1.0, 2.0), nd.maximum(x, y) * 0.5) + nd.minimum(x, 0.25) * (x <= 0.5)
    cost = nd.sum(out)
    return nd.function([x, y], [out, *nd.grad(cost, [x, y])])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_selection_and_comparisons_agree(compiled, dtype):
    x = sample(dtype, extremes=True)
    y = sample(dtype, seed=1)
    y[20:30] = x[20:30]  # ties: maximum's and clip's gradients go to the first input
    check_function(compiled, selection_function(dtype), [x, y])


def test_fastmath_keeps_nan_and_infinity(compiled):
    """fastmath=True leaves out "no NaNs/infs": maximum and clip still propagate NaN as NumPy does."""
    x = sample("float64", extremes=True)
    y = sample("float64", seed=1, extremes=True)[::-1].copy()
    check_function(compiled, selection_function(), [x, y], fastmath=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_softplus_erf_agree_at_extremes(compiled, dtype):
    x = nd.vector("x", dtype=dtype)
    y = nd.sum(nd.sigmoid(x) * nd.softplus(x) + nd.erf(x) - nd.softplus(-x))
    f = nd.function([x], [y, nd.grad(y, x)])
    check_function(compiled, f, [sample(dtype, extremes=True)])


def test_multi_output_kernel(compiled):
    """A member used outside the kernel, one reduced and one elementwise output, from one loop."""
    x = nd.vector("x")
    a = nd.exp(nd.sin(x))
    b = a * x - 1.0
    f = nd.function([x], [a, b, nd.sum(b), nd.dot(a, x)])
    assert max(len(k.outputs) for k in f.kernels) >= 3
    check_function(compiled, f, [sample("float64")])


def test_matrix_with_scalar_input_and_keepdims_sum(compiled):
    """A 2-d loop: a scalar input passed as a scalar, a keepdims sum over all axes reshaped to (1, 1)."""
    m, s = nd.matrix("m"), nd.scalar("s")
    z = nd.tanh(m * s + 1.0)
    f = nd.function([m, s], [z, nd.sum(z * z, keepdims=True)])
    args = [sample("float64", 12).reshape(3, 4), np.asarray(0.7)]
    check_function(compiled, f, args)
    kernel = f.kernels[0]
    layout = kernel_layout(kernel.op, [a.shape for a in kernel_inputs(f, kernel, args)])
    assert layout.loop_shape == (3, 4) and layout.size == 12
    assert layout.outputs[-1][1] == (1, 1)
    assert layout.scalar.count(False) == 1  # only the matrix is a flat array


def test_integer_kernel_wraps_like_numpy(compiled):
    """int8 arithmetic wraps at every member (as NumPy's does), comparisons see wrapped values, sums are int64."""
    xi = nd.vector("xi", dtype="int8")
    w = xi * xi + xi
    out = nd.where(w > 10, w, -w)
    f = nd.function([xi], [out, nd.sum(out), nd.sum(w > 0)])
    values = np.arange(-128, 128, dtype="int8")
    check_function(compiled, f, [values])


def test_non_contiguous_inputs(compiled):
    """A transposed (non-contiguous) input is read in the loop's C order, as NumPy does."""
    a, b = nd.matrix("a"), nd.matrix("b")
    f = nd.function([a, b], [nd.exp(a) * b + nd.sin(b)])
    left = sample("float64", 12).reshape(3, 4)
    right = sample("float64", 12, seed=2).reshape(4, 3).T
    check_function(compiled, f, [left, right])


# ---------------------------------------------------------------------------------------------------------------
# Structure only: constants are arguments
# ---------------------------------------------------------------------------------------------------------------
def test_constants_are_arguments_not_source(compiled):
    """Two kernels differing only in constants' values: identical source, one compiled module for both."""
    ops = []
    for scale, shift in ((2.0, 0.5), (-3.0, 0.25)):
        x = nd.vector("x")
        f = nd.function([x], [nd.sum(nd.tanh(x) * scale + shift)])
        (kernel,) = f.kernels
        ops.append((f, kernel))
    (f1, k1), (f2, k2) = ops
    source = cpu_module_source(k1.op, parallel=False, fastmath=False)
    assert source == cpu_module_source(k2.op, parallel=False, fastmath=False)
    body = source[source.index("def kernel(") :]  # the kernel itself (vmath's functions above have literals)
    assert "2.0" not in body and "0.25" not in body
    module = compiled(k1.op)
    assert compiled(k2.op) is module
    xv = sample("float64")
    for f, kernel in ops:
        arrays = kernel_inputs(f, kernel, [xv])
        assert_agrees(kernel.op, arrays, run_compiled(kernel.op, module, arrays))
    assert not np.allclose(f1(xv), f2(xv))


def test_module_name_depends_on_structure_and_flags():
    (kernel,) = w1_function().kernels
    (kernel32,) = w1_function("float32").kernels
    names = {
        module_name(op, parallel=p, fastmath=m)
        for op in (kernel.op, kernel32.op)
        for p in (False, True)
        for m in (False, True)
    }
    assert len(names) == 8 and all(name.isidentifier() for name in names)
    assert kernel.op.structural_hash() in module_name(kernel.op, parallel=False, fastmath=False)


def test_generating_source_does_not_import_numba():
    code = (
        "import json, sys; import nbdiff as nd; from nbdiff.backends.cpu_source import cpu_module_source; "
        "x = nd.vector('x'); f = nd.function([x], [nd.sum(nd.exp(x) * 2.0)]); "
        "cpu_module_source(f.kernels[0].op, parallel=True, fastmath=False); print(json.dumps('numba' in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout) is False


# ---------------------------------------------------------------------------------------------------------------
# Layouts the flat loop does not run
# ---------------------------------------------------------------------------------------------------------------
def test_partial_sum_is_not_supported():
    m = nd.matrix("m")
    f = nd.function([m], [nd.sum(nd.exp(m) * 2.0, axis=0)])
    (kernel,) = f.kernels
    shapes = [(3, 4), ()]
    assert not supports(kernel.op, shapes)
    assert "axes (0,)" in why_unsupported(kernel.op, shapes)
    with pytest.raises(UnsupportedKernel, match="not supported by this kernel layout"):
        cpu_module_source(kernel.op, parallel=False, fastmath=False)


def test_inputs_broadcast_along_some_axes_are_expanded():
    """A vector broadcast along a matrix's rows is expanded to the loop shape by the caller; a size-1 one is a
    scalar; a same-size one is read by the flat index as it is."""
    m, v = nd.matrix("m"), nd.vector("v")
    f = nd.function([m, v], [nd.exp(m + v) * 2.0])
    (kernel,) = f.kernels
    assert [i.label() for i in kernel.inputs][:2] == ["m", "v"]
    layout = kernel_layout(kernel.op, [(3, 4), (4,), ()])
    assert layout.expand[:2] == (False, True) and layout.scalar[:2] == (False, False)
    assert kernel_layout(kernel.op, [(3, 4), (1,), ()]).scalar[:2] == (False, True)
    same_size = kernel_layout(kernel.op, [(1, 4), (4,), ()])  # the same size: one flat index reads both
    assert not any(same_size.expand)
    assert "does not broadcast" in why_unsupported(kernel.op, [(3, 4), (5,), ()])
    assert not supports(kernel.op, [(3, 4), (4,)])  # too few inputs


def test_expanded_and_unsupported_inputs_in_run_compiled(compiled):
    m, v = nd.matrix("m"), nd.vector("v")
    f = nd.function([m, v], [nd.exp(m + v) * 2.0])
    (kernel,) = f.kernels
    op = kernel.op
    module = compiled(op)
    for row in (
        [sample("float64", 12).reshape(3, 4), sample("float64", 4)],
        [sample("float64", 12).reshape(3, 4), np.asarray([0.3])],
    ):
        arrays = kernel_inputs(f, kernel, row)
        assert supports(op, [a.shape for a in arrays])
        assert_agrees(op, arrays, run_compiled(op, module, arrays))
    arrays = kernel_inputs(f, kernel, [sample("float64", 12).reshape(3, 4), sample("float64", 4)])
    with pytest.raises(UnsupportedKernel, match="float32"):
        run_compiled(op, module, [a.astype("float32") for a in arrays])
    with pytest.raises(UnsupportedKernel, match="does not broadcast"):
        run_compiled(op, module, [arrays[0], np.ones(5), *arrays[2:]])


# ---------------------------------------------------------------------------------------------------------------
# Every registered elementwise op: its scalar code, compiled, against its perform
# ---------------------------------------------------------------------------------------------------------------
TABLE_DTYPES = ["float64", "float32", "int64", "int8", "uint8", "bool"]
FLOAT_TABLE = [-np.inf, -1000.0, -30.0, -3.5, -1.0, -0.5, -1e-20, -0.0, 0.0, 1e-20, 0.5, 1.0, 2.0, 3.5, 30.0]
FLOAT_TABLE += [88.5, 1000.0, np.inf, np.nan]
INT_TABLE = [-(2**63), -100, -7, -2, -1, 0, 1, 2, 3, 7, 100, 2**63 - 1]
# Inputs of the table kernel: x, y, z (every combination of the table's values), a small non-negative exponent
# (NumPy refuses negative integer powers), a value every dtype holds (for casts), a boolean condition.
X, Y, Z, EXPONENT, CASTABLE, CONDITION = range(6)


def table_values(dtype: str) -> list:
    if dtype == "bool":
        return [False, True]
    if is_float(dtype):
        return FLOAT_TABLE
    info = np.iinfo(dtype)
    return sorted({min(max(v, int(info.min)), int(info.max)) for v in INT_TABLE})


def table_inputs(dtype: str) -> list[np.ndarray]:
    grid = np.array(list(itertools.product(table_values(dtype), repeat=3))).T
    x, y, z = (np.asarray(column).astype(dtype) for column in grid)
    size = x.size
    exponent = (np.arange(size) % 4).astype(dtype)
    castable = (np.arange(size) % 101).astype(dtype)
    condition = np.arange(size) % 3 == 0
    return [x, y, z, exponent, castable, condition]


def table_members(dtype: str) -> list[tuple[str, Elemwise, tuple[int, ...]]]:
    """(label, op, input references) for every registered elementwise op (casts to every dtype) that accepts
    ``dtype``; ops whose type inference refuses it are left out, as NumPy has no loop for them."""
    members = []
    for name, cls in sorted(registered_ops().items()):
        if not issubclass(cls, Elemwise):
            continue
        ops = [(f"astype({target})", Cast(target)) for target in SUPPORTED_DTYPES] if cls is Cast else [(name, cls())]
        for label, op in ops:
            args = table_arguments(op, dtype)
            types = [TensorType("bool" if r == CONDITION else dtype, (None,)) for r in args]
            try:
                op.infer(*(nd.tensor(None, 1, t.dtype) for t in types))
            except DTypeError:
                continue
            members.append((label, op, args))
    return members


def table_arguments(op: Elemwise, dtype: str) -> tuple[int, ...]:
    """Which table inputs ``op`` reads."""
    if isinstance(op, Where):
        return (CONDITION, X, Y)
    if isinstance(op, Clip):
        return (X, Y, Z)
    if isinstance(op, Power) and not is_float(dtype):
        return (X, EXPONENT)
    if isinstance(op, Cast) and is_float(dtype) and not is_float(op.dtype):
        return (CASTABLE,)  # NaN, infinities and out-of-range floats have no defined integer value
    return (X, Y, Z)[: op.nin]


def table_op(dtype: str) -> tuple[FusedElemwise, list[str]]:
    """One fused op with one member (and one output) per table row: one compilation per dtype."""
    members = table_members(dtype)
    n = 6
    kinds = tuple(("bool" if r == CONDITION else dtype, 1) for r in range(n))
    program = tuple(Instruction(op, args) for _, op, args in members)
    op = FusedElemwise(kinds, program, tuple(range(n, n + len(program))), (None,) * len(program))
    return op, [label for label, _, _ in members]


def within_vmath_range(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The table's elements whose values vmath's sin and cos take (``|x| <= SIN_COS_LIMIT`` or not finite): beyond,
    a kernel leaves the step to NumPy (``test_vmath.py`` tests that)."""
    keep = np.ones(arrays[0].shape, dtype=bool)
    for array in arrays[:3]:
        values = np.abs(array.astype(np.float64))
        keep &= (values <= SIN_COS_LIMIT) | ~np.isfinite(values)
    return [array[keep] for array in arrays]


@pytest.mark.parametrize("math", ["nbdiff", "libm"])
@pytest.mark.parametrize("dtype", TABLE_DTYPES)
def test_every_scalar_code_agrees_with_perform(compiled, dtype, math):
    op, labels = table_op(dtype)
    arrays = table_inputs(dtype)
    if math == "nbdiff":
        arrays = within_vmath_range(arrays)
    got = run_compiled(op, compiled(op, math=math), arrays)
    with np.errstate(all="ignore"):
        expected = op.perform(*arrays)
    disagreements = []
    for label, value, reference in zip(labels, got, expected):
        try:
            assert (value.dtype, value.shape) == (reference.dtype, reference.shape)
            if is_float(reference.dtype.name):
                np.testing.assert_allclose(value, reference, rtol=TOLERANCE[reference.dtype.name], atol=0)
            else:
                np.testing.assert_array_equal(value, reference)
        except AssertionError as exc:
            disagreements.append(f"{label}: {exc}")
    assert not disagreements, "\n".join(disagreements)
    assert len(labels) >= (30 if is_float(dtype) else 15)

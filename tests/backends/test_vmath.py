"""nbdiff's vectorisable math (``nbdiff.backends.vmath``): each function within its documented ulp bound on a sweep,
special values exactly as NumPy, kernels calling them agreeing with the interpreter, and their loops vectorised."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cache, vmath, vmath_library
from nbdiff.backends.cpu import plan_units
from nbdiff.backends.cpu_source import cpu_module_source, module_name
from nbdiff.config import option_context
from nbdiff.errors import BackendError
from nbdiff.rewrite.fusion import kernels_of

pytest.importorskip("numba")

DTYPES = ("float64", "float32")
SWEEP = {  # (low, high) of a uniform sweep per function, beside the common ones of ``sweep``
    "exp": (-750.0, 720.0),
    "log": (0.0, 1e6),
    "log1p": (-1.0, 1e3),
    "expm1": (-50.0, 720.0),
    "tanh": (-25.0, 25.0),
    "sin": (-1e4, 1e4),
    "cos": (-1e4, 1e4),
    "sigmoid": (-750.0, 750.0),
    "softplus": (-750.0, 750.0),
    "erf": (-7.0, 7.0),
}
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-310, -1e-310, 1e-45, -1e-45, 1e-30, 2.0**-1022]
LIMITS = [709.78, 709.79, 710.0, -745.1, -745.2, 88.72, 88.73, -103.9, -104.0, 1.0, -1.0, -1.0 + 2.0**-52, 1e300]


def sweep(name: str, dtype: str, size: int = 50_000) -> np.ndarray:
    """A uniform sweep over the function's range, standard normals, small values and magnitudes across exponents."""
    rng = np.random.default_rng(1)
    low, high = SWEEP[name]
    magnitudes = np.exp(rng.uniform(-700, 6, size)) * rng.choice([-1.0, 1.0], size)
    parts = [rng.uniform(low, high, size), rng.standard_normal(size), rng.standard_normal(size) * 1e-3, magnitudes]
    with np.errstate(over="ignore"):
        return np.concatenate(parts).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", vmath.MATH_FUNCTIONS)
def test_within_documented_ulps(name, dtype):
    """float32 against the float64 reference (exact to float32); float64 against NumPy, itself within 1 ulp of the
    correctly rounded value, so the bound against it is the documented one plus 1."""
    x = sweep(name, dtype)
    got = vmath.array_function(name, dtype)(x)
    if dtype == "float32":
        expected = vmath.numpy_reference(name, x.astype(np.float64))
        bound = vmath.ULP_BOUNDS[name, dtype]
    else:
        expected = vmath.numpy_reference(name, x)
        bound = vmath.ULP_BOUNDS[name, dtype] + 1
    finite = np.isfinite(expected) & (np.abs(expected) <= float(np.finfo(dtype).max))
    errors = vmath.ulp_errors(got, expected, dtype)
    worst = int(np.argmax(errors))
    assert errors[worst] <= bound, f"{name} {dtype}: {errors[worst]:.2f} ulp at x={x[finite][worst]!r}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", vmath.MATH_FUNCTIONS)
def test_special_values_as_numpy(name, dtype):
    """NaN, infinities, signed zeros, subnormals and the overflow and underflow limits give NumPy's values: the
    same non-finite values, zeros with NumPy's sign, and results that NumPy rounds to a non-finite value or zero
    (the limits) are those too."""
    with np.errstate(over="ignore"):
        x = np.array(SPECIALS + LIMITS + [-v for v in LIMITS], dtype=dtype)
    if name in ("sin", "cos"):
        x = x[~(np.abs(x) > vmath.SIN_COS_LIMIT) | np.isinf(x)]  # beyond the documented range: NaN, tested below
    got = vmath.array_function(name, dtype)(x)
    expected = vmath.numpy_reference(name, x)
    special = ~np.isfinite(expected) | (expected == 0)
    assert np.array_equal(got[special], expected[special], equal_nan=True), (x[special], got[special])
    signed = special & ~np.isnan(expected)  # NaN's sign is not NumPy's promise either
    assert np.array_equal(np.signbit(got[signed]), np.signbit(expected[signed])), x[signed]
    assert np.all(np.isfinite(got[~special])), x[~special][~np.isfinite(got[~special])]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sin_cos_documented_range(dtype):
    """sin and cos keep their bound up to ``SIN_COS_LIMIT`` (the exact reduction's range)."""
    x = np.random.default_rng(2).uniform(-vmath.SIN_COS_LIMIT, vmath.SIN_COS_LIMIT, 50_000).astype(dtype)
    for name in ("sin", "cos"):
        got = vmath.array_function(name, dtype)(x)
        expected = vmath.numpy_reference(name, x.astype(np.float64))
        bound = vmath.ULP_BOUNDS[name, dtype] + (1 if dtype == "float64" else 0)
        assert vmath.ulp_errors(got, expected, dtype).max() <= bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_sin_cos_beyond_range_are_nan(dtype):
    """Beyond ``SIN_COS_LIMIT`` sin and cos give NaN, never a wrong number (the agreement check then falls back)."""
    x = np.array([2e8, -3e9, 1e30, 3e38], dtype=dtype)
    for name in ("sin", "cos"):
        assert np.all(np.isnan(vmath.array_function(name, dtype)(x)))


def test_loops_vectorise():
    """A loop calling each function compiles to vector instructions (LLVM vectorised it: no libm call left)."""
    for name in vmath.MATH_FUNCTIONS:
        for dtype, element in (("float64", "double"), ("float32", "float")):
            apply = vmath.array_function(name, dtype).apply
            apply(np.ones(4, dtype), np.empty(4, dtype))
            llvm = apply.inspect_llvm(apply.signatures[0])
            assert re.search(rf"<\d+ x {element}>", llvm), f"{name} {dtype}: the loop was not vectorised"
            assert not re.search(r"call [^(]*@\S*vm_", llvm), f"{name} {dtype}: a vmath function was not inlined"


def w1_graph(dtype: str):
    x = nd.vector("x", dtype=dtype)
    y = nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))
    return x, y, nd.grad(y, x)


def test_fused_kernel_module_vectorises(tmp_path):
    """W1's value-and-gradient kernel (serial module) compiles to vector code with no call in its loop."""
    x, y, g = w1_graph("float64")
    (kernel,) = kernels_of(nd.function([x], [y, g], backend="numpy").graph)
    name = module_name(kernel.op, parallel=False, fastmath=False)
    path = tmp_path / f"{name}.py"
    path.write_text(cpu_module_source(kernel.op, parallel=False, fastmath=False))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        values = np.linspace(-3, 3, 64)
        module.kernel(64, values, 3.0, 1.0, 2.0, np.zeros(1), np.empty(64))
        signature = module.kernel.signatures[0]
        llvm = module.kernel.inspect_llvm(signature)
        assert re.search(r"<\d+ x double>", llvm)
        assert "vm_" in path.read_text() and "accumulate(acc0" in path.read_text()
    finally:
        del sys.modules[name]


def kernel_module(folder, graph_outputs, parallel: bool = False, fastmath: bool = False):
    """The first fused kernel of ``graph_outputs`` (inputs, outputs) written to ``folder`` and imported as nbdiff
    imports kernel modules (``cache.import_module_from``)."""
    (kernel, *_) = kernels_of(nd.function(*graph_outputs, backend="numpy").graph)
    name = module_name(kernel.op, parallel=parallel, fastmath=fastmath)
    path = cache.write_module(folder, name, cpu_module_source(kernel.op, parallel=parallel, fastmath=fastmath))
    return cache.import_module_from(path, name)


def test_kernel_modules_share_one_compiled_library(tmp_path):
    """Kernel modules bind their vmath functions from one library module beside them (defining none themselves),
    so Numba compiles each function once per process whichever kernels call it: here exp, for two kernels."""
    folder = cache.private_folder(tmp_path / "kernels")
    x = nd.vector("x")
    first = kernel_module(folder, ([x], [nd.sum(nd.exp(x) * x)]))
    second = kernel_module(folder, ([x], [nd.exp(-x) + x]))  # exp alone: a one-name binding
    for module in (first, second):
        text = open(module.__file__).read()
        assert "_vmath_functions(__file__" in text and "def vm_" not in text
    assert first.vm_exp_f64 is second.vm_exp_f64
    values = np.linspace(-2, 2, 100)
    total = np.zeros(1)
    first.kernel(100, values, total)
    out = np.empty(100)
    second.kernel(100, values, out)
    np.testing.assert_allclose(total[0], np.sum(np.exp(values) * values), rtol=1e-13)
    np.testing.assert_allclose(out, np.exp(-values) + values, rtol=1e-15)
    assert len(first.vm_exp_f64.overloads) == 1
    libraries = [p.name for p in folder.iterdir() if p.name.startswith(vmath_library.LIBRARY_PREFIX)]
    assert libraries == [vmath_library.library_name(True) + ".py"]


def test_a_fastmath_kernel_uses_the_library_without_forced_inlining(tmp_path):
    """A kernel with fast-math flags binds from the other library, whose softplus is not inlined into its IR."""
    folder = cache.private_folder(tmp_path / "kernels")
    x = nd.vector("x")
    module = kernel_module(folder, ([x], [nd.softplus(x) * 3]), fastmath=True)
    assert vmath_library.library_name(False) in open(module.__file__).read()
    assert 'inline="always"' not in vmath_library.library_source(False)
    assert 'inline="always"' in vmath_library.library_source(True)
    values = np.linspace(-30, 30, 50)
    out = np.empty(50)
    module.kernel(50, values, 3.0, out)
    np.testing.assert_allclose(out, np.logaddexp(0, values) * 3, rtol=1e-12)


def test_a_standalone_module_defines_what_it_called_from_the_library(tmp_path):
    """A reproducer's text (``standalone``) defines the functions in place of the binding and imports no nbdiff;
    it runs in a fresh interpreter that cannot import nbdiff."""
    x = nd.vector("x")
    (kernel,) = kernels_of(nd.function([x], [nd.sum(nd.tanh(x) + nd.softplus(x))], backend="numpy").graph)
    source = cpu_module_source(kernel.op, parallel=False, fastmath=False)
    text = vmath_library.standalone(source)
    assert "nbdiff" not in text.replace("nbdiff.backends.cpu_source", "").split('"""', 2)[2]
    assert "def vm_tanh_f64" in text and "def vm_softplus_f64" in text and "def accumulate" in text
    script = tmp_path / "kernel.py"
    script.write_text(text + "\nv = np.linspace(-3, 3, 7)\nt = np.zeros(1)\nkernel(7, v, t)\nprint(float(t[0]))\n")
    done = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=120, check=True)
    v = np.linspace(-3, 3, 7)
    assert float(done.stdout) == pytest.approx(np.sum(np.tanh(v) + np.logaddexp(0, v)), rel=1e-13)


def test_a_kernel_naming_an_unknown_library_fails_to_import_with_the_reason(tmp_path):
    folder = cache.private_folder(tmp_path / "kernels")
    with pytest.raises(ImportError, match="no vmath library nbdiff_vmath_0000.*another version of nbdiff"):
        vmath_library.functions(str(folder / "nbdiff_kernel_x.py"), "nbdiff_vmath_0000", ("vm_exp_f64",))


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_kernel_agrees_with_interpreter(dtype):
    """A fused kernel using every function (and its gradient) under math="nbdiff" passes the agreement check and
    answers as the interpreter does, within the dtype's tolerance."""
    x = nd.vector("x", dtype=dtype)
    terms = [
        nd.exp(-(x**2)),
        nd.log(x**2 + 1),
        nd.log1p(x**2),
        nd.expm1(x / 4),
        nd.tanh(x),
        nd.sin(3 * x),
        nd.cos(x),
        nd.sigmoid(x),
        nd.softplus(x),
        nd.erf(x),
    ]
    y = nd.sum(sum(terms[1:], terms[0]))
    outputs = [y, nd.grad(y, x), terms[4] * terms[7]]
    xv = np.random.default_rng(3).standard_normal(20_000).astype(dtype) * 3
    f = nd.function([x], outputs, backend="cpu", math="nbdiff")
    f(xv)
    assert f.wait(300) == "compiled", f.status
    got = f(xv)
    assert f.backend == "cpu"
    expected = nd.function([x], outputs, backend="numpy")(xv)
    rtol = 1e-9 if dtype == "float64" else 1e-4
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
    assert any("vm_tanh" in m.source for u in plan_units(f, False, None) for m in u.modules)


def test_sin_beyond_range_in_a_kernel_is_computed_by_numpy():
    """A kernel whose sin or cos meets a finite ``|x| > SIN_COS_LIMIT`` leaves that call's step to the op's
    ``perform`` (NumPy): the function still answers as the interpreter does."""
    x = nd.vector("x")
    outputs = [nd.sin(x) * 2 + nd.cos(x), nd.sum(nd.sin(x))]
    f = nd.function([x], outputs, backend="cpu")
    values = np.linspace(-5, 5, 101)
    f(values)
    assert f.wait(300) == "compiled", f.status
    huge = values.copy()
    huge[7] = 3e12
    expected = nd.function([x], outputs, backend="numpy")(huge)
    got = f(huge)
    assert f.backend == "cpu"
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_fastmath_kernel_agrees_with_interpreter():
    """Under ``fastmath=True`` the vmath functions are compiled apart from the kernel (their rounding tricks do not
    survive ``reassoc``), so W1's fast-math kernel still agrees with the interpreter."""
    x, y, g = w1_graph("float64")
    (kernel,) = kernels_of(nd.function([x], [nd.softplus(x) * 2 + x], backend="numpy").graph)
    assert vmath_library.library_name(False) in cpu_module_source(kernel.op, parallel=False, fastmath=True)
    assert vmath_library.library_name(True) in cpu_module_source(kernel.op, parallel=False, fastmath=False)
    f = nd.function([x], [y, g], backend="cpu", fastmath=True)
    xv = np.random.default_rng(4).uniform(-2, 2, 5_000)
    f(xv)
    assert f.wait(300) == "compiled", f.status
    got = f(xv)
    expected = nd.function([x], [y, g], backend="numpy")(xv)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max())


def test_libm_choice_and_cache_key():
    """math="libm" generates the op's scalar code (libm calls) in modules of their own names; a bad choice is a
    typed error."""
    x, y, g = w1_graph("float64")
    f = nd.function([x], [y, g], backend="numpy")
    ours = plan_units(f, False, None, math="nbdiff")
    libm = plan_units(f, False, None, math="libm")
    ours_modules = [m for u in ours for m in u.modules]
    libm_modules = [m for u in libm for m in u.modules]
    assert {m.name for m in ours_modules}.isdisjoint(m.name for m in libm_modules)
    assert all("vm_" not in m.source and "math.tanh(" in m.source for m in libm_modules)
    assert all("vm_tanh_f64(" in m.source for m in ours_modules)
    with pytest.raises(BackendError, match="math must be one of"):
        nd.function([x], y, backend="numpy", math="fast")
    with pytest.raises(ValueError, match="math must be one of"):
        with option_context(math="fast"):
            pass


def test_cuda_kernels_keep_libdevice_math():
    """The target-neutral scalar body (what the CUDA target emits) calls ``math``, never vmath."""
    from nbdiff.backends.codegen import scalar_body

    x, y, g = w1_graph("float32")
    (kernel,) = kernels_of(nd.function([x], [y, g], backend="numpy").graph)
    body = "\n".join(scalar_body(kernel.op))
    assert "math.tanh(" in body and "vm_" not in body

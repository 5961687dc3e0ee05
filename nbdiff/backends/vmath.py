"""nbdiff's vectorisable math for compiled CPU kernels: which functions there are, and their text for a kernel module.

Numba compiles ``math.exp`` and its kin to calls of the scalar libm (llvmlite ships no vector math library), and a
call in a loop stops LLVM from vectorising it. Under ``math="nbdiff"`` (the default; ``nd.function(...,
math="libm")`` or ``NBDIFF_MATH=libm`` for libm) a CPU kernel calls the branch-free functions of
``vmath_source.py`` instead (and ``erf``, generated here from the Chebyshev pieces of ``nbdiff.ops.special``), so
its loop vectorises; a trailing sum then accumulates with ``bits.accumulate`` so it vectorises too.

An elementwise op names its function here with ``math_name`` (``Exp.math_name = "exp"``); ``codegen.scalar_body``
calls ``function_name(name, dtype)`` for it and ``definitions`` gives the module lines that define what a kernel
calls (copied from the two source files, so a kernel module compiles with Numba and NumPy alone, and its text, hence
Numba's cache of it, changes whenever these functions do). ``array_function`` compiles one of them over arrays, for
tests and the accuracy benchmark (``benchmarks/bench_math_accuracy.py``), from the same text.

``ULP_BOUNDS`` is the documented accuracy: the largest error, in units in the last place of the result's dtype
against a correctly rounded reference, over the benchmark's sweeps (``docs/architecture.md`` has the table); the
tests hold every function to it. ``SIN_COS_LIMIT`` is the range of ``|x|`` over which sin and cos reduce exactly.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from typing import Callable, Iterable

import numpy as np

MATH_FUNCTIONS = ("exp", "log", "log1p", "expm1", "tanh", "sin", "cos", "sigmoid", "softplus", "erf")
DTYPE_SUFFIX = {"float64": "f64", "float32": "f32"}
SIN_COS_LIMIT = 1.05e8  # |x| up to which sin and cos reduce by pi/2 exactly (|q| < 2**26); beyond: NaN
RANGE_LIMITS = {"sin": SIN_COS_LIMIT, "cos": SIN_COS_LIMIT}  # finite |x| beyond: kernels leave the step to NumPy
ACCUMULATE = "accumulate"  # the reassociable add of a trailing sum (``bits.accumulate``)
INLINE = ', inline="always"'  # in each function's decorator: dropped for fast-math callers (``definitions``)
IMPORT_LINES = ("from llvmlite import ir", "from numba import types", "from numba.extending import intrinsic")
SOURCE_MODULES = ("nbdiff.backends.bits", "nbdiff.backends.vmath_source")

# Max error in ulps over bench_math_accuracy.py's sweeps (see docs/architecture.md), with a little headroom.
ULP_BOUNDS: dict[tuple[str, str], float] = {
    ("exp", "float64"): 2,
    ("exp", "float32"): 2,
    ("log", "float64"): 2,
    ("log", "float32"): 2,
    ("log1p", "float64"): 2,
    ("log1p", "float32"): 2,
    ("expm1", "float64"): 3,
    ("expm1", "float32"): 3,
    ("tanh", "float64"): 4,
    ("tanh", "float32"): 4,
    ("sin", "float64"): 2,
    ("sin", "float32"): 2,
    ("cos", "float64"): 2,
    ("cos", "float32"): 2,
    ("sigmoid", "float64"): 3,
    ("sigmoid", "float32"): 3,
    ("softplus", "float64"): 3,
    ("softplus", "float32"): 3,
    ("erf", "float64"): 4,
    ("erf", "float32"): 4,
}


def supports(name: str | None, dtype: str) -> bool:
    """Whether there is a vectorisable ``name`` for values of ``dtype``."""
    return name in MATH_FUNCTIONS and dtype in DTYPE_SUFFIX


def function_name(name: str, dtype: str) -> str:
    """The name a kernel calls for math function ``name`` on ``dtype`` values: ``vm_exp_f64``."""
    return f"vm_{name}_{DTYPE_SUFFIX[dtype]}"


def all_names() -> list[str]:
    """Every function a kernel may call (each ``function_name`` and ``ACCUMULATE``): a shared library's contents."""
    return [function_name(name, dtype) for name in MATH_FUNCTIONS for dtype in DTYPE_SUFFIX] + [ACCUMULATE]


def check_name(name: str) -> None:
    """``KeyError`` unless ``name`` is a function of the vmath text."""
    if name not in _blocks():
        raise KeyError(f"vmath has no function {name!r}")


def definitions(names: Iterable[str], inline: bool = True) -> list[str]:
    """The module lines defining the functions ``names`` (as ``function_name`` gives them, or ``ACCUMULATE``) and
    everything they call, in source order, after the imports the bit intrinsics need; none for no names.

    ``inline=True`` keeps ``inline="always"`` where a function has it (softplus and erf: LLVM's inliner declined
    them and left calls that stop vectorisation; the others are left to LLVM, which inlines them and keeps their
    own IEEE semantics, and compile several times faster in a ``parallel=True`` kernel than inlined into its Numba
    IR). Code inlined into the caller's IR compiles with the caller's flags; ``inline=False`` is for callers with
    fast-math flags, which would break these functions (``reassoc`` folds ``(y + 1.5 * 2**52) - 1.5 * 2**52`` to
    ``y`` and ``x - (u - 1)`` to ``x - u + 1``): softplus and erf then stay calls in such a kernel."""
    blocks = _blocks()
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        check_name(name)
        wanted.add(name)
        pending += blocks[name][1]
    if not wanted:
        return []
    lines = list(IMPORT_LINES) + ["", ""]
    for name, (text, _) in blocks.items():
        if name in wanted:
            text = text if inline else text.replace(INLINE, "")
            lines += [*text.splitlines(), "", ""]
    return lines


@functools.cache
def _blocks() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every definition by name, in source order: its text (decorators included) and the names it uses."""
    texts: list[str] = []
    for module in SOURCE_MODULES:
        spec = importlib.util.find_spec(module)  # read as text: nbdiff itself never imports Numba to generate code
        assert spec is not None and spec.origin is not None
        with open(spec.origin, encoding="utf-8") as file:
            texts.append(file.read())
    texts += [erf_source("float64"), erf_source("float32")]
    found: dict[str, tuple[str, set[str]]] = {}
    for text in texts:
        lines = text.splitlines()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                found[node.name] = ("\n".join(lines[first - 1 : node.end_lineno]), used)
    return {name: (text, tuple(sorted(used & found.keys() - {name}))) for name, (text, used) in found.items()}


# ---------------------------------------------------------------------------------------------------------------
# erf, from nbdiff.ops.special's pieces
# ---------------------------------------------------------------------------------------------------------------
ERF_F32_CUTOFF = 2.0**-28  # float32 keeps the Chebyshev coefficients above this (relative to the largest)


def erf_source(dtype: str) -> str:
    """The text of ``vm_erf_<f64|f32>``: ``special.erf``'s pieces (``x S(x**2)`` below 1, ``1 - exp(-x**2) G(x)``
    on three intervals up to 6, 1 beyond), every piece evaluated and the right one selected (no branch)."""
    from nbdiff.ops.special import _ONE_LIMIT, _SMALL_LIMIT, _pieces

    small, tails = _pieces()
    suffix = DTYPE_SUFFIX[dtype]

    def lit(value: float) -> str:
        return repr(float(value)) if dtype == "float64" else f"np.float32({float(value)!r})"

    lines = [
        '@numba.njit(fastmath=False, error_model="numpy", inline="always")',
        f"def vm_erf_{suffix}(x):",
        f'    """erf(x), {dtype}: nbdiff.ops.special\'s Chebyshev pieces, evaluated branch-free."""',
        "    a = abs(x)",
        "    u = a * a",
        f"    us = {lit(_SMALL_LIMIT**2)} if u > {lit(_SMALL_LIMIT**2)} else u",
    ]
    lines += _clenshaw_lines("small", _kept(small, dtype), "us", 0.0, _SMALL_LIMIT**2, lit)
    for i, (low, high, coefficients) in enumerate(tails):
        lines.append(f"    a{i} = {lit(low)} if a < {lit(low)} else ({lit(high)} if a > {lit(high)} else a)")
        lines += _clenshaw_lines(f"tail{i}", _kept(coefficients, dtype), f"a{i}", low, high, lit)
    lines += [
        f"    tail = tail0 if a < {lit(tails[0][1])} else (tail1 if a < {lit(tails[1][1])} else tail2)",
        f"    outer = {lit(1.0)} - vm_exp_{suffix}(-u) * tail",
        f"    r = a * small if a < {lit(_SMALL_LIMIT)} else outer",
        f"    r = {lit(1.0)} if a >= {lit(_ONE_LIMIT)} else r",
        "    return math.copysign(r, x)",
    ]
    return "\n".join(lines) + "\n"


def _kept(coefficients: np.ndarray, dtype: str) -> np.ndarray:
    """The coefficients worth evaluating in ``dtype`` (float32 drops those below ``ERF_F32_CUTOFF``)."""
    if dtype == "float64":
        return coefficients
    keep = np.nonzero(np.abs(coefficients) >= ERF_F32_CUTOFF * np.max(np.abs(coefficients)))[0]
    return coefficients[: keep[-1] + 1]


def _clenshaw_lines(
    name: str, coefficients: np.ndarray, at: str, low: float, high: float, lit: Callable[[float], str]
) -> list[str]:
    """Lines computing ``name``, the Chebyshev series on ``[low, high]`` at ``at``, by Clenshaw's recurrence."""
    lines = [
        f"    s_{name} = ({lit(2.0)} * {at} - {lit(low + high)}) * {lit(1.0 / (high - low))}",
        f"    w_{name} = s_{name} + s_{name}",
        f"    b1_{name} = {lit(0.0)}",
        f"    b2_{name} = {lit(0.0)}",
    ]
    for c in coefficients[:0:-1]:
        lines += [
            f"    b0_{name} = w_{name} * b1_{name} - b2_{name} + {lit(c)}",
            f"    b2_{name} = b1_{name}",
            f"    b1_{name} = b0_{name}",
        ]
    lines.append(f"    {name} = s_{name} * b1_{name} - b2_{name} + {lit(coefficients[0])}")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Compiled over arrays, and measured (tests, benchmarks)
# ---------------------------------------------------------------------------------------------------------------
@functools.cache
def array_function(name: str, dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """``name`` on ``dtype`` compiled over 1-d arrays from the text kernels get (``f(x) -> new array``)."""
    function = function_name(name, dtype)
    source = "\n".join(
        ["import math", "import numba", "import numpy as np", "", ""]
        + definitions([function])
        + [
            '@numba.njit(error_model="numpy")',
            "def apply(x, out):",
            "    for i in range(x.size):",
            f"        out[i] = {function}(x[i])",
        ]
    )
    namespace: dict[str, object] = {}
    exec(compile(source, f"<nbdiff vmath {function}>", "exec"), namespace)  # noqa: S102 - our own generated text
    apply = namespace["apply"]

    def call(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=dtype).reshape(-1)
        out = np.empty_like(x)
        apply(x, out)  # type: ignore[operator]
        return out

    call.apply = apply  # type: ignore[attr-defined]  # the Numba dispatcher, for inspect_llvm / inspect_asm
    return call


def numpy_reference(name: str, x: np.ndarray) -> np.ndarray:
    """The interpreter's values of math function ``name`` on ``x``: the NumPy function of the op whose
    ``math_name`` it is (``np.exp``, ``nbdiff.ops.special.erf``, the ops' own sigmoid and softplus)."""
    from nbdiff.ops import elemwise

    for op in vars(elemwise).values():
        if isinstance(op, type) and issubclass(op, elemwise.Elemwise) and op.math_name == name:
            with np.errstate(all="ignore"):
                return np.asarray(op.numpy_fn(x))
    raise KeyError(f"no elementwise op has math_name {name!r}")


def ulp_errors(got: np.ndarray, expected: np.ndarray, dtype: str) -> np.ndarray:
    """``|got - expected|`` in units in the last place of ``expected`` in ``dtype`` (the smallest subnormal below
    the normal range), where ``expected`` is finite and within ``dtype``'s range."""
    info = np.finfo(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    keep = np.isfinite(expected) & (np.abs(expected) <= float(info.max))
    spacing = np.spacing(np.abs(expected[keep]).astype(dtype)).astype(np.float64)
    spacing = np.maximum(spacing, float(info.smallest_subnormal))
    return np.abs(np.asarray(got)[keep].astype(np.float64) - expected[keep]) / spacing

"""The compiled CPU backend (``backend="cpu"``: Numba kernels compiled in a background worker process) against NumPy
by hand, hand-fused Numba kernels and the peers (PyTensor, JAX, PyTorch), in one run.

Workloads (each contestant's values are checked before it is timed; medians of round-robin samples, ratios to the
workload's reference from the same run) and acceptance points, printed as PASS/FAIL verdicts:
  W1     value + gradient of sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x)), n = 1e3, 1e5, 1e7.
         Reference: a hand-fused Numba kernel (parallel=True, prange, one loop for the value-sum and the gradient).
         Acceptance: nbdiff compiled at n = 1e7 within 1.1x of it; and (issue 14) at most 1.0x torch.compile's
         time and at most 0.6x the hand-fused kernel's (its loop calls libm; nbdiff's calls its vectorised math).
         Issue 14 also: at n = 1e3, nbdiff compiled at most 0.6x NumPy by hand (the per-call overhead).
  W1F32  W1 in float32 (inputs, every step and the outputs; sums accumulate as each library does), n = 1e5, 1e7.
         Reference: the hand-fused Numba kernel in float32 (libm's float32 functions). Acceptance (issue 14, item 1,
         as for W1 at 1e7): nbdiff compiled at most 1.0x torch.compile's time and at most 0.6x the hand-fused kernel.
  W2     float32 MLP step 256x784 -> 256 relu -> 10, softmax cross-entropy, gradients of all four parameters (the
         step of bench_interpreter.py). Reference: NumPy by hand. Acceptance (issue 14): nbdiff compiled at most
         1.0x NumPy by hand and at most the best peer's time (the fastest PyTensor, JAX or PyTorch row).
  W3     per-call overhead on scalars: a*b + sin(a) and its gradient w.r.t. a and b, called with Python floats.
         Reference: the same value and gradient computed by NumPy calls (np.sin, np.cos on Python floats); one
         np.sin call is printed for scale. Acceptance: within 6x of the reference and under 3 us.
  W4     Hessian-vector product of W1 at n = 1e5 (nd.Rop(nd.grad(y, x), x, v)). Reference: a hand-fused Numba HVP
         kernel (second derivative derived by hand, checked against nbdiff). Acceptance: within 1.3x of it, and
         (issue 14) at most torch.compile's time (torch.compile of torch.func.jvp(torch.func.grad(f))).
  W5     fresh processes, W1 at n = 1e5: time from process start to the first answer and to an answer from compiled
         code, cold cache (a fresh NBDIFF_CACHE_DIR) and warm (the same folder again), against a process that
         imports NumPy and computes W1 by hand. Acceptance: first answer within 4x of the NumPy process; compiled
         within 5 s of nd.function() cold; warm, compiled within 1 s of the first answer. For reference (skip with
         --no-compile-refs): PyTensor's compile of the W2 step with a fresh compiledir, torch.compile's and
         jax.jit's first call of W1.
  STALL  in a fresh process, a main-thread loop of small NumPy work (np.sum of 1,000 floats) runs while a W1
         function compiles with a cold cache; the largest gap between iterations, against the same loop with
         nothing compiling and against a control: the loop beside a thread of plain Python busy work (no nbdiff,
         the same 1 ms GIL switch interval), which shows what this machine does to any two threads sharing the
         GIL. Five runs (one with --quick). Acceptance: in the median run, no gap over 20 ms (the worst run is
         printed too, with its baseline: on this VM the idle loop itself loses 20-40 ms now and then).

Peers are optional (``pip install -e ".[bench]"``): a missing one prints "not installed". PyTensor runs in two
modes: "NUMBA" (its default linker in PyTensor 3, as is FAST_RUN's) and "CVM" (the C backend: C thunks in the C VM).
JAX and PyTorch get their arrays made once before timing (jax.device_put, torch.from_numpy) and their results are
not converted back; NumPy arrays go in and out of nbdiff, NumPy and the Numba kernels. torch.compile's and PyTensor's
compiles happen before timing and are not in the figures (except W5's compile-time references). This process uses
nbdiff's default cache folder (or NBDIFF_CACHE_DIR); the fresh processes get fresh temporary ones.

Run: ``python benchmarks/bench_cpu.py`` (``--quick``: 5 repeats instead of 21 and one fresh-process run instead of
three; ``--json PATH``; ``--no-peers``; ``--only W1,W3``; ``--no-compile-refs``; ``--threads N`` for every library's
thread pool, which on a small shared machine keeps spinning BLAS/OpenMP threads from distorting the figures).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any, Callable

import numba
import numpy as np
from bench_interpreter import mlp_args, mlp_numpy, mlp_outputs, w1_graph, w1_hvp_numpy, w1_numpy, w1_second_derivative
from bench_rewrites import pt_hvp_pushforward, pt_mlp, pt_w1, w1_expression
from common import format_seconds, interleaved_many, machine_info, repeated

import nbdiff as nd

WORKLOADS = ("W1", "W1F32", "W2", "W3", "W4", "W5", "STALL")
W1F32_SIZES = (100_000, 10_000_000)
W1_SIZES = (1_000, 100_000, 10_000_000)
HVP_SIZE = 100_000
FRESH_SIZE = 100_000
COMPILE_TIMEOUT_S = 300.0  # the longest wait for nbdiff's background compile in this process
CHILD_TIMEOUT_S = 600.0  # the longest a fresh child process may take
STALL_LIMIT_S = 0.020
HERE = os.path.dirname(os.path.abspath(__file__))
PYTENSOR_MODES = {"Numba": "NUMBA", "C": "CVM"}  # PyTensor 3: FAST_RUN links with Numba; "CVM" is the C backend
Call = Callable[[], Any]


class Unavailable(Exception):
    """A contestant that does not run here (not installed, skipped, not compiled, failed): its row says why."""


class WrongValues(RuntimeError):
    """A contestant computed wrong values: the benchmark stops rather than time it."""


# -- peers --------------------------------------------------------------------------------------------------------
_peer_settings = {"enabled": True}


def need(module: str) -> Any:
    """Import a peer library for a contestant, or raise ``Unavailable`` (not installed, or ``--no-peers``)."""
    if not _peer_settings["enabled"]:
        raise Unavailable("skipped (--no-peers)")
    try:
        imported = importlib.import_module(module)
    except ImportError:
        raise Unavailable("not installed") from None
    if module == "jax":
        imported.config.update("jax_enable_x64", True)  # float64 like every other contestant
    return imported


def peer_versions() -> dict[str, str | None]:
    """Versions of the compilers compared (None: not installed)."""
    versions: dict[str, str | None] = {"numba": numba.__version__}
    for name in ("pytensor", "jax", "torch"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = None
    return versions


_pytensor_functions: dict[tuple[str, str], Any] = {}


def pytensor_call(build: Callable[[], tuple[list, list]], mode: str, *args: Any) -> Call:
    """A call of the PyTensor function of the builder's graph in ``mode`` (compiled once per builder and mode,
    outside any timing)."""
    pytensor = need("pytensor")
    key = (build.__name__, mode)
    if key not in _pytensor_functions:
        with warnings.catch_warnings():  # PyTensor's deprecation notes and Numba performance hints
            warnings.simplefilter("ignore")
            inputs, outputs = build()
            _pytensor_functions[key] = pytensor.function(inputs, outputs, mode=mode)
    fn = _pytensor_functions[key]
    with warnings.catch_warnings():  # the first call with these arguments may compile (Numba mode): its hints too
        warnings.simplefilter("ignore")
        fn(*args)
    return lambda: fn(*args)


# -- checking -------------------------------------------------------------------------------------------------------
def check_close(label: str, got: Any, expected: Any, rtol: float, atol: float) -> None:
    """Raise ``WrongValues`` unless the outputs match in number, shape and value."""
    got, expected = list(got), list(expected)
    if len(got) != len(expected):
        raise WrongValues(f"{label}: {len(got)} outputs, expected {len(expected)}")
    for position, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g, dtype=np.float64), np.asarray(e, dtype=np.float64)
        if g.shape != e.shape or not np.allclose(g, e, rtol=rtol, atol=atol):
            worst = np.max(np.abs(g - e)) if g.shape == e.shape else f"shapes {g.shape} vs {e.shape}"
            raise WrongValues(f"{label}: output {position} differs (max abs difference {worst})")


def compiled_nbdiff(inputs: list, outputs: Any, args: tuple, fastmath: bool = False) -> nd.Function:
    """An nbdiff function with ``backend="cpu"``, called once (the interpreter answers), waited for (compiled code
    is checked against the interpreter on that call's inputs before ``wait`` says "compiled"), and called until
    compiled code answers; ``Unavailable`` if it is not compiled."""
    f = nd.function(inputs, outputs, backend="cpu", fastmath=fastmath)
    f(*args)
    status = f.wait(COMPILE_TIMEOUT_S)
    if status != "compiled":
        raise Unavailable(f"not compiled: {status}")
    return answering_compiled(f, args)


def answering_compiled(f: nd.Function, args: tuple) -> nd.Function:
    """``f`` after two calls with ``args``, checked to answer from compiled code."""
    for _ in range(2):
        f(*args)
    if f.backend != "cpu":
        raise Unavailable(f"compiled, but the call answered from {f.backend} (status: {f.status})")
    return f


# -- timing and tables ----------------------------------------------------------------------------------------------
def measure(
    setups: dict[str, Callable[[], Call]], check: Callable[[str, Any], None], repeats: int
) -> dict[str, dict[str, Any]]:
    """Set up each contestant, check its values, then time all of them round-robin. Per label: ``median_s`` (per
    call) and ``calls_per_sample``, or ``note`` (why it was not timed)."""
    calls: dict[str, Call] = {}
    rows: dict[str, dict[str, Any]] = {}
    for label, setup in setups.items():
        try:
            call = setup()
            check(label, call())
        except WrongValues:
            raise
        except Unavailable as why:
            rows[label] = {"note": str(why)}
            continue
        except Exception as exc:  # a peer that fails here (a compiler missing, an unsupported op) is reported
            rows[label] = {"note": f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
            continue
        calls[label] = call
    samples, counts = {}, {}
    for label, call in calls.items():
        samples[label], counts[label] = repeated(call)
    medians = interleaved_many(samples, repeats) if samples else {}
    for label in setups:
        if label in calls:
            rows[label] = {"median_s": medians[label] / counts[label], "calls_per_sample": counts[label]}
    return {label: rows[label] for label in setups}


def add_ratios(rows: dict[str, dict[str, Any]], reference: str) -> None:
    """Each timed row's ratio to the reference row's median (None when either was not timed)."""
    base = rows.get(reference, {}).get("median_s")
    for row in rows.values():
        row["ratio"] = row["median_s"] / base if base and "median_s" in row else None


def short_note(note: str) -> str:
    """A note that fits a table cell: as it is, or its first words (the whole note is printed below the table)."""
    if note == "skipped (--no-peers)":
        return "skipped"
    return note if len(note) <= 18 else note.split(":")[0][:16] + " *"


def cell(row: dict[str, Any]) -> str:
    if "median_s" not in row:
        return f"{short_note(row['note']):>18s}"
    ratio = f"{row['ratio']:6.2f}x" if row.get("ratio") is not None else "      -"
    return f"{format_seconds(row['median_s'])} {ratio}"


def print_table(title: str, columns: dict[str, dict[str, dict[str, Any]]], reference: str) -> None:
    """One line per contestant, one cell (median per call, ratio to ``reference``) per column; long notes below."""
    labels = list(next(iter(columns.values())))
    print(f"\n{title}")
    print(f"{'contestant':40s}" + "".join(f" {name:>18s}" for name in columns) + f"   (ratio to {reference})")
    for label in labels:
        print(f"{label:40s}" + "".join(f" {cell(rows[label])}" for rows in columns.values()))
    notes = {(label, rows[label]["note"]) for rows in columns.values() for label in labels if "note" in rows[label]}
    for label, note in sorted(notes):
        if short_note(note).endswith(" *"):
            print(f"  * {label}: {note}")


def verdict(name: str, passed: bool | None, detail: str) -> dict[str, Any]:
    """Print and return one acceptance point (passed None: could not be measured)."""
    word = {True: "PASS", False: "FAIL", None: "N/A "}[passed]
    print(f"  {word}  {name}: {detail}")
    return {"name": name, "pass": passed, "detail": detail}


def ratio_verdict(name: str, rows: dict, label: str, reference: str, limit: float) -> dict[str, Any]:
    """Acceptance of ``rows[label]`` within ``limit`` times ``rows[reference]``."""
    row, base = rows.get(label, {}), rows.get(reference, {})
    if "median_s" not in row:  # nbdiff not compiled (or failed): the point fails
        return verdict(name, False, f"{label} was not timed ({row.get('note')})")
    if "median_s" not in base:
        return verdict(name, None, f"{reference} was not timed ({base.get('note')})")
    if "note" in row:  # timed, but something went wrong (W1: the backend changed during timing)
        return verdict(name, False, f"{label}: {row['note']}")
    ratio = row["median_s"] / base["median_s"]
    detail = (
        f"{label} {format_seconds(row['median_s']).strip()} / {reference} {format_seconds(base['median_s']).strip()}"
        f" = {ratio:.2f}x (target <= {limit}x)"
    )
    return verdict(name, ratio <= limit, detail)


# -- W1 -------------------------------------------------------------------------------------------------------------
def _w1_kernel(x, grad):  # compiled three ways below
    total = 0.0
    for i in numba.prange(x.shape[0]):
        xi = x[i]
        x2 = xi * xi
        e = math.exp(-x2)
        t = math.tanh(xi)
        s = math.sin(3.0 * xi)
        log_term = math.log1p(x2)
        total += t * e + log_term * s
        grad[i] = (1.0 - t * t) * e - 2.0 * xi * t * e + 2.0 * xi / (1.0 + x2) * s + 3.0 * log_term * math.cos(3.0 * xi)
    return total


W1_KERNELS = {
    "Numba hand-fused, parallel": numba.njit(parallel=True)(_w1_kernel),
    "Numba hand-fused, parallel fastmath": numba.njit(parallel=True, fastmath=True)(_w1_kernel),
    "Numba hand-fused, serial": numba.njit(_w1_kernel),  # prange is range without parallel=True
}
W1_REFERENCE = "Numba hand-fused, parallel"
TORCH_COMPILE = "PyTorch torch.compile"


def numba_w1(kernel: Any, x: np.ndarray) -> Call:
    def call() -> tuple[float, np.ndarray]:
        grad = np.empty_like(x)
        return kernel(x, grad), grad

    return call


def torch_value_grad(forward: Callable[[Any], Any], x: np.ndarray) -> Call:
    """Value and gradient with PyTorch's autograd, ``forward`` eager or compiled; the tensor is made once."""
    torch = need("torch")
    xt = torch.from_numpy(x).requires_grad_()

    def call() -> tuple[Any, Any]:
        y = forward(xt)
        (g,) = torch.autograd.grad(y, xt)
        return y.detach(), g

    return call


_made_once: dict[str, Any] = {}


def once(name: str, make: Callable[[], Any]) -> Any:
    """``make()`` the first time ``name`` is asked for, the same object afterwards (a jit or torch.compile wrapper
    shared by every size, so each compiles once, in the value check before timing)."""
    if name not in _made_once:
        _made_once[name] = make()
    return _made_once[name]


def torch_w1_forward() -> Callable[[Any], Any]:
    torch = need("torch")
    return lambda x: w1_expression(torch, x)


def jax_w1_forward() -> Callable[[Any], Any]:
    jnp = need("jax").numpy
    return lambda x: w1_expression(jnp, x)


def w1_setups(n: int, xv: np.ndarray, prepared: dict[str, Any], compile_seconds: dict[str, float]) -> dict:
    """Every W1 contestant at one size: label -> setup (returns the call to time)."""

    def nbdiff_setup(label: str) -> Callable[[], Call]:
        def setup() -> Call:
            f = prepared[label]
            if isinstance(f, Unavailable):
                raise f
            answering_compiled(f, (xv,))
            return lambda: f(xv)

        return setup

    def jax_setup() -> Call:
        jax = need("jax")
        step = once("jax W1", lambda: jax.jit(jax.value_and_grad(jax_w1_forward())))
        xj = jax.device_put(xv)
        return lambda: jax.block_until_ready(step(xj))

    def torch_compile_setup() -> Call:
        torch = need("torch")
        compiled = once("torch.compile W1", lambda: torch.compile(torch_w1_forward(), dynamic=True))
        call = torch_value_grad(compiled, xv)
        start = time.perf_counter()
        call()
        compile_seconds[f"n={n:.0e}"] = time.perf_counter() - start
        return call

    setups: dict[str, Callable[[], Call]] = {
        label: (lambda kernel=kernel: numba_w1(kernel, xv)) for label, kernel in W1_KERNELS.items()
    }
    setups["NumPy by hand"] = lambda: lambda: w1_numpy(xv)
    setups["nbdiff compiled"] = nbdiff_setup("nbdiff compiled")
    setups["nbdiff compiled fastmath"] = nbdiff_setup("nbdiff compiled fastmath")
    setups["nbdiff interpreter"] = lambda: lambda f=prepared["nbdiff interpreter"]: f(xv)
    for name, mode in PYTENSOR_MODES.items():
        setups[f"PyTensor {name} (mode={mode})"] = lambda mode=mode: pytensor_call(pt_w1, mode, xv)
    setups["JAX jit"] = jax_setup
    setups["PyTorch eager"] = lambda: torch_value_grad(torch_w1_forward(), xv)
    setups[TORCH_COMPILE] = torch_compile_setup
    return setups


def bench_w1(repeats: int) -> dict[str, Any]:
    x = nd.vector("x")
    y = w1_graph(x)
    outputs = [y, nd.grad(y, x)]
    warm_x = np.random.default_rng(9).uniform(-2, 2, 1_000)
    prepared: dict[str, Any] = {"nbdiff interpreter": nd.function([x], outputs, backend="numpy")}
    for label, fastmath in (("nbdiff compiled", False), ("nbdiff compiled fastmath", True)):
        try:
            prepared[label] = compiled_nbdiff([x], outputs, (warm_x,), fastmath=fastmath)
        except Unavailable as why:
            prepared[label] = why
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    compile_seconds: dict[str, float] = {}
    for n in W1_SIZES:
        xv = np.random.default_rng(0).uniform(-2, 2, n)
        ref_value, ref_grad = w1_numpy(xv)
        scale = float(np.sum(np.abs(np.tanh(xv) * np.exp(-(xv**2)) + np.log1p(xv**2) * np.sin(3 * xv))))

        def check(label: str, got: Any, n=n, ref_value=ref_value, ref_grad=ref_grad, scale=scale) -> None:
            value, grad = got
            if abs(float(value) - ref_value) > 1e-10 * scale:
                raise WrongValues(f"W1 n={n}: {label}: value {float(value)!r}, expected {ref_value!r}")
            check_close(f"W1 n={n}: {label} gradient", [grad], [ref_grad], rtol=1e-8, atol=1e-10)

        rows = measure(w1_setups(n, xv, prepared, compile_seconds), check, repeats)
        add_ratios(rows, W1_REFERENCE)
        columns[f"n={n:.0e}"] = rows
        for label in ("nbdiff compiled", "nbdiff compiled fastmath"):
            f = prepared[label]
            if isinstance(f, Unavailable):
                continue
            f(xv)
            if f.backend != "cpu":  # the figure above may not be compiled code's
                rows[label]["note"] = f"the backend changed to {f.backend} during timing ({f.status})"
    print_table(
        "W1  value + gradient of sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x)), float64, median per call",
        columns,
        W1_REFERENCE,
    )
    if compile_seconds:
        print(
            "  torch.compile's first call (its compile or a load from its cache; not timed): "
            + ", ".join(f"{size} {seconds:.1f} s" for size, seconds in compile_seconds.items())
        )
    largest = columns[f"n={W1_SIZES[-1]:.0e}"]
    verdicts = [
        ratio_verdict(
            "W1 n=1e3: nbdiff compiled at most 0.6x NumPy by hand",
            columns[f"n={W1_SIZES[0]:.0e}"],
            "nbdiff compiled",
            "NumPy by hand",
            0.6,
        ),
        ratio_verdict(
            "W1 n=1e7: nbdiff compiled within 1.1x of the hand-fused parallel Numba kernel",
            largest,
            "nbdiff compiled",
            W1_REFERENCE,
            1.1,
        ),
        *vector_math_verdicts("W1 n=1e7", largest, W1_REFERENCE),
    ]
    return {"sizes": columns, "torch_compile_first_call_s": compile_seconds, "verdicts": verdicts}


def vector_math_verdicts(name: str, rows: dict, reference: str) -> list[dict[str, Any]]:
    """Issue 14's W1 targets: nbdiff compiled at most 1.0x torch.compile and at most 0.6x the hand-fused kernel."""
    return [
        ratio_verdict(
            f"{name}: nbdiff compiled at most torch.compile's time", rows, "nbdiff compiled", TORCH_COMPILE, 1.0
        ),
        ratio_verdict(
            f"{name}: nbdiff compiled at most 0.6x the hand-fused libm kernel", rows, "nbdiff compiled", reference, 0.6
        ),
    ]


# -- W1 in float32 ----------------------------------------------------------------------------------------------------
def _w1_kernel_f32(x, grad):  # W1 with float32 literals, so every step stays float32 (libm's float32 functions)
    total = 0.0  # the sum accumulates in float64, as nbdiff's float32 sums do
    one, two, three = np.float32(1.0), np.float32(2.0), np.float32(3.0)
    for i in numba.prange(x.shape[0]):
        xi = x[i]
        x2 = xi * xi
        e = math.exp(-x2)
        t = math.tanh(xi)
        s = math.sin(three * xi)
        log_term = math.log1p(x2)
        total += t * e + log_term * s
        grad[i] = (
            (one - t * t) * e - two * xi * t * e + two * xi / (one + x2) * s + three * log_term * math.cos(three * xi)
        )
    return total


W1F32_KERNELS = {
    "Numba hand-fused, parallel": numba.njit(parallel=True)(_w1_kernel_f32),
    "Numba hand-fused, serial": numba.njit(_w1_kernel_f32),
}


def bench_w1f32(repeats: int) -> dict[str, Any]:
    x = nd.vector("x", dtype="float32")
    y = w1_graph(x)
    outputs = [y, nd.grad(y, x)]
    warm_x = np.random.default_rng(9).uniform(-2, 2, 1_000).astype(np.float32)
    try:
        f: Any = compiled_nbdiff([x], outputs, (warm_x,))
    except Unavailable as why:
        f = why
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    for n in W1F32_SIZES:
        xv = np.random.default_rng(0).uniform(-2, 2, n).astype(np.float32)
        ref_value, ref_grad = w1_numpy(xv.astype(np.float64))
        scale = float(np.sum(np.abs(np.tanh(xv) * np.exp(-(xv**2)))) + np.sum(np.abs(np.log1p(xv**2))))

        def check(label: str, got: Any, n=n, ref_value=ref_value, ref_grad=ref_grad, scale=scale) -> None:
            value, grad = got
            if abs(float(value) - ref_value) > 1e-4 * scale:
                raise WrongValues(f"W1F32 n={n}: {label}: value {float(value)!r}, expected {ref_value!r}")
            grad = np.asarray(grad)
            if grad.dtype != np.float32:
                raise WrongValues(f"W1F32 n={n}: {label}: gradient is {grad.dtype}, not float32")
            check_close(f"W1F32 n={n}: {label} gradient", [grad], [ref_grad], rtol=1e-4, atol=1e-4)

        def nbdiff_setup(xv=xv) -> Call:
            if isinstance(f, Unavailable):
                raise f
            answering_compiled(f, (xv,))
            return lambda: f(xv)

        def jax_setup(xv=xv) -> Call:
            jax = need("jax")
            step = once("jax W1F32", lambda: jax.jit(jax.value_and_grad(jax_w1_forward())))
            xj = jax.device_put(xv)
            return lambda: jax.block_until_ready(step(xj))

        def torch_compile_setup(xv=xv) -> Call:
            torch = need("torch")
            compiled = once("torch.compile W1F32", lambda: torch.compile(torch_w1_forward(), dynamic=True))
            return torch_value_grad(compiled, xv)

        setups: dict[str, Callable[[], Call]] = {
            label: (lambda kernel=kernel, xv=xv: numba_w1(kernel, xv)) for label, kernel in W1F32_KERNELS.items()
        }
        setups["NumPy by hand"] = lambda xv=xv: lambda: w1_numpy(xv)
        setups["nbdiff compiled"] = nbdiff_setup
        setups["JAX jit"] = jax_setup
        setups["PyTorch eager"] = lambda xv=xv: torch_value_grad(torch_w1_forward(), xv)
        setups[TORCH_COMPILE] = torch_compile_setup
        rows = measure(setups, check, repeats)
        add_ratios(rows, W1_REFERENCE)
        columns[f"n={n:.0e}"] = rows
        if not isinstance(f, Unavailable):
            f(xv)
            if f.backend != "cpu":
                rows["nbdiff compiled"]["note"] = f"the backend changed to {f.backend} during timing ({f.status})"
    print_table("W1F32  W1 in float32, median per call", columns, W1_REFERENCE)
    verdicts = vector_math_verdicts("W1F32 n=1e7", columns[f"n={W1F32_SIZES[-1]:.0e}"], W1_REFERENCE)
    return {"sizes": columns, "verdicts": verdicts}


# -- W2 -------------------------------------------------------------------------------------------------------------
def torch_mlp(compiled: bool, args: tuple) -> Call:
    """Loss and the four gradients with PyTorch's autograd, eager or through torch.compile; tensors made once."""
    torch = need("torch")

    def loss_of(X: Any, labels: Any, W1: Any, b1: Any, W2: Any, b2: Any) -> Any:
        hidden = torch.relu(X @ W1 + b1)
        log_probs = torch.log_softmax(hidden @ W2 + b2, dim=1)
        return -torch.gather(log_probs, 1, labels[:, None]).mean()

    forward = once("torch.compile W2", lambda: torch.compile(loss_of, dynamic=False)) if compiled else loss_of
    X, labels, *params = (torch.from_numpy(a) for a in args)
    params = [p.requires_grad_() for p in params]

    def call() -> tuple:
        loss = forward(X, labels, *params)
        return (loss.detach(), *torch.autograd.grad(loss, params))

    return call


def jax_mlp(args: tuple) -> Call:
    """Loss and the four gradients with jax.jit(value_and_grad); the device arrays made once."""
    jax = need("jax")
    jnp = jax.numpy

    def loss_of(W1: Any, b1: Any, W2: Any, b2: Any, X: Any, labels: Any) -> Any:
        hidden = jax.nn.relu(X @ W1 + b1)
        log_probs = jax.nn.log_softmax(hidden @ W2 + b2, axis=1)
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

    step = jax.jit(jax.value_and_grad(loss_of, argnums=(0, 1, 2, 3)))
    X, labels, W1, b1, W2, b2 = (jax.device_put(a) for a in args)

    def call() -> tuple:
        loss, grads = jax.block_until_ready(step(W1, b1, W2, b2, X, labels))
        return (loss, *grads)

    return call


def bench_w2(repeats: int) -> dict[str, Any]:
    args = mlp_args(np.random.default_rng(2), 256, 784, 256, 10)
    expected = mlp_numpy(*args)
    inputs, outputs = mlp_outputs()

    def check(label: str, got: Any) -> None:
        dtypes = {np.asarray(g).dtype.name for g in got}
        if dtypes != {"float32"}:
            raise WrongValues(f"W2: {label} returned {sorted(dtypes)}, not float32")
        check_close(f"W2: {label}", got, expected, rtol=1e-4, atol=1e-6)

    def nbdiff_setup() -> Call:
        f = compiled_nbdiff(inputs, outputs, args)
        return lambda: f(*args)

    interpreter = nd.function(inputs, outputs, backend="numpy")
    setups: dict[str, Callable[[], Call]] = {
        "NumPy by hand": lambda: lambda: mlp_numpy(*args),
        "nbdiff compiled": nbdiff_setup,
        "nbdiff interpreter": lambda: lambda: interpreter(*args),
    }
    for name, mode in PYTENSOR_MODES.items():
        setups[f"PyTensor {name} (mode={mode})"] = lambda mode=mode: pytensor_call(pt_mlp, mode, *args)
    setups["JAX jit"] = lambda: jax_mlp(args)
    setups["PyTorch eager"] = lambda: torch_mlp(False, args)
    setups["PyTorch torch.compile"] = lambda: torch_mlp(True, args)
    rows = measure(setups, check, repeats)
    add_ratios(rows, "NumPy by hand")
    title = "W2  float32 MLP step, batch 256, 784 -> 256 relu -> 10, loss + 4 gradients, median per call"
    print_table(title, {"median, ratio": rows}, "NumPy by hand")
    verdicts = [
        ratio_verdict("W2: nbdiff compiled at most 1.0x NumPy by hand", rows, "nbdiff compiled", "NumPy by hand", 1.0),
        best_peer_verdict("W2: nbdiff compiled at most the best peer", rows, "nbdiff compiled"),
    ]
    return {"rows": rows, "verdicts": verdicts}


W2_PEERS = ("PyTensor", "JAX", "PyTorch")  # the rows whose label starts with one of these are peers


def best_peer_verdict(name: str, rows: dict, label: str) -> dict[str, Any]:
    """Acceptance of ``rows[label]`` at most the fastest peer row that ran (named in the detail line)."""
    timed = {peer: row for peer, row in rows.items() if peer.startswith(W2_PEERS) and "median_s" in row}
    if not timed:
        return verdict(name, None, "no peer was timed")
    best = min(timed, key=lambda peer: timed[peer]["median_s"])
    return ratio_verdict(name, rows, label, best, 1.0)


# -- W3 -------------------------------------------------------------------------------------------------------------
@numba.njit
def numba_scalar_step(a: float, b: float) -> tuple[float, float, float]:
    return a * b + math.sin(a), b + math.cos(a), a


def pt_scalar_step() -> tuple[list, list]:
    import pytensor.tensor as pt
    from pytensor.gradient import grad

    a, b = pt.dscalar("a"), pt.dscalar("b")
    z = a * b + pt.sin(a)
    return [a, b], [z, *grad(z, [a, b])]


W3_REFERENCE = "NumPy by hand (np.sin, np.cos)"  # the same value and gradient computed with NumPy calls
W3_ONE_CALL = "np.sin(a), one NumPy call"  # printed for scale


def bench_w3(repeats: int) -> dict[str, Any]:
    a_value, b_value = 1.3, 0.7
    expected = (a_value * b_value + math.sin(a_value), b_value + math.cos(a_value), a_value)
    a, b = nd.scalar("a"), nd.scalar("b")
    z = a * b + nd.sin(a)
    outputs = [z, *nd.grad(z, [a, b])]

    def check(label: str, got: Any) -> None:
        if label == W3_ONE_CALL:
            check_close(f"W3: {label}", [got], [math.sin(a_value)], rtol=1e-12, atol=0)
        else:
            check_close(f"W3: {label}", got, expected, rtol=1e-12, atol=1e-15)

    def nbdiff_setup() -> Call:
        f = compiled_nbdiff([a, b], outputs, (a_value, b_value))
        return lambda: f(a_value, b_value)

    def jax_setup() -> Call:
        jax = need("jax")

        def value(p: Any, q: Any) -> Any:
            return p * q + jax.numpy.sin(p)

        step = jax.jit(lambda p, q: (value(p, q), *jax.grad(value, argnums=(0, 1))(p, q)))
        return lambda: jax.block_until_ready(step(a_value, b_value))

    def torch_setup() -> Call:
        torch = need("torch")

        def call() -> tuple:
            at = torch.tensor(a_value, dtype=torch.float64, requires_grad=True)
            bt = torch.tensor(b_value, dtype=torch.float64, requires_grad=True)
            zt = at * bt + torch.sin(at)
            return (zt.detach(), *torch.autograd.grad(zt, (at, bt)))

        return call

    interpreter = nd.function([a, b], outputs, backend="numpy")
    setups: dict[str, Callable[[], Call]] = {
        W3_ONE_CALL: lambda: lambda: np.sin(a_value),
        W3_REFERENCE: lambda: (
            lambda: (
                a_value * b_value + np.sin(a_value),
                b_value + np.cos(a_value),
                a_value,
            )
        ),
        "Python math by hand": lambda: (
            lambda: (
                a_value * b_value + math.sin(a_value),
                b_value + math.cos(a_value),
                a_value,
            )
        ),
        "Numba njit by hand": lambda: lambda: numba_scalar_step(a_value, b_value),
        "nbdiff compiled": nbdiff_setup,
        "nbdiff interpreter": lambda: lambda: interpreter(a_value, b_value),
    }
    for name, mode in PYTENSOR_MODES.items():
        setups[f"PyTensor {name} (mode={mode})"] = lambda mode=mode: pytensor_call(
            pt_scalar_step, mode, a_value, b_value
        )
    setups["JAX jit"] = jax_setup
    setups["PyTorch eager"] = torch_setup
    rows = measure(setups, check, repeats)
    add_ratios(rows, W3_REFERENCE)
    title = "W3  a*b + sin(a) and its gradient w.r.t. a and b, Python floats in, median per call"
    print_table(title, {"median, ratio": rows}, W3_REFERENCE)
    verdicts = [
        ratio_verdict("W3: nbdiff compiled within 6x of NumPy by hand", rows, "nbdiff compiled", W3_REFERENCE, 6)
    ]
    row = rows["nbdiff compiled"]
    name = "W3: nbdiff compiled under 3 us per call"
    if "median_s" in row:
        detail = f"nbdiff compiled {row['median_s'] * 1e6:.2f} us per call (target < 3 us)"
        verdicts.append(verdict(name, row["median_s"] < 3e-6, detail))
    else:
        verdicts.append(verdict(name, False, f"nbdiff compiled was not timed ({row['note']})"))
    return {"rows": rows, "reference": W3_REFERENCE, "verdicts": verdicts}


# -- W4 -------------------------------------------------------------------------------------------------------------
_second_derivative = numba.njit(w1_second_derivative)  # the hand derivation bench_interpreter.py's HVP uses


def _hvp_kernel(x, v, out):  # compiled twice below
    for i in numba.prange(x.shape[0]):
        out[i] = _second_derivative(x[i]) * v[i]


HVP_KERNELS = {
    "Numba hand-fused HVP, parallel": numba.njit(parallel=True)(_hvp_kernel),
    "Numba hand-fused HVP, serial": numba.njit(_hvp_kernel),
}
W4_REFERENCE = "Numba hand-fused HVP, parallel"
W4_TORCH_COMPILE = "PyTorch torch.compile func.jvp(func.grad)"


def numba_hvp(kernel: Any, x: np.ndarray, v: np.ndarray) -> Call:
    def call() -> np.ndarray:
        out = np.empty_like(x)
        kernel(x, v, out)
        return out

    return call


def bench_w4(repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    xv, vv = rng.uniform(-2, 2, HVP_SIZE), rng.standard_normal(HVP_SIZE)
    x, v = nd.vector("x"), nd.vector("v")
    hv = nd.Rop(nd.grad(w1_graph(x), x), x, v)
    interpreter = nd.function([x, v], hv, backend="numpy")
    expected = interpreter(xv, vv)  # the hand derivation (NumPy, both Numba kernels) is checked against it

    def check(label: str, got: Any) -> None:
        value = got[0] if isinstance(got, (list, tuple)) else got  # PyTensor answers a list of one
        check_close(f"W4: {label}", [value], [expected], rtol=1e-9, atol=1e-10)

    def nbdiff_setup() -> Call:
        f = compiled_nbdiff([x, v], hv, (xv, vv))
        return lambda: f(xv, vv)

    def jax_setup() -> Call:
        jax = need("jax")
        forward = jax_w1_forward()
        step = jax.jit(lambda p, q: jax.jvp(jax.grad(forward), (p,), (q,))[1])
        xj, vj = jax.device_put(xv), jax.device_put(vv)
        return lambda: jax.block_until_ready(step(xj, vj))

    def torch_setup() -> Call:
        torch = need("torch")
        forward = torch_w1_forward()
        xt, vt = torch.from_numpy(xv), torch.from_numpy(vv)
        return lambda: torch.func.jvp(torch.func.grad(forward), (xt,), (vt,))[1]

    def torch_compile_setup() -> Call:
        torch = need("torch")
        forward = torch_w1_forward()
        step = torch.compile(lambda p, q: torch.func.jvp(torch.func.grad(forward), (p,), (q,))[1], dynamic=True)
        xt, vt = torch.from_numpy(xv), torch.from_numpy(vv)
        return lambda: step(xt, vt)

    setups: dict[str, Callable[[], Call]] = {
        label: (lambda kernel=kernel: numba_hvp(kernel, xv, vv)) for label, kernel in HVP_KERNELS.items()
    }
    setups["NumPy by hand"] = lambda: lambda: w1_hvp_numpy(xv, vv)
    setups["nbdiff compiled"] = nbdiff_setup
    setups["nbdiff interpreter"] = lambda: lambda: interpreter(xv, vv)
    for name, mode in PYTENSOR_MODES.items():
        setups[f"PyTensor {name} (mode={mode}) pushforward"] = lambda mode=mode: pytensor_call(
            pt_hvp_pushforward, mode, xv, vv
        )
    setups["JAX jit jvp(grad)"] = jax_setup
    setups["PyTorch eager func.jvp(func.grad)"] = torch_setup
    setups[W4_TORCH_COMPILE] = torch_compile_setup
    rows = measure(setups, check, repeats)
    add_ratios(rows, W4_REFERENCE)
    print_table(
        f"W4  Hessian-vector product of W1, n={HVP_SIZE:.0e}, median per call", {"median, ratio": rows}, W4_REFERENCE
    )
    verdicts = [
        ratio_verdict(
            "W4: nbdiff compiled within 1.3x of the hand-fused Numba HVP kernel",
            rows,
            "nbdiff compiled",
            W4_REFERENCE,
            1.3,
        ),
        ratio_verdict(
            "W4: nbdiff compiled at most torch.compile's time", rows, "nbdiff compiled", W4_TORCH_COMPILE, 1.0
        ),
    ]
    return {"rows": rows, "reference": W4_REFERENCE, "verdicts": verdicts}


# -- fresh processes (W5, STALL) --------------------------------------------------------------------------------------
CHILD_PREAMBLE = """\
from __future__ import annotations

import time
T0 = time.perf_counter()
M0 = time.monotonic()
import json
import sys
"""

NUMPY_CHILD = (
    CHILD_PREAMBLE
    + """\
import numpy as np

IMPORTED = time.perf_counter()

W1_NUMPY

params = json.loads(sys.argv[1])
xv = np.random.default_rng(0).uniform(-2, 2, params["n"])
value, grad = w1_numpy(xv)
ANSWER = time.perf_counter()
print(json.dumps({"import_s": IMPORTED - T0, "answer_s": ANSWER - T0, "value": float(value)}))
"""
)

NBDIFF_CHILD = (
    CHILD_PREAMBLE
    + """\
import numpy as np
import nbdiff as nd

IMPORTED = time.perf_counter()

W1_NUMPY

W1_GRAPH

params = json.loads(sys.argv[1])
x = nd.vector("x")
y = w1_graph(x)
f = nd.function([x], [y, nd.grad(y, x)], backend="cpu")
MADE = time.perf_counter()
xv = np.random.default_rng(0).uniform(-2, 2, params["n"])
value, grad = f(xv)
FIRST = time.perf_counter()
first_backend = f.backend
status = f.wait(params["timeout"])
WAITED = time.perf_counter()
compiled = None
results = [(value, grad)]
if status == "compiled":  # checked against the interpreter on the first call's inputs: the next call is compiled
    for _ in range(3):
        results.append(f(xv))
        if f.backend == "cpu":
            compiled = time.perf_counter()
            break
ref_value, ref_grad = w1_numpy(xv)
ok = all(np.isclose(v, ref_value, rtol=1e-9) and np.allclose(g, ref_grad, rtol=1e-8, atol=1e-10) for v, g in results)
print(json.dumps({
    "import_s": IMPORTED - T0,
    "function_s": MADE - T0,
    "first_s": FIRST - T0,
    "first_backend": first_backend,
    "status": status,
    "wait_s": WAITED - T0,
    "compiled_s": None if compiled is None else compiled - T0,
    "ok": bool(ok),
    "events": [[e.kernel, e.state, e.seconds, e.time - M0, e.reason[:300]] for e in f.events],
}))
"""
)

STALL_CHILD = (
    CHILD_PREAMBLE
    + """\
import numpy as np
import nbdiff as nd

import resource
import threading

W1_GRAPH

FINAL = ("compiled", "fallback")
RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)  # Linux: this thread's own counts


def loop(until, small, origin):
    # Small NumPy work on the main thread; every gap over 1 ms between iterations, with its start (seconds from
    # origin) and this thread's context switches during it: voluntary ones mean it waited (for the GIL or a lock),
    # involuntary ones that the OS gave its core to another process.
    start = last = time.perf_counter()
    usage = resource.getrusage(RUSAGE_THREAD)
    switches = (usage.ru_nvcsw, usage.ru_nivcsw)
    largest, iterations, big = 0.0, 0, []
    while not until(last - start):
        np.sum(small)
        now = time.perf_counter()
        usage = resource.getrusage(RUSAGE_THREAD)
        gap = now - last
        largest = max(largest, gap)
        if gap > 0.001:
            big.append([last - origin, gap, usage.ru_nvcsw - switches[0], usage.ru_nivcsw - switches[1]])
        switches = (usage.ru_nvcsw, usage.ru_nivcsw)
        last = now
        iterations += 1
    return {"seconds": last - start, "iterations": iterations, "largest_s": largest, "gaps_over_1ms": big}


params = json.loads(sys.argv[1])
small = np.ones(1000)
x = nd.vector("x")
y = w1_graph(x)
made = time.perf_counter()
M_MADE = time.monotonic()
f = nd.function([x], [y, nd.grad(y, x)], backend="cpu")
during = loop(lambda elapsed: f.status.startswith(FINAL) or elapsed > params["timeout"], small, made)
during["function_s"] = made - T0
during["status"] = f.status
during["events"] = [[e.kernel, e.state, e.seconds, e.time - M_MADE] for e in f.events]
baseline = loop(lambda elapsed: elapsed >= max(during["seconds"], 1.0), small, time.perf_counter())


def busy(seconds):
    sys.setswitchinterval(0.001)  # as nbdiff's loading thread sets it
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(100))


previous_interval = sys.getswitchinterval()
worker = threading.Thread(target=busy, args=(max(during["seconds"], 1.0),))
worker.start()
control = loop(lambda elapsed: not worker.is_alive(), small, time.perf_counter())
worker.join()
sys.setswitchinterval(previous_interval)
xv = np.random.default_rng(0).uniform(-2, 2, 1000)
f(xv)  # "compiled (unchecked)" (never called while compiling) until this call checks it
f(xv)
during["backend_after"] = f.backend
during["status_after"] = f.status
print(json.dumps({"during": during, "baseline": baseline, "control": control}))
"""
)

PYTENSOR_CHILD = (
    CHILD_PREAMBLE
    + """\
import warnings

warnings.simplefilter("ignore")
import numpy as np
import pytensor

params = json.loads(sys.argv[1])
sys.path.insert(0, params["benchmarks"])
from bench_interpreter import mlp_args, mlp_numpy
from bench_rewrites import pt_mlp

IMPORTED = time.perf_counter()
args = mlp_args(np.random.default_rng(2), 256, 784, 256, 10)
inputs, outputs = pt_mlp()
start = time.perf_counter()
fn = pytensor.function(inputs, outputs, mode=params["mode"])
values = fn(*args)
FIRST = time.perf_counter()
ok = all(np.allclose(v, e, rtol=1e-4, atol=1e-6) for v, e in zip(values, mlp_numpy(*args)))
print(json.dumps({"import_s": IMPORTED - T0, "first_s": FIRST - T0, "compile_s": FIRST - start, "ok": bool(ok)}))
"""
)

TORCH_CHILD = (
    CHILD_PREAMBLE
    + """\
import numpy as np
import torch

IMPORTED = time.perf_counter()

W1_NUMPY

W1_EXPRESSION

params = json.loads(sys.argv[1])
xv = np.random.default_rng(0).uniform(-2, 2, params["n"])
xt = torch.from_numpy(xv).requires_grad_()
start = time.perf_counter()
compiled = torch.compile(lambda x: w1_expression(torch, x), dynamic=True)
value = compiled(xt)
(grad,) = torch.autograd.grad(value, xt)
FIRST = time.perf_counter()
ref_value, ref_grad = w1_numpy(xv)
ok = np.isclose(value.item(), ref_value, rtol=1e-9) and np.allclose(grad.numpy(), ref_grad, rtol=1e-8, atol=1e-10)
print(json.dumps({"import_s": IMPORTED - T0, "first_s": FIRST - T0, "compile_s": FIRST - start, "ok": bool(ok)}))
"""
)

JAX_CHILD = (
    CHILD_PREAMBLE
    + """\
import numpy as np
import jax

jax.config.update("jax_enable_x64", True)
IMPORTED = time.perf_counter()

W1_NUMPY

W1_EXPRESSION

params = json.loads(sys.argv[1])
xv = np.random.default_rng(0).uniform(-2, 2, params["n"])
start = time.perf_counter()
value, grad = jax.block_until_ready(jax.jit(jax.value_and_grad(lambda x: w1_expression(jax.numpy, x)))(xv))
FIRST = time.perf_counter()
ref_value, ref_grad = w1_numpy(xv)
ok = np.isclose(float(value), ref_value, rtol=1e-9) and np.allclose(np.asarray(grad), ref_grad, rtol=1e-8, atol=1e-10)
print(json.dumps({"import_s": IMPORTED - T0, "first_s": FIRST - T0, "compile_s": FIRST - start, "ok": bool(ok)}))
"""
)


def child_source(template: str) -> str:
    """A child script with the benchmark's own functions pasted in (the children import nothing of this file)."""
    sources = {"W1_NUMPY": w1_numpy, "W1_GRAPH": w1_graph, "W1_EXPRESSION": w1_expression}
    for marker, fn in sources.items():
        template = template.replace(marker, inspect.getsource(fn))
    return template


def run_child(template: str, params: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child script in a fresh interpreter; its last line of output is its figures (JSON), to which the
    parent adds ``process_wall_s`` (from just before starting it until it exited)."""
    with tempfile.TemporaryDirectory(prefix="nbdiff-bench-child-") as folder:
        path = os.path.join(folder, "child.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(child_source(template))
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, path, json.dumps(params)],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=folder,
            timeout=CHILD_TIMEOUT_S,
        )
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"child process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    if result.get("ok") is False:
        raise WrongValues(f"a fresh-process run computed wrong values: {result}")
    return result


def startup_seconds(runs: int) -> float:
    """Median wall time of ``python -c pass`` from the parent: the interpreter's start-up (and exit)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if len(values) == len(runs) else None


def compile_references(startup: float) -> dict[str, dict[str, Any]]:
    """One cold run each: PyTensor's compile of W2 (fresh compiledir), torch.compile's and jax.jit's first call of
    W1 at n = 1e5 (fresh inductor cache); seconds from process start (start-up added) and of the compile."""
    refs: dict[str, dict[str, Any]] = {}
    jobs: list[tuple[str, str, str, dict[str, Any], Callable[[str], dict[str, str]]]] = [
        (
            f"PyTensor {name} (mode={mode}) W2 compile",
            "pytensor",
            PYTENSOR_CHILD,
            {"mode": mode, "benchmarks": HERE},
            lambda folder: {"PYTENSOR_FLAGS": f"base_compiledir={folder}", "NUMBA_CACHE_DIR": folder},
        )
        for name, mode in PYTENSOR_MODES.items()
    ]
    jobs.append(
        (
            "torch.compile W1 first call",
            "torch",
            TORCH_CHILD,
            {"n": FRESH_SIZE},
            lambda folder: {"TORCHINDUCTOR_CACHE_DIR": folder},
        )
    )
    jobs.append(("jax.jit W1 first call", "jax", JAX_CHILD, {"n": FRESH_SIZE}, lambda folder: {}))
    for label, module, template, params, env in jobs:
        try:
            need(module)
            with tempfile.TemporaryDirectory(prefix="nbdiff-bench-cold-") as folder:
                result = run_child(template, params, env(folder))
        except Unavailable as why:
            refs[label] = {"note": str(why)}
            continue
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            refs[label] = {"note": f"failed: {str(exc).strip().splitlines()[-1][:300]}"}
            continue
        refs[label] = {
            "first_answer_s": startup + result["first_s"],
            "compiled_answer_s": startup + result["first_s"],
            "compile_s": result["compile_s"],
            "child": result,
        }
    return refs


def bench_w5(runs: int, references: bool) -> dict[str, Any]:
    startup = startup_seconds(max(3, runs * 2))
    numpy_runs, cold_runs, warm_runs = [], [], []
    for _ in range(runs):
        numpy_runs.append(run_child(NUMPY_CHILD, {"n": FRESH_SIZE}))
        with tempfile.TemporaryDirectory(prefix="nbdiff-bench-cache-") as cache:
            params = {"n": FRESH_SIZE, "timeout": CHILD_TIMEOUT_S - 60}
            cold_runs.append(run_child(NBDIFF_CHILD, params, {"NBDIFF_CACHE_DIR": cache}))
            warm_runs.append(run_child(NBDIFF_CHILD, params, {"NBDIFF_CACHE_DIR": cache}))
    numpy_answer = startup + median_of(numpy_runs, "answer_s")  # type: ignore[operator]
    rows: dict[str, dict[str, Any]] = {
        "NumPy by hand (numpy only)": {"first_answer_s": numpy_answer, "import_s": median_of(numpy_runs, "import_s")}
    }
    for label, group in (("nbdiff, cold cache", cold_runs), ("nbdiff, warm cache", warm_runs)):
        first, made, compiled = (median_of(group, key) for key in ("first_s", "function_s", "compiled_s"))
        rows[label] = {
            "first_answer_s": startup + first,  # type: ignore[operator]
            "compiled_answer_s": None if compiled is None else startup + compiled,
            "compile_s": None if compiled is None else compiled - made,  # type: ignore[operator]
            "compiled_after_first_s": None if compiled is None else compiled - first,  # type: ignore[operator]
            "import_s": median_of(group, "import_s"),
            "statuses": sorted({r["status"] for r in group}),
        }
    if references:
        rows.update(compile_references(startup))
    for row in rows.values():
        if "first_answer_s" in row:
            row["ratio"] = row["first_answer_s"] / numpy_answer
    print_w5(rows, startup, runs)
    cold, warm = rows["nbdiff, cold cache"], rows["nbdiff, warm cache"]
    verdicts = [
        verdict(
            "W5: first answer (cold cache) within 4x of the NumPy process",
            cold["ratio"] <= 4,
            f"{cold['first_answer_s']:.3f} s / {numpy_answer:.3f} s = {cold['ratio']:.2f}x from process start "
            f"(start-up {startup:.3f} s included; target <= 4x)",
        )
    ]
    if cold["compile_s"] is None:
        verdicts.append(verdict("W5: compiled within 5 s, cold cache", False, f"not compiled: {cold['statuses']}"))
    else:
        detail = f"{cold['compile_s']:.2f} s from nd.function() to a call answered by compiled code (target <= 5 s)"
        verdicts.append(verdict("W5: compiled within 5 s, cold cache", cold["compile_s"] <= 5, detail))
    if warm["compiled_after_first_s"] is None:
        verdicts.append(verdict("W5: compiled within 1 s of the first call, warm cache", False, str(warm["statuses"])))
    else:
        detail = f"{warm['compiled_after_first_s']:.3f} s from the first answer to a compiled answer (target <= 1 s)"
        verdicts.append(
            verdict(
                "W5: compiled within 1 s of the first call, warm cache", warm["compiled_after_first_s"] <= 1, detail
            )
        )
    runs_record = {"numpy": numpy_runs, "nbdiff_cold": cold_runs, "nbdiff_warm": warm_runs}
    return {"startup_s": startup, "runs": runs_record, "rows": rows, "verdicts": verdicts}


def seconds_or_dash(value: float | None) -> str:
    return f"{value:9.3f}s" if value is not None else f"{'-':>10s}"


def print_w5(rows: dict[str, dict[str, Any]], startup: float, runs: int) -> None:
    print(
        f"\nW5  fresh process, W1 value + gradient n={FRESH_SIZE:.0e}: seconds from process start (start-up of "
        f"`python -c pass`, {startup:.3f} s, measured by the parent, plus the child's perf_counter from its first "
        f"line), median of {runs} run(s)"
    )
    print(f"{'contestant':44s} {'first answer':>12s} {'compiled':>10s} {'compile':>10s} {'ratio':>7s}   (first answer)")
    for label, row in rows.items():
        if "note" in row:
            print(f"{label:44s} {row['note']}")
            continue
        print(
            f"{label:44s} {seconds_or_dash(row['first_answer_s']):>12s} {seconds_or_dash(row.get('compiled_answer_s'))}"
            f" {seconds_or_dash(row.get('compile_s'))} {row['ratio']:6.2f}x"
        )
    print(
        "  compile: nbdiff from nd.function() to the first call answered by compiled code (f.backend == 'cpu'); "
        "references from the compile call to the first answer"
    )


def stall_phases(events: list) -> list[tuple[str, float, float]]:
    """The phases of one compilation, (name, start, end) in seconds from nd.function(), from its events: preparing
    (code generation and Numba's import here, the worker's start) until the worker starts compiling; the worker
    compiling (its own seconds); loading the compiled kernel here (from the worker's end to "ready")."""
    phases, first_compiling = [], None
    compiling: dict[str, float] = {}
    for kernel, state, seconds, at in events:
        if state == "compiling":
            compiling[kernel] = at
            first_compiling = at if first_compiling is None else first_compiling
        elif state == "ready" and kernel in compiling:
            worker_end = compiling[kernel] + (seconds or 0.0)
            phases += [
                (f"{kernel} worker compiling", compiling[kernel], worker_end),
                (f"{kernel} loading", worker_end, at),
            ]
        elif state == "cached":
            phases.append((f"{kernel} loading from cache", at - (seconds or 0.0), at))
    return [("preparing", 0.0, first_compiling if first_compiling is not None else math.inf), *phases]


def largest_gaps(run: dict[str, Any]) -> dict[str, Any]:
    """The largest gap of a loop, split by what the thread did: waited (voluntary context switches: the GIL or a
    lock) or only lost its core to another process (involuntary switches: the machine is shared)."""
    waited = [g for g in run["gaps_over_1ms"] if g[2] > 0]
    preempted = [g for g in run["gaps_over_1ms"] if g[2] == 0]
    return {
        "waited_s": max((g[1] for g in waited), default=0.0),
        "preempted_s": max((g[1] for g in preempted), default=0.0),
        "over_1ms": len(run["gaps_over_1ms"]),
        "over_5ms": sum(g[1] > 0.005 for g in run["gaps_over_1ms"]),
        "over_20ms": sum(g[1] > STALL_LIMIT_S for g in run["gaps_over_1ms"]),
    }


def phase_of(at: float, phases: list[tuple[str, float, float]]) -> str:
    names = [name for name, start, end in phases if start <= at < end]
    return names[-1] if names else "after the last event"


def bench_stall(runs: int) -> dict[str, Any]:
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="nbdiff-bench-cache-") as cache:
            params = {"timeout": CHILD_TIMEOUT_S - 60}
            results.append(run_child(STALL_CHILD, params, {"NBDIFF_CACHE_DIR": cache}))
    print(
        "\nSTALL  main-thread loop of np.sum(1,000 floats) in a fresh process while W1 compiles (cold cache), and the "
        "same loop with nothing compiling: gaps between iterations; 'waited' gaps had a voluntary context switch "
        "(the GIL or a lock), 'preempted' ones only involuntary ones (another process had the core)"
    )
    head = f"{'loop':38s} {'seconds':>8s} {'iterations':>10s} {'largest':>10s} {'waited':>10s} {'preempted':>10s}"
    print(head + f" {'>1ms':>5s} {'>5ms':>5s} {'>20ms':>5s}")
    for i, result in enumerate(results):
        during, baseline, control = result["during"], result["baseline"], result["control"]
        loops = (
            (f"run {i + 1}: while compiling", during),
            (f"run {i + 1}: baseline", baseline),
            (f"run {i + 1}: control (busy thread)", control),
        )
        for label, r in loops:
            split = r["split"] = largest_gaps(r)
            print(
                f"{label:38s} {r['seconds']:7.2f}s {r['iterations']:10d} {format_seconds(r['largest_s'])}"
                f" {format_seconds(split['waited_s'])} {format_seconds(split['preempted_s'])}"
                f" {split['over_1ms']:5d} {split['over_5ms']:5d} {split['over_20ms']:5d}"
            )
        phases = stall_phases(during["events"])
        events = ", ".join(f"{k} {s} at {t:.2f}s" for k, s, _, t in during["events"])
        print(f"  run {i + 1}: status {during['status']!r}; events (s from nd.function()): {events}")
        worst_by_phase: dict[str, list] = {}
        for gap in during["gaps_over_1ms"]:
            phase = phase_of(gap[0], phases)
            if gap[1] > worst_by_phase.get(phase, [0, 0.0])[1]:
                worst_by_phase[phase] = gap
        during["largest_by_phase"] = worst_by_phase
        for phase, gap in worst_by_phase.items():
            kind = "waited" if gap[2] > 0 else "preempted"
            print(f"    largest gap in {phase}: {gap[1] * 1e3:.1f} ms at {gap[0]:.2f} s ({kind})")
    # The verdict reads the median run (the acceptance is on medians): on this VM the loop with nothing
    # compiling now and then loses 20-40 ms too, so one run's worst gap measures the machine as much as nbdiff.
    # The worst run is printed beside it, with its baseline.
    median = statistics.median(r["during"]["largest_s"] for r in results)
    median_waited = statistics.median(r["during"]["split"]["waited_s"] for r in results)
    median_baseline = statistics.median(r["baseline"]["largest_s"] for r in results)
    median_control = statistics.median(r["control"]["largest_s"] for r in results)
    median_control_waited = statistics.median(r["control"]["split"]["waited_s"] for r in results)
    worst_run = max(results, key=lambda r: r["during"]["largest_s"])
    worst = worst_run["during"]["largest_s"]
    statuses = {r["during"]["status_after"] for r in results}
    compiled = statuses == {"compiled"} and all(r["during"]["backend_after"] == "cpu" for r in results)
    detail = (
        f"median over {len(results)} runs of the largest gap: {median * 1e3:.1f} ms while compiling, of which "
        f"waiting {median_waited * 1e3:.1f} ms (baseline {median_baseline * 1e3:.1f} ms; control: a plain busy "
        f"Python thread {median_control * 1e3:.1f} ms, waiting {median_control_waited * 1e3:.1f} ms); worst run "
        f"{worst * 1e3:.1f} ms with its baseline {worst_run['baseline']['largest_s'] * 1e3:.1f} ms; target <= "
        f"{STALL_LIMIT_S * 1e3:.0f} ms"
        + ("" if compiled else f"; compilation did not finish as compiled: {sorted(statuses)}")
    )
    verdicts = [
        verdict("STALL: no main-thread gap over 20 ms while compiling", median <= STALL_LIMIT_S and compiled, detail)
    ]
    return {
        "runs": results,
        "median_largest_s": median,
        "largest_s": worst,
        "median_largest_waited_s": median_waited,
        "median_baseline_largest_s": median_baseline,
        "median_control_largest_s": median_control,
        "median_control_largest_waited_s": median_control_waited,
        "verdicts": verdicts,
    }


THREADS_VARIABLE = "NBDIFF_BENCH_THREADS"


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that set every library's thread count (read when each library starts)."""
    count = str(threads)
    xla = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        xla = (xla + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    variables = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"}
    return {**dict.fromkeys(variables, count), "XLA_FLAGS": xla, THREADS_VARIABLE: count}


# -- main -----------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 21, one fresh-process run")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--no-peers", action="store_true", help="skip PyTensor, JAX and PyTorch")
    parser.add_argument("--only", help=f"comma-separated workloads to run, of {','.join(WORKLOADS)}")
    parser.add_argument(
        "--no-compile-refs", action="store_true", help="skip W5's PyTensor, torch.compile and jax.jit compile timings"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="threads for every library (OpenBLAS, OpenMP/PyTorch, Numba, XLA), set before anything starts (the "
        "script runs itself again with them); default: each library's own",
    )
    args = parser.parse_args()
    if args.threads is not None and os.environ.get(THREADS_VARIABLE) != str(args.threads):
        os.environ.update(thread_environment(args.threads))
        os.execv(sys.executable, [sys.executable, *sys.argv])
    only = [w.strip().upper() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        parser.error(f"--only: unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    _peer_settings["enabled"] = not args.no_peers
    repeats = 5 if args.quick else 21
    fresh_runs = 1 if args.quick else 3
    versions = peer_versions()
    print(
        f"nbdiff compiled CPU backend: medians of {repeats} round-robin samples; peers: "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items())
        + (" (--no-peers: not run)" if args.no_peers else "")
    )
    print(f"nbdiff cache folder of this process: {nd.options().cache_dir or 'the default (NBDIFF_CACHE_DIR unset)'}")
    threads = os.environ.get(THREADS_VARIABLE)
    print(f"threads: {threads + ' for every library (--threads)' if threads else 'each library default'}")
    results: dict[str, Any] = {
        "machine": machine_info(),
        "versions": versions,
        "repeats": repeats,
        "threads": int(threads) if threads else None,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
    }
    benches: dict[str, Callable[[], dict[str, Any]]] = {
        "W1": lambda: bench_w1(repeats),
        "W1F32": lambda: bench_w1f32(repeats),
        "W2": lambda: bench_w2(repeats),
        "W3": lambda: bench_w3(repeats),
        "W4": lambda: bench_w4(repeats),
        "W5": lambda: bench_w5(fresh_runs, not args.no_compile_refs and not args.no_peers),
        "STALL": lambda: bench_stall(1 if args.quick else 5),  # a median of five: single runs meet VM noise
    }
    for name in WORKLOADS:
        if name in only:
            results[name] = benches[name]()
    verdicts = [v for name in WORKLOADS if name in results for v in results[name]["verdicts"]]
    print("\nAcceptance")
    for v in verdicts:
        print(f"  {({True: 'PASS', False: 'FAIL', None: 'N/A '})[v['pass']]}  {v['name']}: {v['detail']}")
    results["verdicts"] = verdicts
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()

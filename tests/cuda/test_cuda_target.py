"""The CUDA target without a GPU: its simulator suite in a subprocess, and every kernel the op table produces
compiled to PTX for a real device (``numba.cuda.compile_ptx(..., cc=(7, 5))``, no GPU or driver needed).

PTX check for float32 kernels (``float64_promotions``): no ``.f64`` instruction but one known exception. A float32
kernel has no float64 parameter or array, so an ``.f64`` instruction (arithmetic such as ``add.f64``/``fma.rn.f64``,
a conversion ``cvt.f64.f32`` of a float32 value, a load, store or move of a double) can only come from a float64
promotion (an untyped literal, a libm call in double precision). Checking every ``.f64`` token rather than a list
of arithmetic opcodes also catches promotions hidden in conversions. The exception is libdevice's own ``sinf`` /
``cosf`` / ``tanf``: their slow-path range reduction for huge arguments (Payne-Hanek) converts a 64-bit integer
to double and scales it by one constant (``cvt.rn.f64.s64``, ``mul.f64 ... 0d3BF921FB54442D19`` = pi/2 * 2^-64,
``cvt.rn.f32.f64``): that is CUDA's float32 sine, the same as nvcc's, with no float32 value ever widened.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import NbdiffError
from tests.ops.table import all_cases

ROOT = Path(__file__).resolve().parents[2]


# libdevice's float32 trig range reduction: the only .f64 instructions a float32 kernel may contain (see above)
LIBDEVICE_TRIG_REDUCTION = (
    re.compile(r"^\s*\.reg \.f64\b"),
    re.compile(r"^\s*cvt\.rn\.f64\.s64\b"),
    re.compile(r"^\s*mul\.f64\s+%fd\d+, %fd\d+, 0d3BF921FB54442D19;"),
    re.compile(r"^\s*cvt\.rn\.f32\.f64\b"),
)


def float64_promotions(ptx: str) -> list[str]:
    """The PTX lines of a float32 kernel that use float64, but libdevice's trig range reduction (docstring)."""
    return [
        line.strip()
        for line in ptx.splitlines()
        if ".f64" in line and not any(pattern.match(line) for pattern in LIBDEVICE_TRIG_REDUCTION)
    ]


def _missing_toolkit() -> str | None:
    """Why compile_ptx cannot run here (None when it can): numba-cuda or its NVVM wheels missing."""
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed (pip install 'nbdiff[cuda]')"
    try:
        from numba import cuda

        cuda.compile_ptx(lambda a: None, "(float32[::1],)", cc=(7, 5))
    except Exception as exc:  # NVVM missing: the cu13 toolkit wheels are not installed
        return f"numba-cuda cannot compile PTX here (NVVM missing? pip install 'nbdiff[cuda]'): {exc}"
    return None


def test_cuda_problem_is_lazy_and_reports():
    """``import nbdiff.cuda`` loads no numba; ``cuda_problem()`` answers a string or None without raising."""
    code = "import sys, nbdiff, nbdiff.cuda; assert 'numba' not in sys.modules; print(nbdiff.cuda.cuda_problem())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # None here, or why not


@pytest.mark.slow
def test_simulator_suite():
    """tests/cuda/sim_device_plan.py in its own process with NUMBA_ENABLE_CUDASIM=1 (numba reads it at import)."""
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed (pip install 'nbdiff[cuda]')")
    env = dict(
        os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "tests/cuda/sim_device_plan.py"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def _row_graphs():
    """Each op-table row's value-and-gradient graph in float64 and float32 (rewritten by the default pipeline)."""
    for case in all_cases():
        for dtype in ("float64", "float32"):
            if dtype not in case.dtypes:
                continue
            arrays = case.arrays(dtype)
            variables = [nd.tensor(f"in{i}", dtype=a.dtype.name, ndim=a.ndim) for i, a in enumerate(arrays)]
            try:
                out = case.build(*variables)
                outputs = [out]
                wrt = [v for v in variables if v.dtype.startswith("float")]
                if case.grad and wrt and out.dtype.startswith("float"):
                    outputs += nd.grad(nd.sum(out), wrt)
                yield nd.function(variables, outputs, backend="numpy").graph
            except NbdiffError:
                continue


def _kernels(graph):
    """``(label, module text, function, signature, float dtypes)`` of every CUDA kernel the graph's nodes use: the
    modules and eager signatures the CUDA target plans (``graph_units``: what the compile worker compiles), and the
    data-movement helpers every runner may use."""
    from nbdiff.cuda import templates
    from nbdiff.cuda.target import graph_units

    for unit in graph_units(graph, []):
        node = unit.node
        dtypes = {v.dtype for v in [*node.inputs, *node.outputs] if v.dtype.startswith("float")}
        for module in unit.modules:
            for signature in module.signatures:
                yield module.name, module.source, module.function, signature, dtypes
        for dtype in dtypes:
            vector = f"{dtype}[::1]"
            helpers = templates.helpers_source(dtype)
            yield f"helpers_{dtype}", helpers, "gather", f"(int64, {vector}, int64[::1], {vector})", {dtype}
            yield f"helpers_{dtype}", helpers, "fill", f"(int64, {vector}, {vector})", {dtype}


@pytest.mark.slow
def test_every_op_table_kernel_compiles_to_ptx(tmp_path):
    """Every fused and op kernel of every op-table row types for a real device (sm_75), in float32 and float64;
    float32 kernels contain no ``.f64`` (module docstring)."""
    problem = _missing_toolkit()
    if problem:
        pytest.skip(problem)
    from numba import cuda

    from nbdiff.backends.cache import import_module_from, kernels_directory, write_module

    directory = kernels_directory(tmp_path)
    seen: set[tuple[str, str]] = set()
    compiled = {"float32": 0, "float64": 0}
    for graph in _row_graphs():
        for label, source, function, signature, dtypes in _kernels(graph):
            key = (source, signature)
            if key in seen:
                continue
            seen.add(key)
            name = f"ptx_{label}_{abs(hash(source)) % 10**12}"
            module = import_module_from(write_module(directory, name, source), name)
            ptx, _ = cuda.compile_ptx(getattr(module, function).py_func, signature, cc=(7, 5))
            if dtypes == {"float32"}:
                promoted = float64_promotions(ptx)
                assert not promoted, f"float32 kernel {label}{signature} uses float64: {promoted}\n{source}"
            for dtype in dtypes:
                compiled[dtype] += 1
    assert compiled["float32"] > 50 and compiled["float64"] > 50, compiled


def test_float32_literal_promotion_is_detected():
    """The PTX check catches what it is for: an untyped literal in a float32 kernel shows as .f64."""
    problem = _missing_toolkit()
    if problem:
        pytest.skip(problem)
    from numba import cuda

    def promoted(x, out):
        out[0] = x[0] * 0.1

    ptx, _ = cuda.compile_ptx(promoted, "(float32[::1], float32[::1])", cc=(7, 5))
    assert any("cvt.f64.f32" in line for line in float64_promotions(ptx))

    def typed(x, out):
        out[0] = math.sin(x[0]) * np.float32(0.1)

    ptx, _ = cuda.compile_ptx(typed, "(float32[::1], float32[::1])", cc=(7, 5))
    assert float64_promotions(ptx) == []


def test_launch_config_covers_the_work_within_the_limits():
    from nbdiff.cuda.launch import GridLimits, grid_limits, launch_config

    assert launch_config(10).threads == 32 and launch_config(10).blocks == 1
    big = launch_config(10**8)
    assert big.threads == 256 and big.blocks * big.threads * 4 >= min(10**8, big.blocks * big.threads * 4)
    with grid_limits(32, 2):
        tiny = launch_config(10**6)
        assert (tiny.blocks, tiny.threads) == (2, 32)
    assert launch_config(10**6).threads == 256  # the limits end with the block
    with pytest.raises(ValueError):
        GridLimits(threads=48)


def test_fused_module_text_is_typed_and_named_for_cuda():
    """The CUDA module of a float32 kernel: the CPU's scalar body with typed literals (sigmoid's 1.0), a
    cuda-tagged name, a block reduction for the trailing sum, and no float64 constructor anywhere."""
    from nbdiff.cuda.source import cuda_module_source, kernel_signature, module_name
    from nbdiff.ops.fused import FusedElemwise

    x = nd.vector("x", dtype="float32")
    graph = nd.function([x], nd.sum(nd.sigmoid(x) * 2.0), backend="numpy").graph
    (op,) = [node.op for node in graph.nodes if isinstance(node.op, FusedElemwise)]
    text = cuda_module_source(op)
    assert module_name(op).endswith("_cuda_v1") and op.structural_hash() in module_name(op)
    assert "@cuda.jit(cache=True)" in text and "cuda.atomic.add(sum0, 0, shared0[0])" in text
    assert "np.float32(1.0)" in text and "float64" not in text.split('"""')[-1]
    assert kernel_signature(op) == "(int64, float32[::1], float32[::1], float32[::1])"


def test_cuda_backend_without_a_gpu_falls_back_with_its_reason():
    """Outside the simulator and without a GPU, backend="cuda" does not raise: the status says why, the interpreter
    answers, and "auto" stays off CUDA."""
    from nbdiff.cuda import cuda_problem

    problem = cuda_problem()
    if problem is None:
        pytest.skip("a CUDA GPU is usable here")
    x = nd.vector("x")
    f = nd.function([x], nd.tanh(x) * 2.0, backend="cuda")
    assert f.wait(0) == f"fallback: CUDA unavailable: {problem}" and f.events == []
    np.testing.assert_allclose(f(np.ones(3)), np.tanh(np.ones(3)) * 2.0)
    assert f.backend == "numpy" and f.status.startswith("fallback: CUDA unavailable: ")
    with nd.option_context(compile=True):
        g = nd.function([x], nd.tanh(x) * 2.0)
        g(np.ones(3))
        assert g.backend != "cuda"


def test_the_worker_compiles_a_job_through_its_targets_compiler(tmp_path, monkeypatch):
    """A job naming a compiler (the CUDA target's ``compile_in_worker``) is compiled by it, then marked compiled;
    a job without one takes the Numba CPU path."""
    from nbdiff.backends import cache, worker

    calls = []
    monkeypatch.setattr(sys.modules[__name__], "recorded_compiler", lambda job: calls.append(job), raising=False)
    path = cache.write_module(cache.kernels_directory(tmp_path), "nbdiff_test_compiler_job", "X = 1\n")
    job = worker.CompileJob(
        str(path), "nbdiff_test_compiler_job", "kernel", ("(int64,)",), "t", f"{__name__}:recorded_compiler"
    )
    result = worker.compile_job(job)
    assert result.ok, result.error
    assert calls == [job] and cache.is_compiled(path, ("(int64,)",))
    assert worker._key(job) != worker._key(worker.CompileJob(job.path, job.name, job.function, job.signatures))

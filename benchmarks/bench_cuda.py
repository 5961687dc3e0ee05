"""The CUDA target (``backend="cuda"``: numba-cuda kernels on a device plan) against the device's own copy bandwidth
and the peers (PyTorch CUDA eager and torch.compile, JAX on the GPU), in one run.

Workloads (each contestant's values are checked against the interpreter's before it is timed; medians of
round-robin samples, each sample synchronised with the device):
  W1    value + gradient of sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x)) at n = 1e8, float32 and float64, the input
        and outputs on the device (``device_outputs=True``: no host transfer in the figure). The least memory
        traffic a value+gradient can have is reading x and writing the gradient (2 n itemsize bytes); its
        effective bandwidth is set against the device-to-device copy bandwidth measured in the same run (a copy
        of the same n elements: also 2 n itemsize bytes moved). Acceptance (issue 10): at least 60% of it.
  MLP   a float32 MLP step 4096x784 -> 256 relu -> 10, softmax cross-entropy, the loss and the gradients of the
        four parameters, inputs on the device.
  Compile: seconds from ``nd.function`` to ``f.wait()`` (the worker compiling, cold or warm cache as found).

Without a usable GPU it prints why and exits with status 0, measuring nothing. ``--simulator --quick`` runs the
same code in numba's CUDA simulator on tiny sizes and grids (to exercise the script without a GPU: its figures mean
nothing). Peers are optional: a missing one (or one without a GPU) prints why.

Run: ``python benchmarks/bench_cuda.py`` (``--quick``: 5 repeats instead of 21 and n = 1e7; ``--json PATH``;
``--no-peers``; ``--simulator``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

if "--simulator" in sys.argv:  # numba reads this once, at its import: before anything imports numba
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np
from bench_interpreter import mlp_args, mlp_outputs, w1_graph
from bench_rewrites import w1_expression
from common import format_seconds, machine_info

import nbdiff as nd

ACCEPT_BANDWIDTH_FRACTION = 0.60
Call = Callable[[], Any]


class Unavailable(Exception):
    """A contestant that does not run here: its row says why."""


# ---------------------------------------------------------------------------------------------------------------
# Timing on the device
# ---------------------------------------------------------------------------------------------------------------
def timed(samples: dict[str, Call], repeats: int, synchronize: Call) -> dict[str, float]:
    """Median seconds of each sample, round-robin, each call followed by a device synchronisation (launches are
    asynchronous: the time is the device's work, not the launch's)."""
    for fn in list(samples.values()) * 2:  # warm-up: compiles, caches, allocators
        fn()
        synchronize()
    times: dict[str, list[float]] = {label: [] for label in samples}
    for _ in range(repeats):
        for label, fn in samples.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def host(value: Any) -> np.ndarray:
    """A device array (numba's, PyTorch's, JAX's) or host value as a NumPy array."""
    if hasattr(value, "copy_to_host"):
        return np.asarray(value.copy_to_host())
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check(label: str, got: Any, expected: Any, dtype: str) -> None:
    """``got`` (a list of outputs) agrees with the interpreter's ``expected`` at ``dtype``'s tolerance."""
    rtol = 2e-3 if dtype == "float32" else 1e-8
    for position, (g, e) in enumerate(zip(got, expected)):
        g, e = host(g).astype(np.float64), np.asarray(e, np.float64)
        scale = max(float(np.max(np.abs(e), initial=0.0)), 1.0)
        if g.shape != e.shape or not np.allclose(g, e, rtol=rtol, atol=rtol * scale * (1 + np.sqrt(e.size))):
            raise SystemExit(f"bench_cuda: {label} output {position} disagrees with the interpreter")


def compiled_cuda(inputs: list, outputs: list, args: tuple) -> tuple[nd.Function, float]:
    """An ``nd.function`` on the CUDA target, compiled and answering from the device; seconds to compile."""
    start = time.perf_counter()
    f = nd.function(inputs, outputs, backend="cuda", device_outputs=True)
    status = f.wait(600)
    seconds = time.perf_counter() - start
    f(*args)  # the first call checks the device against the interpreter
    if f.status != "compiled" or f.backend != "cuda":
        raise SystemExit(f"bench_cuda: the CUDA target did not take over: {status} / {f.status}")
    return f, seconds


def need(module: str) -> Any:
    """Import a peer or raise ``Unavailable``."""
    try:
        return __import__(module)
    except ImportError:
        raise Unavailable("not installed") from None


def torch_cuda() -> Any:
    torch = need("torch")
    if not torch.cuda.is_available():
        raise Unavailable("PyTorch sees no CUDA device")
    return torch


def jax_gpu() -> Any:
    jax = need("jax")
    jax.config.update("jax_enable_x64", True)  # else float64 inputs silently become float32 (W1 float64 disagreed)
    if not any(d.platform == "gpu" for d in jax.devices()):
        raise Unavailable("JAX has no GPU backend here")
    return jax


# ---------------------------------------------------------------------------------------------------------------
# W1
# ---------------------------------------------------------------------------------------------------------------
def w1_peers(x: np.ndarray) -> dict[str, Call]:
    """PyTorch eager, torch.compile and JAX value+gradient of W1 on the device (failures become reasons)."""
    peers: dict[str, Call] = {}
    try:
        torch = torch_cuda()
        xt = torch.from_numpy(x).cuda().requires_grad_()

        def eager() -> Any:
            y = w1_expression(torch, xt)
            return y.detach(), torch.autograd.grad(y, xt)[0]

        peers["PyTorch CUDA"] = eager
        compiled = torch.compile(torch.func.grad_and_value(lambda v: w1_expression(torch, v)))
        xd = xt.detach()
        peers["torch.compile"] = lambda: compiled(xd)[::-1]
    except Unavailable as why:
        peers["PyTorch"] = why  # type: ignore[assignment]
    try:
        jax = jax_gpu()
        jx = jax.device_put(x)
        step = jax.jit(jax.value_and_grad(lambda v: w1_expression(jax.numpy, v)))
        peers["JAX"] = lambda: step(jx)
    except Unavailable as why:
        peers["JAX"] = why  # type: ignore[assignment]
    return peers


def bench_w1(n: int, dtype: str, repeats: int, peers: bool) -> dict[str, Any]:
    from numba import cuda

    rng = np.random.default_rng(1)
    x = rng.uniform(-2.0, 2.0, n).astype(dtype)
    xv = nd.vector("x", dtype=dtype)
    y = w1_graph(xv)
    outputs = [y, nd.grad(y, xv)]
    check_n = min(n, 100_000)  # the interpreter's reference on a prefix (the full size is checked by the runner)
    expected = nd.function([xv], outputs, backend="numpy")(x[:check_n])
    xd = cuda.to_device(x)
    f, compile_s = compiled_cuda([xv], outputs, (cuda.to_device(x[:check_n]),))
    check(f"W1 {dtype} nbdiff", f(cuda.to_device(x[:check_n])), expected, dtype)
    out = cuda.device_array_like(xd)
    samples: dict[str, Call] = {
        "nbdiff cuda": lambda: f(xd),
        "device copy": lambda: out.copy_to_device(xd),
    }
    reasons: dict[str, str] = {}
    if peers:  # each peer checked against nbdiff's full-size answer (itself checked against the interpreter above)
        reference = [host(v) for v in f(xd)]
        for label, call in w1_peers(x).items():
            if isinstance(call, Unavailable):
                reasons[label] = str(call)
                continue
            try:
                check(f"W1 {dtype} {label}", list(call()), reference, dtype)
            except Exception as exc:  # a peer that fails here is reported, not fatal
                reasons[label] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                continue
            samples[label] = call
    times = timed(samples, repeats, cuda.synchronize)
    moved = 2 * n * np.dtype(dtype).itemsize
    copy_bw = moved / times["device copy"]
    w1_bw = moved / times["nbdiff cuda"]
    return {
        "n": n,
        "dtype": dtype,
        "seconds": times,
        "unavailable": reasons,
        "compile_seconds": compile_s,
        "copy_GBps": copy_bw / 1e9,
        "nbdiff_GBps": w1_bw / 1e9,
        "fraction_of_copy": w1_bw / copy_bw,
    }


# ---------------------------------------------------------------------------------------------------------------
# MLP step
# ---------------------------------------------------------------------------------------------------------------
def mlp_peers(args: tuple) -> dict[str, Any]:
    """PyTorch eager, torch.compile and JAX loss and gradients of the MLP step on the device. Each library's step
    is built in its own function: sharing one scope, the JAX names (``X``, ``loss_of``) replaced the ones PyTorch's
    closures read, and both PyTorch rows failed on a real GPU."""
    return {**_torch_mlp_peers(args), **_jax_mlp_peer(args)}


def _torch_mlp_peers(args: tuple) -> dict[str, Any]:
    """PyTorch eager and torch.compile rows (or why they are unavailable)."""
    try:
        torch = torch_cuda()
    except Unavailable as why:
        return {"PyTorch": why}
    X, labels, *params = [torch.from_numpy(a).cuda() for a in args]
    params = [p.requires_grad_() for p in params]

    def loss_of(W1, b1, W2, b2) -> Any:
        logits = torch.relu(X @ W1 + b1) @ W2 + b2
        return torch.nn.functional.cross_entropy(logits, labels)

    def eager() -> Any:
        loss = loss_of(*params)
        return [loss.detach(), *torch.autograd.grad(loss, params)]

    compiled = torch.compile(torch.func.grad_and_value(loss_of, argnums=(0, 1, 2, 3)))
    plain = [p.detach() for p in params]

    def compiled_step() -> Any:
        grads, loss = compiled(*plain)
        return [loss, *grads]

    return {"PyTorch CUDA": eager, "torch.compile": compiled_step}


def _jax_mlp_peer(args: tuple) -> dict[str, Any]:
    """The JAX row (or why it is unavailable)."""
    try:
        jax = jax_gpu()
    except Unavailable as why:
        return {"JAX": why}
    jnp = jax.numpy
    X, labels, *params = [jax.device_put(a) for a in args]

    def loss_of(params: Any) -> Any:
        W1, b1, W2, b2 = params
        logits = jnp.maximum(X @ W1 + b1, 0) @ W2 + b2
        log_probs = jax.nn.log_softmax(logits, axis=1)
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

    step = jax.jit(jax.value_and_grad(loss_of))

    def jax_step() -> Any:
        loss, grads = step(tuple(params))
        return [loss, *grads]

    return {"JAX": jax_step}


def bench_mlp(batch: int, repeats: int, peers: bool, sizes: tuple[int, int, int]) -> dict[str, Any]:
    from numba import cuda

    args = mlp_args(np.random.default_rng(2), batch, *sizes)
    inputs, outputs = mlp_outputs()
    expected = nd.function(inputs, outputs, backend="numpy")(*args)
    device_args = tuple(cuda.to_device(a) for a in args)
    f, compile_s = compiled_cuda(inputs, outputs, device_args)
    check("MLP nbdiff", f(*device_args), expected, "float32")
    samples: dict[str, Call] = {"nbdiff cuda": lambda: f(*device_args)}
    reasons: dict[str, str] = {}
    if peers:
        for label, call in mlp_peers(args).items():
            if isinstance(call, Unavailable):
                reasons[label] = str(call)
                continue
            try:
                check(f"MLP {label}", call(), expected, "float32")
            except Exception as exc:
                reasons[label] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                continue
            samples[label] = call
    times = timed(samples, repeats, cuda.synchronize)
    return {"batch": batch, "seconds": times, "unavailable": reasons, "compile_seconds": compile_s}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def print_w1(result: dict[str, Any], simulator: bool = False) -> None:
    print(f"\nW1 value+gradient, n = {result['n']:.0e}, {result['dtype']} (compile {result['compile_seconds']:.2f} s)")
    for label, seconds in result["seconds"].items():
        print(f"  {label:16s} {format_seconds(seconds)}")
    for label, why in result["unavailable"].items():
        print(f"  {label:16s} {why}")
    fraction = result["fraction_of_copy"]
    verdict = "n/a (simulator)" if simulator else "PASS" if fraction >= ACCEPT_BANDWIDTH_FRACTION else "FAIL"
    print(
        f"  {verdict}: nbdiff {result['nbdiff_GBps']:.1f} GB/s effective (2 n itemsize bytes) = {fraction:.0%} of the "
        f"device copy's {result['copy_GBps']:.1f} GB/s (acceptance >= {ACCEPT_BANDWIDTH_FRACTION:.0%})"
    )


def print_mlp(result: dict[str, Any]) -> None:
    print(f"\nMLP step, batch {result['batch']}, float32 (compile {result['compile_seconds']:.2f} s)")
    reference = result["seconds"]["nbdiff cuda"]
    for label, seconds in result["seconds"].items():
        print(f"  {label:16s} {format_seconds(seconds)}  {seconds / reference:6.2f}x nbdiff")
    for label, why in result["unavailable"].items():
        print(f"  {label:16s} {why}")


def device_name() -> str:
    from numba import cuda

    with contextlib.suppress(Exception):
        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
        return f"{name} (compute capability {'.'.join(map(str, device.compute_capability))})"
    return "unknown device"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 21, W1 at n = 1e7")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    parser.add_argument("--simulator", action="store_true", help="numba's CUDA simulator, tiny sizes (no figures)")
    options = parser.parse_args()
    from nbdiff.cuda import cuda_problem

    problem = cuda_problem()
    if problem is not None:
        print(f"bench_cuda: nothing measured: {problem}")
        print("  (run it on a machine with an NVIDIA GPU and `pip install 'nbdiff[cuda]'`, or with --simulator)")
        return
    repeats = 5 if options.quick else 21
    limits: Any = contextlib.nullcontext()
    if options.simulator:
        from nbdiff.cuda.launch import grid_limits

        limits = grid_limits(32, 2)  # the simulator runs one OS thread per CUDA thread
        n, batch, sizes, repeats, peers = 512, 8, (12, 6, 4), 2, False
    else:
        n, batch, sizes, peers = (10**7 if options.quick else 10**8), 4096, (784, 256, 10), not options.no_peers
    print(f"bench_cuda on {device_name()}{' (SIMULATOR: the figures mean nothing)' if options.simulator else ''}")
    results: dict[str, Any] = {"machine": {**machine_info(), "device": device_name(), "simulator": options.simulator}}
    with limits:
        for dtype in ("float32", "float64"):
            results[f"W1 {dtype}"] = result = bench_w1(n, dtype, repeats, peers)
            print_w1(result, options.simulator)
        results["MLP"] = result = bench_mlp(batch, repeats, peers, sizes)
        print_mlp(result)
    if options.json:
        with open(options.json, "w") as file:
            json.dump(results, file, indent=2, default=str)


if __name__ == "__main__":
    main()

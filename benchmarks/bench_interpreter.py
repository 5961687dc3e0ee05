"""The NumPy interpreter against NumPy written by hand, on the same work, in one run.

Prints medians and ratios (nbdiff time / hand-written time) for:
  W1   value + gradient of sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x)), n = 1e6      (target <= 1.3x)
  MLP  float32 training step 256x784 -> 256 relu -> 10, softmax cross-entropy,
       gradients of all four parameters                                               (target <= 1.3x)
  HVP  Hessian-vector product of W1, n = 1e6                                          (target <= 2x)
  MEM  peak memory of W1 (tracemalloc)                                                (target <= 1.5x)
  CHAIN build + differentiate + nd.function for 1,000 and 10,000-op chains            (target < 10 s, ~linear)

Every workload is checked for correctness before it is timed. Run: ``python benchmarks/bench_interpreter.py``
(``--quick`` for fewer repeats; ``--json PATH`` to save the figures).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from typing import Callable

import numpy as np
from common import interleaved, machine_info

import nbdiff as nd


# -- W1 -------------------------------------------------------------------------------------------------------------
def w1_graph(x):
    return nd.sum(nd.tanh(x) * nd.exp(-(x**2)) + nd.log1p(x**2) * nd.sin(3 * x))


def w1_numpy(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Value and gradient, hand-written with shared temporaries."""
    x2 = x * x
    e = np.exp(-x2)
    t = np.tanh(x)
    s = np.sin(3 * x)
    log_term = np.log1p(x2)
    value = np.sum(t * e + log_term * s)
    grad = (1 - t * t) * e - 2 * x * t * e + 2 * x / (1 + x2) * s + 3 * log_term * np.cos(3 * x)
    return value, grad


def w1_second_derivative(x):
    """W1's second derivative f''(x), derived by hand (W1's Hessian is diagonal). Written with NumPy's functions so
    it serves arrays here and, compiled with ``numba.njit``, scalars inside bench_cpu.py's hand-fused kernel."""
    x2 = x * x
    e = np.exp(-x2)
    t = np.tanh(x)
    s = np.sin(3.0 * x)
    c = np.cos(3.0 * x)
    q = 1.0 + x2
    sech2 = 1.0 - t * t
    return (
        -2.0 * t * sech2 * e
        - 4.0 * x * sech2 * e
        - 2.0 * t * e
        + 4.0 * x2 * t * e
        + 2.0 * s / q
        + 12.0 * x * c / q
        - 4.0 * x2 * s / (q * q)
        - 9.0 * np.log1p(x2) * s
    )


def w1_hvp_numpy(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hessian-vector product of W1: the Hessian is diagonal, so H v = f''(x) * v."""
    return w1_second_derivative(x) * v


def bench_w1(n: int, repeats: int) -> dict:
    x = nd.vector("x")
    y = w1_graph(x)
    f = nd.function([x], [y, nd.grad(y, x)], backend="numpy")
    xv = np.random.default_rng(0).uniform(-2, 2, n)
    value, grad = f(xv)
    ref_value, ref_grad = w1_numpy(xv)
    assert np.isclose(value, ref_value, rtol=1e-10) and np.allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)
    t_nd, t_np = interleaved(lambda: f(xv), lambda: w1_numpy(xv), repeats)
    return {"nbdiff_s": t_nd, "numpy_s": t_np, "ratio": t_nd / t_np, "target": 1.3, "nodes": len(f.graph.nodes)}


def bench_hvp(n: int, repeats: int) -> dict:
    x, v = nd.vector("x"), nd.vector("v")
    hv = nd.Rop(nd.grad(w1_graph(x), x), x, v)
    f = nd.function([x, v], hv, backend="numpy")
    rng = np.random.default_rng(1)
    xv, vv = rng.uniform(-2, 2, n), rng.standard_normal(n)
    assert np.allclose(f(xv, vv), w1_hvp_numpy(xv, vv), rtol=1e-8, atol=1e-10)
    t_nd, t_np = interleaved(lambda: f(xv, vv), lambda: w1_hvp_numpy(xv, vv), repeats)
    return {"nbdiff_s": t_nd, "numpy_s": t_np, "ratio": t_nd / t_np, "target": 2.0, "nodes": len(f.graph.nodes)}


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (NumPy reports its buffers to tracemalloc) while running ``fn``."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak


def bench_memory(n: int) -> dict:
    x = nd.vector("x")
    y = w1_graph(x)
    f = nd.function([x], [y, nd.grad(y, x)], backend="numpy")
    xv = np.random.default_rng(0).uniform(-2, 2, n)
    f(xv)
    nd_peak = peak_memory(lambda: f(xv))
    np_peak = peak_memory(lambda: w1_numpy(xv))
    return {"nbdiff_bytes": nd_peak, "numpy_bytes": np_peak, "ratio": nd_peak / np_peak, "target": 1.5}


# -- MLP ------------------------------------------------------------------------------------------------------------
def mlp_numpy(X, labels, W1, b1, W2, b2):
    """Forward and backward of a 2-layer MLP with softmax cross-entropy, by hand, in float32."""
    batch = X.shape[0]
    h_pre = X @ W1 + b1
    h = np.maximum(h_pre, 0)
    logits = h @ W2 + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(total)
    loss = -log_probs[np.arange(batch), labels].mean()
    d_logits = exp / total
    d_logits[np.arange(batch), labels] -= 1
    d_logits /= batch
    gW2 = h.T @ d_logits
    gb2 = d_logits.sum(axis=0)
    dh = d_logits @ W2.T
    dh *= h_pre > 0
    gW1 = X.T @ dh
    gb1 = dh.sum(axis=0)
    return loss, gW1, gb1, gW2, gb2


def mlp_outputs() -> tuple[list, list]:
    """Inputs (X, labels, W1, b1, W2, b2) and outputs (loss and the four gradients) of the MLP step."""
    X = nd.matrix("X", dtype="float32")
    labels = nd.vector("labels", dtype="int64")
    W1 = nd.matrix("W1", dtype="float32")
    b1 = nd.vector("b1", dtype="float32")
    W2 = nd.matrix("W2", dtype="float32")
    b2 = nd.vector("b2", dtype="float32")
    hidden = nd.relu(X @ W1 + b1)
    log_probs = nd.log_softmax(hidden @ W2 + b2, axis=1)
    picked = nd.take_along_axis(log_probs, nd.expand_dims(labels, 1), axis=1)
    loss = -nd.mean(picked)
    grads = nd.grad(loss, [W1, b1, W2, b2])
    return [X, labels, W1, b1, W2, b2], [loss, *grads]


def mlp_graph():
    """The MLP step as an ``nd.function`` (default rewrites)."""
    return nd.function(*mlp_outputs(), backend="numpy")


def mlp_args(rng: np.random.Generator, batch: int, n_in: int, n_hidden: int, n_out: int) -> tuple:
    """Random float32 data, int64 labels and small initial weights for the MLP step."""
    return (
        rng.standard_normal((batch, n_in)).astype("float32"),
        rng.integers(0, n_out, batch),
        (rng.standard_normal((n_in, n_hidden)) * 0.05).astype("float32"),
        np.zeros(n_hidden, "float32"),
        (rng.standard_normal((n_hidden, n_out)) * 0.05).astype("float32"),
        np.zeros(n_out, "float32"),
    )


def bench_mlp(repeats: int) -> dict:
    args = mlp_args(np.random.default_rng(2), 256, 784, 256, 10)
    f = mlp_graph()
    got = f(*args)
    expected = mlp_numpy(*args)
    for g, e in zip(got, expected):
        assert np.asarray(g).dtype == np.float32, "float32 must stay float32"
        assert np.allclose(g, e, rtol=1e-4, atol=1e-6)
    t_nd, t_np = interleaved(lambda: f(*args), lambda: mlp_numpy(*args), repeats)
    return {"nbdiff_s": t_nd, "numpy_s": t_np, "ratio": t_nd / t_np, "target": 1.3, "nodes": len(f.graph.nodes)}


# -- long chains ----------------------------------------------------------------------------------------------------
def chain_seconds(length: int) -> float:
    """Build a chain of ``length`` ops, differentiate it and prepare nd.function; return the seconds taken."""
    start = time.perf_counter()
    x = nd.vector("x")
    y = x
    for i in range(length // 2):
        y = nd.tanh(y) * (1.0 + 1e-3 * (i % 7))
    f = nd.function([x], [nd.sum(y), nd.grad(nd.sum(y), x)], backend="numpy")
    elapsed = time.perf_counter() - start
    value, grad = f(np.linspace(-1, 1, 5))
    assert np.all(np.isfinite(grad))
    return elapsed


def bench_chain() -> dict:
    t1k = min(chain_seconds(1_000) for _ in range(3))
    t10k = min(chain_seconds(10_000) for _ in range(2))
    return {"1k_s": t1k, "10k_s": t10k, "ratio_10k_1k": t10k / t1k, "target_10k_s": 10.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    repeats = 5 if args.quick else 21
    n = 1_000_000
    results = {
        "machine": machine_info(),
        "W1 value+grad n=1e6": bench_w1(n, repeats),
        "MLP float32 step": bench_mlp(repeats),
        "HVP of W1 n=1e6": bench_hvp(n, repeats),
        "W1 peak memory n=1e6": bench_memory(n),
        "chain 1k vs 10k ops": bench_chain(),
    }
    print(f"nbdiff interpreter vs hand-written NumPy (medians of {repeats} interleaved runs)")
    print(f"{'workload':28s} {'nbdiff':>12s} {'numpy':>12s} {'ratio':>7s} {'target':>7s}")
    for name, r in results.items():
        if "nbdiff_s" in r:
            print(
                f"{name:28s} {r['nbdiff_s'] * 1e3:10.2f}ms {r['numpy_s'] * 1e3:10.2f}ms {r['ratio']:7.2f} "
                f"{r['target']:7.2f}"
            )
        elif "nbdiff_bytes" in r:
            print(
                f"{name:28s} {r['nbdiff_bytes'] / 1e6:10.1f}MB {r['numpy_bytes'] / 1e6:10.1f}MB "
                f"{r['ratio']:7.2f} {r['target']:7.2f}"
            )
        elif "1k_s" in r:
            print(f"{name:28s} {r['1k_s']:11.3f}s {r['10k_s']:11.3f}s {r['ratio_10k_1k']:7.2f}  (10k < 10 s)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()

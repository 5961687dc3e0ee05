"""Where a ``parallel=True`` kernel pays on this machine, and what BLAS threads do to it.

1. Threshold: nbdiff's own serial and parallel modules of two fused kernels (W1's value + gradient, heavy on
   transcendentals; and a cheap one, ``sum(x * y + 1)`` with the gradient), timed side by side at sizes from 1e3
   to 1e6 (median of interleaved samples); the printed crossover is the smallest size from which the parallel
   module is faster at every larger size (``nbdiff.backends.parallelism``, docs/architecture.md).
2. BLAS beside parallel loops: W2's first matmul (float32 256x784 @ 784x256) followed at once by the W1 kernel's
   parallel module at 1e6 elements, with NumPy's OpenBLAS at its default thread count and limited to one thread
   (threadpoolctl), to see whether BLAS threads still spinning after the matmul slow the Numba threads.

Run: ``python benchmarks/bench_parallel.py`` (``--quick`` for fewer samples). Numbers are noisy on a shared
machine: compare the columns of one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from bench_interpreter import w1_graph

import nbdiff as nd
from nbdiff.backends.cpu_source import cpu_module_source, kernel_arguments

SIZES = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)


def kernel_inputs(f: nd.Function, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The arrays of the function's one kernel's inputs: the function's own, and the constants."""
    (kernel,) = f.kernels
    given = {id(v): a for v, a in zip(f.inputs, arrays)}
    return [given[id(v)] if id(v) in given else np.asarray(v.data) for v in kernel.node.inputs]


def kernel_modules(f: nd.Function, folder: Path) -> tuple[Any, Any, Any]:
    """The function's one fused kernel op and its serial and parallel modules, compiled here."""
    (kernel,) = f.kernels
    modules = []
    for parallel in (False, True):
        path = folder / f"k_{id(kernel)}_{int(parallel)}.py"
        path.write_text(cpu_module_source(kernel.op, parallel=parallel, fastmath=False))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        modules.append(module)
    return kernel.op, modules[0], modules[1]


def median_seconds(call: Callable[[], Any], samples: int) -> float:
    """The median of ``samples`` timings, each of enough calls to last about 2 ms."""
    call()
    start = time.perf_counter()
    call()
    number = max(1, int(0.002 / max(time.perf_counter() - start, 1e-7)))
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(number):
            call()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def threshold(name: str, f: nd.Function, arrays_for: Callable[[int], list[np.ndarray]], samples: int) -> int | None:
    """Prints serial and parallel times per size; returns the crossover size (None when parallel never wins)."""
    with tempfile.TemporaryDirectory() as folder:
        op, serial, parallel = kernel_modules(f, Path(folder))
        print(f"\n{name}: median per call, serial / parallel module")
        wins = []
        for n in SIZES:
            _, args = kernel_arguments(op, kernel_inputs(f, arrays_for(n)))
            times = [0.0, 0.0]
            for _ in range(3):  # interleaved rounds: both modules see the same load
                for k, module in enumerate((serial, parallel)):
                    times[k] += median_seconds(lambda module=module, args=args: module.kernel(*args), samples)
            wins.append(times[1] < times[0])
            print(
                f"  n={n:>9,}  serial {times[0] / 3 * 1e6:10.1f} us  parallel {times[1] / 3 * 1e6:10.1f} us  "
                f"ratio {times[1] / times[0]:.2f}"
            )
    for k, n in enumerate(SIZES):
        if all(wins[k:]):
            return n
    return None


def blas_beside_parallel(samples: int) -> None:
    """A matmul followed by a parallel kernel, BLAS at its default thread count and at one thread."""
    from threadpoolctl import threadpool_limits

    x = nd.vector("x")
    y = w1_graph(x)
    f = nd.function([x], [y, nd.grad(y, x)], backend="numpy")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 784), dtype=np.float32), rng.standard_normal((784, 256), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        op, _, parallel = kernel_modules(f, Path(folder))
        _, args = kernel_arguments(op, kernel_inputs(f, [rng.uniform(-2, 2, 1_000_000)]))
        print("\nmatmul then parallel kernel (1e6), median per pair; and each alone")
        for label, limit in (("BLAS default threads", None), ("BLAS limited to 1 thread", 1)):
            with threadpool_limits(limits=limit, user_api="blas"):
                pair = median_seconds(lambda: (a @ b, parallel.kernel(*args)), samples)
                matmul = median_seconds(lambda: a @ b, samples)
                kernel = median_seconds(lambda: parallel.kernel(*args), samples)
            print(
                f"  {label:26}  pair {pair * 1e3:7.2f} ms  matmul {matmul * 1e3:7.2f} ms  kernel {kernel * 1e3:7.2f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 samples per timing instead of 15")
    samples = 5 if parser.parse_args().quick else 15
    x, yv = nd.vector("x"), nd.vector("y")
    w1 = w1_graph(x)
    heavy = nd.function([x], [w1, nd.grad(w1, x)], backend="numpy")
    cheap_out = nd.sum(x * yv + 1)
    cheap = nd.function([x, yv], [cheap_out, nd.grad(cheap_out, x)], backend="numpy")
    rng = np.random.default_rng(0)
    found = {
        "W1 value + gradient": threshold("W1 value + gradient", heavy, lambda n: [rng.uniform(-2, 2, n)], samples),
        "sum(x * y + 1) + gradient": threshold(
            "sum(x * y + 1) + gradient", cheap, lambda n: [rng.standard_normal(n), rng.standard_normal(n)], samples
        ),
    }
    print()
    for name, n in found.items():
        print(f"crossover, {name}: {'parallel never faster' if n is None else f'{n:,} elements'}")
    blas_beside_parallel(samples)


if __name__ == "__main__":
    sys.exit(main())

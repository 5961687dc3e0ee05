"""The Hessian of W1's cost, sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x)), for x of unknown size, against JAX's
``jax.hessian`` and PyTensor's ``hessian`` in the same run.

nbdiff builds one graph for every size: the pullback of the gradient batched over the rows of an identity
(``nd.hessian``, reverse over reverse, no unrolling), run by the NumPy interpreter (``backend="numpy"``) and
compiled (``backend="cpu"``, waited for). JAX runs ``jax.jit(jax.hessian(f))`` in float64; PyTensor compiles
``pytensor.gradient.hessian`` (a scan over the gradient's elements) in its default mode. Values are checked against
nbdiff's interpreter before timing; medians of round-robin samples, ratios to JAX's (or to nbdiff compiled without
JAX).

The ``threshold`` section measures where ``jacobian``/``hessian`` stop unrolling (``mode="auto"`` unrolls static
sizes up to ``nbdiff.gradient.UNROLL_MAX``): for declared sizes, build + first call and the per-call time of the
unrolled graph against the batched one (interpreted).

Peers are optional (``pip install -e ".[bench]"``): a missing one prints "not installed".
Run: ``python benchmarks/bench_hessian.py`` (``--quick``: 5 repeats instead of 15; ``--only hessian,threshold``;
``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any, Callable

import numpy as np
from bench_interpreter import w1_graph
from common import format_seconds, interleaved_many, machine_info

import nbdiff as nd

SIZES = (200, 2_000)
THRESHOLD_SIZES = (4, 8, 16, 32, 64)
COMPILE_TIMEOUT_S = 300.0


def w1_hessian_numpy(x: np.ndarray) -> np.ndarray:
    """The analytic Hessian (diagonal: the cost is a sum of one-variable terms), for checking."""
    t, e, x2 = np.tanh(x), np.exp(-x * x), x * x
    s, c = np.sin(3 * x), np.cos(3 * x)
    f_tanh_exp = e * (-2 * t * (1 - t * t) - 4 * x * (1 - t * t) + t * (4 * x2 - 2))
    log1p_sin = (2 - 2 * x2) / (1 + x2) ** 2 * s + 2 * (2 * x / (1 + x2)) * 3 * c - 9 * np.log1p(x2) * s
    return np.diag(f_tanh_exp + log1p_sin)


def nbdiff_hessian(backend: str) -> nd.Function:
    """``nd.hessian`` of W1 for x of unknown size (declared nowhere)."""
    x = nd.vector("x")
    f = nd.function([x], nd.hessian(w1_graph(x), x), backend=backend)
    if backend == "cpu":
        status = f.wait(COMPILE_TIMEOUT_S)
        if not status.startswith("compiled"):
            raise RuntimeError(f"nbdiff did not compile: {status}")
    return f


def jax_hessian() -> Callable[[np.ndarray], Any] | str:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return "not installed"
    jax.config.update("jax_enable_x64", True)

    def cost(x):
        return jnp.sum(jnp.tanh(x) * jnp.exp(-(x**2)) + jnp.log1p(x**2) * jnp.sin(3 * x))

    compiled = jax.jit(jax.hessian(cost))
    return lambda x: compiled(x).block_until_ready()


def pytensor_hessian() -> Callable[[np.ndarray], Any] | str:
    try:
        import pytensor
        import pytensor.tensor as pt
        from pytensor.gradient import hessian
    except ImportError:
        return "not installed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = pt.vector("x", dtype="float64")
        cost = pt.sum(pt.tanh(x) * pt.exp(-(x**2)) + pt.log1p(x**2) * pt.sin(3 * x))
        fn = pytensor.function([x], hessian(cost, x))
    return fn


def run_hessian(repeats: int, figures: dict) -> None:
    print("Hessian of W1, x of unknown size: medians, ratio to JAX (or to nbdiff compiled without JAX)")
    contestants: dict[str, Any] = {
        "nbdiff interpreted": nbdiff_hessian("numpy"),
        "nbdiff compiled": nbdiff_hessian("cpu"),
        "jax.hessian (jit)": jax_hessian(),
        "pytensor hessian": pytensor_hessian(),
    }
    for n in SIZES:
        x = np.random.default_rng(0).uniform(-2.0, 2.0, n)
        expected = w1_hessian_numpy(x)
        samples: dict[str, Callable[[], Any]] = {}
        for label, fn in contestants.items():
            if isinstance(fn, str):
                print(f"  n={n:>5}  {label:<20} {fn}")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = np.asarray(fn(x))
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=label)
            samples[label] = lambda fn=fn, x=x: fn(x)
        medians = interleaved_many(samples, repeats)
        reference = medians.get("jax.hessian (jit)", medians["nbdiff compiled"])
        for label, seconds in medians.items():
            print(f"  n={n:>5}  {label:<20} {format_seconds(seconds)}  {seconds / reference:7.2f}x")
            figures.setdefault("hessian", {}).setdefault(str(n), {})[label] = seconds


def run_threshold(repeats: int, figures: dict) -> None:
    print("Unrolled against batched Jacobian rows (Hessian of W1, declared size, interpreted)")
    print("  n      build+1st unrolled  batched   per call unrolled  batched")
    for n in THRESHOLD_SIZES:
        x_value = np.random.default_rng(0).uniform(-2.0, 2.0, n)
        builds, calls = {}, {}
        for mode in ("unroll", "reverse"):
            start = time.perf_counter()
            x = nd.vector("x", shape=(n,))
            f = nd.function([x], nd.hessian(w1_graph(x), x, mode=mode), backend="numpy")
            f(x_value)
            builds[mode] = time.perf_counter() - start
            calls[mode] = f
        medians = interleaved_many({m: (lambda f=f, v=x_value: f(v)) for m, f in calls.items()}, repeats)
        figures.setdefault("threshold", {})[str(n)] = {"build": builds, "call": medians}
        print(
            f"  {n:<5}  {format_seconds(builds['unroll'])}  {format_seconds(builds['reverse'])}"
            f"        {format_seconds(medians['unroll'])}  {format_seconds(medians['reverse'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 15")
    parser.add_argument("--only", default="threshold,hessian", help="sections to run: threshold, hessian")
    parser.add_argument("--json", metavar="PATH", help="save the figures")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    figures: dict = {"machine": machine_info()}
    print(figures["machine"])
    sections = args.only.split(",")
    if "threshold" in sections:
        run_threshold(repeats, figures)
    if "hessian" in sections:
        run_hessian(repeats, figures)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()

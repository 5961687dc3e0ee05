"""``nd.scan`` on an explicit Euler ODE against a hand-written NumPy loop and a hand-written Numba loop, in one run.

The ODE is ``dy/dt = -k * y + sin(t)`` from ``t = 0``, 1,000 steps of ``dt = 1e-3``, over a state of 10 and of
10,000 elements. Timed (medians, round-robin):
  numpy        the loop written by hand in NumPy (one array expression per step)
  numba        the whole loop in one ``numba.njit`` function (the fastest a hand-written loop gets)
  scan/interp  ``nd.function`` of the scan, ``backend="numpy"``: the body's plan is run once per step
  scan/kernel  ``nd.function`` of the scan, ``backend="cpu"``: the elementwise body makes the whole loop one
               compiled kernel (``Scan.op_kernel``)
  grad/interp  the final state and its gradient with respect to ``k`` (forward scan + reverse scan)
  grad/cpu     the same with ``backend="cpu"``
Ratios are against numpy and numba. Every variant is checked against the NumPy loop before it is timed.
Run: ``python benchmarks/bench_scan.py`` (``--quick`` for fewer repeats; ``--json PATH`` to save the figures).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from common import format_seconds, interleaved_many, machine_info

import nbdiff as nd

STEPS = 1000
DT = 1e-3


def ode_numpy(y0: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The reference: the Euler loop in NumPy."""
    y, t = y0, 0.0
    for _ in range(STEPS):
        y = y + DT * (-k * y + np.sin(t))
        t += DT
    return y


def ode_numba():
    """The Euler loop in one compiled function, element by element (imported here: Numba is optional)."""
    import math

    import numba

    @numba.njit(cache=False, fastmath=False)
    def run(y0, k, steps, dt):
        y = y0.copy()
        t = 0.0
        for _ in range(steps):
            s = math.sin(t)
            for i in range(y.shape[0]):
                y[i] = y[i] + dt * (-k[i] * y[i] + s)
            t += dt
        return y

    return run


def ode_scan(y0: nd.Variable, k: nd.Variable) -> nd.Variable:
    """The same loop as an ``nd.scan`` over a carry ``(y, t)`` with a fixed length."""

    def step(carry, _):
        y, t = carry
        return (y + DT * (-k * y + nd.sin(t)), t + DT), None

    (y, _), _ = nd.scan(step, (y0, nd.constant(0.0)), length=STEPS)
    return y


def measure(n: int, repeats: int) -> dict[str, float]:
    """Medians of every variant at state size ``n``, after checking each against the NumPy loop."""
    rng = np.random.default_rng(0)
    y0, k = rng.normal(size=n), rng.uniform(0.5, 2.0, n)
    reference = ode_numpy(y0, k)
    y0_var, k_var = nd.vector("y0"), nd.vector("k")
    y = ode_scan(y0_var, k_var)
    interpreted = nd.function([y0_var, k_var], y, backend="numpy")
    kernel = nd.function([y0_var, k_var], y, backend="cpu")
    grad = nd.function([y0_var, k_var], [y, nd.grad(nd.sum(y), k_var)], backend="numpy")
    grad_cpu = nd.function([y0_var, k_var], [y, nd.grad(nd.sum(y), k_var)], backend="cpu")
    for f in (kernel, grad_cpu):
        f.wait(300)
        f(y0, k)  # the first call checks the kernels against the interpreter
        assert f.status == "compiled", f.status
    numba_run = ode_numba()
    samples = {
        "numpy": lambda: ode_numpy(y0, k),
        "numba": lambda: numba_run(y0, k, STEPS, DT),
        "scan/interp": lambda: interpreted(y0, k),
        "scan/kernel": lambda: kernel(y0, k),
        "grad/interp": lambda: grad(y0, k),
        "grad/cpu": lambda: grad_cpu(y0, k),
    }
    for label in ("numba", "scan/interp", "scan/kernel"):
        np.testing.assert_allclose(samples[label](), reference, rtol=1e-10, atol=1e-12, err_msg=label)
    np.testing.assert_allclose(grad(y0, k)[0], reference, rtol=1e-10, atol=1e-12, err_msg="grad/interp")
    for got, want in zip(grad_cpu(y0, k), grad(y0, k)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg="grad/cpu")
    assert kernel.backend == "cpu" and grad_cpu.backend == "cpu"
    return interleaved_many(samples, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 21")
    parser.add_argument("--json", help="save the figures to this path")
    args = parser.parse_args()
    repeats = 5 if args.quick else 21
    figures = {"machine": machine_info(), "steps": STEPS, "sizes": {}}
    print(f"Euler ODE, {STEPS} steps; medians of {repeats}; ratio = time / numpy, time / numba")
    for n in (10, 10_000):
        medians = measure(n, repeats)
        figures["sizes"][n] = medians
        for label, seconds in medians.items():
            ratio_np, ratio_nb = seconds / medians["numpy"], seconds / medians["numba"]
            print(f"  n={n:<6} {label:12} {format_seconds(seconds)}  {ratio_np:7.2f}x numpy  {ratio_nb:9.1f}x numba")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()

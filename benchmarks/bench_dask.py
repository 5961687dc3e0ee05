"""A full-batch gradient over data larger than one Dask worker's memory limit: nbdiff.dask against NumPy in memory
and against the same computation written by hand with dask.array operations, on 1 and 2 workers.

The workload is the logistic-regression loss and its gradient, ``mean(softplus(X @ w) - y * (X @ w))``, over
``--rows`` rows of 20 float64 features (default 4e6 rows, 641 MiB), written once to disk as a stack of ``.npy``
chunks (``dask.array.to_npy_stack``) that every task reads memory-mapped, so no worker ever holds the data set:
each worker's memory limit is ``--memory-limit`` (default 512 MiB; an idle worker with Numba loaded holds
about 220 MiB). The contestants, checked against each other
before they are timed (relative 1e-10):

- NumPy in memory: the whole data set loaded in this process, the loss and gradient written by hand;
- nbdiff.dask: ``row_cost(...).value_and_grad`` on a ``LocalCluster`` (the workers compile in the background;
  timing starts once ``wait_compiled`` says every worker runs compiled);
- dask.array by hand: ``Xd @ w``, ``np.logaddexp``, ``Xd.T @ (p - yd)`` on the same cluster and data;
- reading the data only (``Xd.sum()`` and ``yd.sum()``): the floor any computation over these chunks pays on the
  cluster (reading the memory-mapped chunks, scheduling the tasks).

A cluster of one worker and one of two run side by side, and every contestant is timed round-robin (one sample of
each per round), so the scaling and the ratios come from the same moments of a shared machine.

Run: ``python benchmarks/bench_dask.py`` (``--quick`` for 3 samples instead of 7). Medians of round-robin samples;
compare the columns of one run (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import dask
import dask.array as da
import numpy as np
from common import format_seconds, interleaved_many, machine_info

import nbdiff as nd

FEATURES = 20
CHUNK_ROWS = 125_000
WORKERS = (1, 2)


def write_data(folder: Path, rows: int) -> None:
    """X (rows x 20) and y (rows) as .npy stacks of ``CHUNK_ROWS`` rows, generated chunk by chunk."""
    rng = da.random.default_rng(0)
    X = rng.standard_normal((rows, FEATURES), chunks=(CHUNK_ROWS, FEATURES))
    w_true = np.linspace(-1.0, 1.0, FEATURES)
    y = (rng.random(rows, chunks=CHUNK_ROWS) < 1.0 / (1.0 + da.exp(-(X @ w_true)))).astype(np.float64)
    da.to_npy_stack(str(folder / "X"), X, axis=0)
    da.to_npy_stack(str(folder / "y"), y, axis=0)


def numpy_loss_and_grad(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    z = X @ w
    value = float(np.mean(np.logaddexp(0.0, z) - y * z))
    return value, X.T @ (1.0 / (1.0 + np.exp(-z)) - y) / len(y)


def dask_by_hand(Xd: Any, yd: Any, w: np.ndarray) -> tuple[Any, Any]:
    z = Xd @ w
    value = da.mean(da.logaddexp(0.0, z) - yd * z)
    return value, Xd.T @ (1.0 / (1.0 + da.exp(-z)) - yd) / Xd.shape[0]


def nbdiff_cost() -> nd.dask.RowCost:
    X, y, w = nd.matrix("X", shape=(None, FEATURES)), nd.vector("y"), nd.vector("w", shape=(FEATURES,))
    z = X @ w
    return nd.dask.row_cost(nd.softplus(z) - y * z, [X, y], w, name="logistic")


def check(label: str, got: tuple[Any, Any], expected: tuple[float, np.ndarray]) -> None:
    value, grad = got
    if abs(float(value) - expected[0]) > 1e-10 * abs(expected[0]):
        raise SystemExit(f"{label}: value {float(value)!r}, expected {expected[0]!r}")
    error = np.max(np.abs(np.asarray(grad) - expected[1])) / np.max(np.abs(expected[1]))
    if error > 1e-10:
        raise SystemExit(f"{label}: gradient off by {error:.2e} relative")


def start_cluster(workers: int, memory_limit: str, stack: contextlib.ExitStack) -> Any:
    """A ``LocalCluster`` of ``workers`` single-threaded processes on loopback, and its client."""
    from distributed import Client, LocalCluster

    cluster = stack.enter_context(
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP routes: any free loopback port
            memory_limit=memory_limit,
        )
    )
    return stack.enter_context(Client(cluster, set_as_default=False))


def contestants(client: Any, folder: Path, expected: tuple[float, np.ndarray]) -> dict[str, Callable[[], Any]]:
    """nbdiff.dask and dask.array by hand on ``client``, each checked; the workers compiled before timing."""
    Xd, yd = da.from_npy_stack(str(folder / "X")), da.from_npy_stack(str(folder / "y"))
    w = np.linspace(-0.5, 0.5, FEATURES)
    cost = nbdiff_cost()
    calls = {
        "nbdiff.dask": lambda: client.compute(list(cost.value_and_grad(Xd, yd, w)), sync=True),
        "dask.array by hand": lambda: client.compute(list(dask_by_hand(Xd, yd, w)), sync=True),
    }
    for label, call in calls.items():
        check(label, call(), expected)
    calls["reading the data only"] = lambda: client.compute([Xd.sum(), yd.sum()], sync=True)  # the floor
    table = nd.dask.wait_compiled(client, timeout=300)
    if not table.compiled:
        raise SystemExit(f"the workers did not compile:\n{table}")
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 samples per timing instead of 7")
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--memory-limit", default="512MiB", help="each worker's memory limit")
    parser.add_argument("--json", help="save the figures to this file")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    with tempfile.TemporaryDirectory(prefix="nbdiff-bench-dask-") as tmp:
        folder = Path(tmp)
        write_data(folder, args.rows)
        X, y = dask.compute(da.from_npy_stack(str(folder / "X")), da.from_npy_stack(str(folder / "y")))
        w = np.linspace(-0.5, 0.5, FEATURES)
        expected = numpy_loss_and_grad(X, y, w)
        in_memory = lambda: numpy_loss_and_grad(X, y, w)  # noqa: E731
        size_mb = (X.nbytes + y.nbytes) / 2**20
        print(
            f"data: {args.rows:.0e} rows x {FEATURES} float64 = {size_mb:.0f} MiB on disk in {CHUNK_ROWS}-row chunks;"
        )
        print(f"worker memory limit {args.memory_limit}; {machine_info()}")
        with contextlib.ExitStack() as stack:
            samples: dict[str, Callable[[], Any]] = {"NumPy in memory": in_memory}
            for workers in WORKERS:
                client = start_cluster(workers, args.memory_limit, stack)
                for label, call in contestants(client, folder, expected).items():
                    samples[f"{label}, {workers} worker{'s' if workers > 1 else ''}"] = call
            medians = interleaved_many(samples, repeats)
    numpy_s = medians["NumPy in memory"]
    print(f"\nfull-batch loss + gradient, medians of {repeats} round-robin samples (one run, side by side)")
    for label, seconds in medians.items():
        print(f"  {label:32s} {format_seconds(seconds)}   {seconds / numpy_s:5.2f}x NumPy in memory")
    for label in ("nbdiff.dask", "dask.array by hand"):
        one, two = medians[f"{label}, 1 worker"], medians[f"{label}, 2 workers"]
        print(f"  {label}: 2 workers take {two / one:.2f}x the time of 1")
    for workers in ("1 worker", "2 workers"):
        ratio = medians[f"nbdiff.dask, {workers}"] / medians[f"dask.array by hand, {workers}"]
        print(f"  nbdiff.dask / dask.array by hand, {workers}: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "medians_s": medians, **machine_info()}, indent=2))


if __name__ == "__main__":
    main()

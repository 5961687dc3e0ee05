"""Acceptance on a ``LocalCluster`` of two worker processes (loopback): W1 over 1e7 elements in 8 chunks, a
logistic-regression loss, gradient and HVP over 1e6 x 20 rows in 10 chunks, every worker compiled after warm-up,
and a worker killed in the middle of a computation (Dask retries its tasks) changing nothing.

One cluster serves the module; the tests run in file order and the compile test relies on the ones before it
having shipped the functions. The per-chunk functions use ``backend="cpu"`` (the test suite turns compiling off
for ``backend="auto"``), so every worker compiles them in the background.
"""

from __future__ import annotations

import os
import signal

import dask
import dask.array as da
import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import parallelism
from tests.dask.workloads import assert_close, in_memory_logistic, logistic_terms, w1_function

pytestmark = pytest.mark.slow
ROWS, FEATURES, CHUNK = 1_000_000, 20, 100_000
COMPILE_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def logistic(client):
    """The data on the workers (10 chunks of rows), its copy here, the parameters and the row cost."""
    rng = da.random.default_rng(7)
    Xd = rng.standard_normal((ROWS, FEATURES), chunks=(CHUNK, FEATURES)).persist()
    yd = (rng.random(ROWS, chunks=CHUNK) < 0.5).astype(np.float64).persist()
    X, y = dask.compute(Xd, yd)
    w, v = np.linspace(-0.5, 0.5, FEATURES), np.cos(np.arange(FEATURES, dtype=np.float64))
    terms, Xs, ys, ws = logistic_terms(FEATURES)
    cost = nd.dask.row_cost(terms, [Xs, ys], ws, backend="cpu", name="logistic")
    return {"Xd": Xd, "yd": yd, "X": X, "y": y, "w": w, "v": v, "cost": cost}


def test_w1_and_its_gradient_over_1e7_elements_in_8_chunks(client):
    xd = da.random.default_rng(0).standard_normal(10_000_000, chunks=1_250_000).persist()
    value, gradient = nd.dask.map_blocks(w1_function("cpu"), xd)
    assert gradient.chunks == xd.chunks and gradient.numblocks == (8,)
    got_value, got_gradient = dask.compute(value, gradient)
    expected_value, expected_gradient = w1_function("numpy")(xd.compute())
    assert_close(got_value, expected_value, 1e-12)
    assert_close(got_gradient, expected_gradient, 1e-12)


def test_logistic_loss_gradient_and_hvp_over_1e6_rows_in_10_chunks(client, logistic):
    c = logistic
    assert c["Xd"].numblocks == (10, 1)
    value, gradient = c["cost"].value_and_grad(c["Xd"], c["yd"], c["w"])
    product = c["cost"].hvp(c["Xd"], c["yd"], c["w"], c["v"])
    got = dask.compute(value, gradient, product)
    for got_one, expected in zip(got, in_memory_logistic(c["X"], c["y"], c["w"], c["v"])):
        assert_close(got_one, expected, 1e-12)


def test_every_worker_runs_its_kernels_compiled_after_warm_up(client, logistic):
    table = nd.dask.wait_compiled(client, timeout=COMPILE_TIMEOUT)
    assert table.compiled, str(table)
    c = logistic
    dask.compute(*c["cost"].value_and_grad(c["Xd"], c["yd"], c["w"]))  # later tasks: compiled code answers
    table = nd.dask.worker_status(client)
    workers = set(client.scheduler_info()["workers"])
    assert {row.worker for row in table.rows} == workers and table.compiled, str(table)
    grad_rows = [row for row in table.rows if row.function.startswith("logistic_grad")]
    assert {row.worker for row in grad_rows} == workers
    assert all(row.answered == "cpu" and row.state in ("ready", "cached") for row in grad_rows), str(table)
    assert "logistic_grad" in str(table) and "<table>" in table._repr_html_()
    # a worker of one thread keeps to one core: no parallel module, whatever the machine's load
    assert set(client.run(lambda: parallelism.cores_free.cores).values()) == {1}
    assert set(client.run(parallelism.runs_parallel, 10**8).values()) == {False}


def test_a_worker_killed_mid_computation_changes_nothing(client, logistic, tmp_path):
    marker = str(tmp_path / "killed")

    def die_once_at_chunk_3(block, block_info=None):  # pickled by value: the workers need not import the tests
        if block_info[0]["chunk-location"][0] == 3 and not os.path.exists(marker):
            open(marker, "x").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return block

    c = logistic
    Xk = c["Xd"].map_blocks(die_once_at_chunk_3, dtype=np.float64)
    before = set(client.run(os.getpid).values())
    value, gradient = dask.compute(*c["cost"].value_and_grad(Xk, c["yd"], c["w"]))
    assert os.path.exists(marker)  # the worker did die
    after = set(client.run(os.getpid).values())
    assert before != after  # and was replaced
    expected_value, expected_gradient, _ = in_memory_logistic(c["X"], c["y"], c["w"], c["v"])
    assert_close(value, expected_value, 1e-12)
    assert_close(gradient, expected_gradient, 1e-12)

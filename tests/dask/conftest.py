"""A ``LocalCluster`` of two worker processes on loopback, one per test module that asks for ``client``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client():
    """A ``distributed.Client`` on two single-threaded worker processes (127.0.0.1 only, no dashboard)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client

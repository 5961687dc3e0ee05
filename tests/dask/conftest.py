"""A ``LocalCluster`` of two worker processes on loopback, one per test module that asks for ``client``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client():
    """A ``distributed.Client`` on two single-threaded worker processes (127.0.0.1 only, no dashboard; the
    scheduler's few HTTP routes on a free loopback port rather than 8787, which another cluster may hold)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client

"""nbdiff over Dask: compiled functions applied chunk by chunk, and costs reduced over chunked data.

- ``map_blocks(f, *args)``: an ``nd.Function`` over ``dask.array`` inputs, chunk by chunk along their rows (axis 0);
  in-memory arguments (parameters) go to every chunk; returns dask arrays.
- ``row_cost(terms, data, params)``: the value, gradient and Hessian-vector product of a sum or mean of per-row
  terms over chunked data, as a tree reduction of per-chunk sums.
- ``worker_status(client)`` / ``wait_compiled(client)``: which workers have compiled which kernels.

Each worker unpickles a shipped function once (``shipping.py``) and compiles it in the background as a notebook
does: its first task answers through the interpreter, later ones run compiled; workers sharing a file system share
the disk cache. No nbdiff code runs a scheduler: any Dask scheduler (a ``LocalCluster``, a cluster's address, the
threaded default) runs the tasks.
"""

from __future__ import annotations

try:
    import dask.array  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in an environment without dask
    raise ImportError(
        "nbdiff.dask needs dask.array and dask.distributed: install the extra with pip install 'nbdiff[dask]'"
    ) from exc

from nbdiff.dask.blocks import map_blocks
from nbdiff.dask.reductions import RowCost, row_cost
from nbdiff.dask.status import StatusTable, wait_compiled, worker_status

__all__ = ["RowCost", "StatusTable", "map_blocks", "row_cost", "wait_compiled", "worker_status"]

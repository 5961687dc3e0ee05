"""How a ``Function`` reaches Dask workers: pickled once, named by a hash of its pickle, unpickled once per process.

A task carries a ``ShippedFunction`` (the pickle's bytes and their hash), never the live function. The first task
a worker process runs with a given hash unpickles it, which builds the function again (``nd.function``): it starts
compiling in the worker's background compile process and answers that task through the interpreter; later tasks
find the same function in this module's table and run compiled once it is ready. Kernels are cached on disk by
their structural hash, so workers sharing the notebook's file system (and ``NBDIFF_CACHE_DIR``) load what any of
them compiled; workers elsewhere warm their own cache.

In the process that shipped the function (the threaded or synchronous scheduler), the original function answers:
nothing is unpickled or compiled twice there. A worker process uses as many cores as its Dask worker has threads
(``parallelism.limit_cores``): with one thread per worker, its kernels run serial and its BLAS on one thread, the
other cores being other workers'.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import weakref
from typing import Any

from nbdiff.backends.parallelism import limit_cores
from nbdiff.function import Function

_LOCK = threading.Lock()
_UNPICKLED: dict[str, Function] = {}  # this process's functions unpickled from tasks, by key (kept for reuse)
_ORIGINALS: weakref.WeakValueDictionary[str, Function] = weakref.WeakValueDictionary()  # shipped from here
_SHIPPED: weakref.WeakKeyDictionary[Function, ShippedFunction] = weakref.WeakKeyDictionary()


class ShippedFunction:
    """A ``Function`` as a task carries it: its pickle and the pickle's SHA-256 (the key workers cache it by)."""

    __slots__ = ("key", "name", "payload")

    def __init__(self, key: str, name: str | None, payload: bytes):
        self.key = key
        self.name = name
        self.payload = payload

    def function(self) -> Function:
        """This process's function for the key: the original where it was shipped from, else unpickled once."""
        found = _ORIGINALS.get(self.key)
        if found is None:
            found = _UNPICKLED.get(self.key)
        if found is not None:
            return found
        with _LOCK:  # two worker threads meeting the key at once unpickle (and start compiling) once
            found = _UNPICKLED.get(self.key)
            if found is None:
                if not _UNPICKLED:  # the first function this process unpickles: take the worker's thread budget
                    limit_cores(worker_threads())
                found = _UNPICKLED[self.key] = pickle.loads(self.payload)
            return found

    def __call__(self, *args: Any) -> list:
        """Call the function on one chunk's arguments; always a list of outputs."""
        f = self.function()
        results = f(*args)
        return list(results) if f.returns_list else [results]

    def __reduce__(self) -> tuple:
        return (ShippedFunction, (self.key, self.name, self.payload))

    def __repr__(self) -> str:
        return f"<ShippedFunction {self.name or 'function'} {self.key[:12]}>"


def ship(f: Function) -> ShippedFunction:
    """The shipped form of ``f`` (pickled once per function, then reused by every graph built over it)."""
    with _LOCK:
        shipped = _SHIPPED.get(f)
        if shipped is None:
            payload = pickle.dumps(f, protocol=pickle.HIGHEST_PROTOCOL)
            key = hashlib.sha256(payload).hexdigest()
            shipped = _SHIPPED[f] = ShippedFunction(key, f.name, payload)
            _ORIGINALS[key] = f
        return shipped


def worker_threads() -> int | None:
    """The thread count of the Dask worker running this task; None outside a ``distributed`` worker."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None


def local_functions() -> dict[str, Function]:
    """The functions this process has unpickled from tasks, by key (what a worker reports in ``worker_status``)."""
    with _LOCK:
        return dict(_UNPICKLED)

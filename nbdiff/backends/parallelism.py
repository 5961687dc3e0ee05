"""Whether a ``parallel=True`` kernel module may run now: only where the loop is large enough to pay for its threads
(``PARALLEL_THRESHOLD``) and the machine's cores are free to run them.

Measured on this project's 2-core machine (``benchmarks/bench_parallel.py``, docs/architecture.md): with the cores
free, the parallel module of W1's kernel pays from about 1e5 elements; with the machine loaded (load average 40-50,
other processes on both cores), a parallel module's threads wait 40-100 ms at its barrier for a thread the OS has
not scheduled, whatever the size, while the serial loop is unaffected, so the parallel module paid only from 3e5
elements for W1 and never for a cheap kernel up to 1e6. So a parallel module runs only while the one-minute load
average stays below the number of cores plus one (this process's own threads count in it: a loop of parallel
kernels alone keeps it near the core count); the load is read at most once per ``LOAD_CHECK_SECONDS``.
"""

from __future__ import annotations

import os
import threading
import time

PARALLEL_THRESHOLD = 100_000  # loops from this many elements may run the parallel=True module (see above)
LOAD_CHECK_SECONDS = 1.0  # how long a reading of the load average is trusted


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The one-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class CoresFree:
    """``cores_free()``: whether the load average is below the number of cores plus one (True where the platform
    has no load average; False on one core), remembered for ``LOAD_CHECK_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked = -LOAD_CHECK_SECONDS
        self._free = True
        self._cores = cores()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._checked < LOAD_CHECK_SECONDS:
            return self._free
        with self._lock:
            load = load_average()
            self._free = self._cores > 1 and (load is None or load < self._cores + 1)
            self._checked = now
        return self._free


cores_free = CoresFree()


def runs_parallel(size: int) -> bool:
    """Whether a loop of ``size`` elements runs its kernel's parallel module now."""
    return size >= PARALLEL_THRESHOLD and cores_free()

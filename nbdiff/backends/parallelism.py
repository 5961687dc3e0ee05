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
from typing import Any, Callable

from nbdiff.backends.compilation import SharedSetting

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

    @property
    def cores(self) -> int:
        """The cores this process uses: those it may run on, or fewer after ``limit``."""
        return self._cores

    def limit(self, count: int | None) -> None:
        """Use at most ``count`` of this process's cores (None: all it may run on), read again at once."""
        with self._lock:
            self._cores = cores() if count is None else max(1, min(cores(), count))
            self._checked = -LOAD_CHECK_SECONDS

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


def limit_cores(count: int | None) -> None:
    """Give this process ``count`` cores (None: every core it may run on). A Dask worker with one thread per
    process is given one: its parallel modules and BLAS calls then stay on that thread, as Dask keeps a worker's
    OpenMP and BLAS threads to one, instead of competing with the other workers for the cores."""
    cores_free.limit(count)


def runs_parallel(size: int) -> bool:
    """Whether a loop of ``size`` elements runs its kernel's parallel module now."""
    return size >= PARALLEL_THRESHOLD and cores_free()


class SingleThreadedBlas(SharedSetting):
    """While the cores are busy, BLAS calls of compiled plans run on one thread: ``blas.call(function, *args)``.

    Measured on the loaded 2-core machine (``bench_parallel.py``, load average 35): W2's first matmul (float32
    256x784 @ 784x256) took 246 ms with OpenBLAS's two threads and 1.05 ms with one, the threads waiting for each
    other as a parallel kernel's do. The thread count is process-wide, so it is lowered only for the duration of
    the calls that need it (the first caller in lowers it, the last one out restores it: ``SharedSetting``), and
    only where threadpoolctl is installed (it finds every loaded BLAS: NumPy's, and SciPy's that Numba's ``np.dot``
    calls); with the cores free nothing changes."""

    def __init__(self) -> None:
        super().__init__()
        self._libraries: list[Any] | None = None
        self._saved: list[int] = []

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)``, with BLAS on one thread while the cores are busy."""
        if cores_free():
            return function(*args)
        with self._held():
            return function(*args)

    def _change(self) -> None:
        libraries = self._blas_libraries()
        self._saved = [library.get_num_threads() for library in libraries]
        for library in libraries:
            library.set_num_threads(1)

    def _restore(self) -> None:  # type: ignore[override]
        for library, count in zip(self._blas_libraries(), self._saved):
            library.set_num_threads(count)

    def _blas_libraries(self) -> list[Any]:
        """threadpoolctl's controllers of the loaded BLAS libraries (none without threadpoolctl), found once."""
        if self._libraries is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                self._libraries = []
            else:
                self._libraries = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        return self._libraries


blas = SingleThreadedBlas()

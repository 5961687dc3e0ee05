"""Whether a ``parallel=True`` kernel module may run now: only where the loop is large enough to pay for its threads
(``PARALLEL_THRESHOLD``) and the machine's cores are free to run them.

Measured on this project's 2-core machine (``benchmarks/bench_parallel.py``, docs/architecture.md): with the cores
free, the parallel module of W1's kernel pays from about 1e5 elements; with the machine loaded (load average 40-50,
other processes on both cores), a parallel module's threads wait 40-100 ms at its barrier for a thread the OS has
not scheduled, whatever the size, while the serial loop is unaffected, so the parallel module paid only from 3e5
elements for W1 and never for a cheap kernel up to 1e6.

"Free" means that OTHER processes leave this process's cores free: on Linux, the CPU time the machine's cores (those
this process may run on) spent busy, from ``/proc/stat``, less this process's own CPU time (``os.times``, all its
threads), over the interval since the previous reading, in cores; the cores are free while that is below
``OTHERS_LIMIT_CORES`` and this process has more than one core. The one-minute load average, the rule before, counts
this process's own threads too (PyTorch's OpenMP pool, JAX's pool and spinning OpenBLAS threads when
``benchmarks/bench_cpu.py`` loads them beside nbdiff), so it can call a machine busy that only this process keeps busy.
Others' use is compared in cores, not as a share of them: each of the parallel loop's threads waits for any core the
others take, so the barrier waits grow with the others' cores, however many cores there are. ``OTHERS_LIMIT_CORES`` is
half a core, measured on the 2-core machine otherwise idle (a one-off measurement, 2026: a Numba ``prange`` loop of
exp*sin over 3e5 float64 against its serial loop, and W2's first matmul with OpenBLAS on 2 threads against 1, beside a
child process busy a given share of each 10 ms; the others' cores as read here): at 0.0-0.43 cores the parallel loop
took 2.5-2.7 ms against the serial 5.1 ms, at 0.59-0.60 it took 5.4-6.6 ms, and from 0.76 up 6.5-8.0 ms, slower than
serial; the matmul's median stayed 0.35 ms on 2 threads (0.56 ms on one) but its slowest call grew from 1 ms (idle) to
10-28 ms from 0.76 cores. Steal time counts as the others' (the hypervisor ran something else on the core); the compile
worker is a child process and counts as another process (it takes a core while it compiles).

The machine is read at most once per ``LOAD_CHECK_SECONDS`` (one small file read). The first reading has no interval
to measure over, and where ``/proc/stat`` cannot be read (not Linux) there is none ever: then the load-average rule
decides, the cores free while the one-minute load average stays below the number of cores plus one (this process's
own threads count in it: a loop of parallel kernels alone keeps it near the core count). For the first reading that
rule is the cautious choice: on a machine shared by many processes (load average 40) it keeps the first second
serial, and on an idle one it says free unless this process's own threads have kept the load up for a minute.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from nbdiff.backends.compilation import SharedSetting

PARALLEL_THRESHOLD = 100_000  # loops from this many elements may run the parallel=True module (see above)
LOAD_CHECK_SECONDS = 1.0  # how long a reading of the machine's use is trusted
OTHERS_LIMIT_CORES = 0.5  # the cores are free while other processes use fewer than this many of them (see above)
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # /proc/stat's user, nice, system, irq, softirq, steal (guest is within user)


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


@dataclass(frozen=True)
class CpuTimes:
    """A reading of CPU time, in seconds since some fixed moment: ``busy`` on this process's cores, by everyone;
    ``own`` by this process's threads."""

    busy: float
    own: float


def cpu_times() -> CpuTimes | None:
    """The busy time of the cores this process may run on (``/proc/stat``) and this process's own CPU time (None
    where ``/proc/stat`` cannot be read: not Linux)."""
    try:
        with open("/proc/stat", "rb") as handle:
            text = handle.read(1 << 16).decode("ascii", "replace")
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    busy = busy_ticks(text, _affinity())
    if busy is None:
        return None
    own = os.times()
    return CpuTimes(busy / ticks, own.user + own.system)


def _affinity() -> set[int] | None:
    """The CPU numbers this process may run on (None where the platform does not say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def busy_ticks(stat: str, cpus: set[int] | None) -> int | None:
    """The busy clock ticks in ``/proc/stat``'s text: the sum of the ``cpuN`` lines of ``cpus``, or the machine's
    ``cpu`` line where ``cpus`` is None or names none of them; None where the text has no such line."""
    total, lines = None, {}
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu"):
            break  # the cpu lines come first
        fields = rest.split()
        if len(fields) < 8:
            continue
        ticks = sum(int(fields[i]) for i in _BUSY_FIELDS)
        if name == "cpu":
            total = ticks
        elif name[3:].isdigit():
            lines[int(name[3:])] = ticks
    chosen = [lines[cpu] for cpu in cpus or () if cpu in lines]
    return sum(chosen) if chosen else total


def others_cores(before: CpuTimes, after: CpuTimes, seconds: float) -> float:
    """The cores other processes used on average between two readings ``seconds`` apart (never below zero: the
    two clocks tick differently)."""
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others / seconds) if seconds > 0 else 0.0


class CoresFree:
    """``cores_free()``: whether other processes leave this process's cores free (see the module's docstring;
    False on one core), remembered for ``interval`` seconds. ``read`` and ``clock`` are for tests."""

    def __init__(
        self,
        read: Callable[[], CpuTimes | None] = cpu_times,
        clock: Callable[[], float] = time.monotonic,
        interval: float = LOAD_CHECK_SECONDS,
    ) -> None:
        self._lock = threading.Lock()
        self._read, self._clock, self._interval = read, clock, interval
        self._checked = -float("inf")
        self._previous: tuple[float, CpuTimes] | None = None  # the last reading and when it was taken
        self._others: float | None = None  # the others' cores at the last reading (None: the load rule decides)
        self._free = True
        self._cores = cores()

    @property
    def cores(self) -> int:
        """The cores this process uses: those it may run on, or fewer after ``limit``."""
        return self._cores

    @property
    def others(self) -> float | None:
        """The cores other processes used between the last two readings (None: not measured)."""
        return self._others

    def limit(self, count: int | None) -> None:
        """Use at most ``count`` of this process's cores (None: all it may run on), from now on."""
        with self._lock:
            self._cores = cores() if count is None else max(1, min(cores(), count))
            self._free = self._decide()

    def __call__(self) -> bool:
        now = self._clock()
        if now - self._checked < self._interval:
            return self._free
        with self._lock:
            if now - self._checked >= self._interval:  # not read meanwhile by another thread
                self._take_reading(now)
                self._free = self._decide()
                self._checked = now
        return self._free

    def _take_reading(self, now: float) -> None:
        """Read the machine, and the others' cores since the previous reading (None without one)."""
        times = self._read()
        previous, self._others = self._previous, None
        if times is not None:
            if previous is not None:
                self._others = others_cores(previous[1], times, now - previous[0])
            self._previous = (now, times)

    def _decide(self) -> bool:
        """Free: more than one core, and the others below ``OTHERS_LIMIT_CORES`` (or, unmeasured, the load
        average below the cores plus one)."""
        if self._cores <= 1:
            return False
        if self._others is not None:
            return self._others < OTHERS_LIMIT_CORES
        load = load_average()
        return load is None or load < self._cores + 1


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

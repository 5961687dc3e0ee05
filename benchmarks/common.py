"""Timing helpers shared by the benchmark scripts (run them as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from typing import Callable

import numpy as np


def interleaved(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` timed alternately, so machine noise hits both alike."""
    for fn in (a, b, a, b):
        fn()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, bucket in ((a, ta), (b, tb)):
            gc.collect()
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def interleaved_many(samples: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each sample function, timed round-robin (one sample of each per round) so machine noise
    hits all alike; the garbage collector runs between samples, not during them (as in ``timeit``)."""
    for fn in list(samples.values()) * 2:
        fn()
    times: dict[str, list[float]] = {label: [] for label in samples}
    for _ in range(repeats):
        for label, fn in samples.items():
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
            finally:
                gc.enable()
    return {label: statistics.median(bucket) for label, bucket in times.items()}


def repeated(fn: Callable[[], object], target_s: float = 0.02, most: int = 1_000_000) -> tuple[Callable[[], None], int]:
    """A sample function calling ``fn`` in a loop, and its call count: enough calls for about ``target_s`` per
    sample (timeit-style, for calls too short to time one by one); divide a sample's time by the count."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    start, calls = time.perf_counter(), 0
    while calls < 1000 and time.perf_counter() - start < 0.05:  # a better per-call estimate than the first call
        fn()
        calls += 1
    once = min(once, (time.perf_counter() - start) / max(calls, 1))
    count = int(min(most, max(1, target_s / once)))

    def sample() -> None:
        for _ in range(count):
            fn()

    return sample, count


def format_seconds(seconds: float) -> str:
    """A duration in the unit that keeps three or four significant digits (µs, ms or s)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.2f}us"
    if seconds < 1:
        return f"{seconds * 1e3:8.2f}ms"
    return f"{seconds:8.2f}s "


def machine_info() -> dict:
    """Python and NumPy versions and the CPU count, recorded next to every set of figures."""
    return {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count()}

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


def machine_info() -> dict:
    """Python and NumPy versions and the CPU count, recorded next to every set of figures."""
    return {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count()}

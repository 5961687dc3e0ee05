"""Launch configurations: how many blocks of how many threads a kernel runs with, chosen by the work's size.

Every generated kernel loops grid-stride, so any configuration computes the same result; the size only decides
how much parallelism a launch has. ``grid_limits`` caps the grid for a block of code (the simulator runs one OS
thread per CUDA thread: tests use at most 2 blocks of 32 threads).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator

# Shared-memory reduction buffers in generated kernels have this many elements: the most threads per block.
MAX_THREADS = 256
WARP = 32


@dataclass(frozen=True)
class GridLimits:
    """The largest grid a launch may use: ``threads`` per block (a power of two, 32..256) and ``blocks``."""

    threads: int = MAX_THREADS
    blocks: int = 65_535 * 8  # grid-stride loops need no more than a few waves of the largest GPUs

    def __post_init__(self) -> None:
        if self.threads not in (32, 64, 128, 256) or self.blocks < 1:
            raise ValueError(f"threads must be a power of two in 32..{MAX_THREADS} and blocks >= 1, got {self}")


@dataclass(frozen=True)
class Launch:
    """One launch's configuration: ``kernel[blocks, threads](...)``."""

    blocks: int
    threads: int


_state = threading.local()
DEFAULT_LIMITS = GridLimits()


def current_limits() -> GridLimits:
    """The limits in force in this thread (``grid_limits``), else ``DEFAULT_LIMITS``."""
    return getattr(_state, "limits", DEFAULT_LIMITS)


@contextlib.contextmanager
def grid_limits(threads: int = 32, blocks: int = 2) -> Iterator[GridLimits]:
    """Cap every launch made in this thread inside the block (tests: ``with grid_limits(32, 2): ...``)."""
    previous = getattr(_state, "limits", None)
    _state.limits = GridLimits(threads, blocks)
    try:
        yield _state.limits
    finally:
        if previous is None:
            del _state.limits
        else:
            _state.limits = previous


def launch_config(size: int, limits: GridLimits | None = None, per_thread: int = 4) -> Launch:
    """The configuration for ``size`` work items: full blocks of ``limits.threads`` threads, enough blocks that each
    thread handles about ``per_thread`` items (fewer launch waves for big arrays), at most ``limits.blocks`` and at
    least one. Small work gets one block of as few warps as cover it."""
    limits = limits or current_limits()
    size = max(int(size), 1)
    threads = limits.threads
    while threads > WARP and threads // 2 >= size:
        threads //= 2
    blocks = -(-size // (threads * per_thread))
    return Launch(blocks=max(1, min(blocks, limits.blocks)), threads=threads)


def rows_config(rows: int, limits: GridLimits | None = None) -> Launch:
    """One block per row (grid-stride over rows past ``limits.blocks``), all threads of a block on one row."""
    limits = limits or current_limits()
    return Launch(blocks=max(1, min(int(rows), limits.blocks)), threads=limits.threads)

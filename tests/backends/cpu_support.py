"""Helpers for the compiled CPU backend's tests (``test_cpu_*.py``, ``test_worker.py``).

Compiling is slow (about 0.3 s a serial kernel in the worker, seconds for a ``parallel=True`` variant), so most
functions here have static small shapes (no parallel variant, see ``nbdiff.backends.cpu._may_be_large``), and a
test that must see a *cold* compile builds a structure no earlier run compiled: ``chain(x, fresh_bits())``.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import nbdiff as nd
from nbdiff.backends.agreement import outputs_disagreement
from nbdiff.runtime.events import FINISHED, kernel_states

WAIT = 300.0  # seconds: a generous bound on one function's compilation (the worker may have a queue before it)
CHAIN_BITS = 20  # a fresh chain has this many sin/cos members: 2**19 structures, so a repeat is very unlikely
REPRODUCER_FILES = ("kernel.py", "arguments.npz", "reproduce.py", "README.txt")


def fresh_bits() -> int:
    """A random structure number for ``chain`` (the top bit set, so every chain has ``CHAIN_BITS`` members)."""
    return secrets.randbits(CHAIN_BITS - 1) | (1 << (CHAIN_BITS - 1))


def chain(x: Any, bits: int) -> Any:
    """``x`` through ``sin`` or ``cos`` per bit of ``bits``: one fused kernel whose structure ``bits`` decides."""
    for k in range(bits.bit_length()):
        x = nd.sin(x) if bits >> k & 1 else nd.cos(x)
    return x


def as_list(results: Any) -> list[np.ndarray]:
    return list(results) if isinstance(results, (list, tuple)) else [results]


def assert_agrees(got: Any, expected: Any, what: str = "", scales: Sequence[float | None] | None = None) -> None:
    """``got`` has the interpreter's dtypes and shapes and its values within ``nbdiff.backends.agreement``'s
    tolerance (``scales``: the magnitude each output's rounding error scales with, where not its own); every output
    is a NumPy array."""
    got, expected = as_list(got), as_list(expected)
    for j, value in enumerate(got):
        assert isinstance(value, np.ndarray), f"{what} output {j} is a {type(value).__name__}, not an array"
    problem = outputs_disagreement(expected, got, scales)
    assert problem is None, f"{what}: {problem}"


def states(f: nd.Function, kernel: str | None = None) -> list[str]:
    """The states of ``f``'s compile events, in order (of one kernel when given)."""
    return [e.state for e in f.events if kernel is None or e.kernel == kernel]


def assert_finished_events(f: nd.Function) -> None:
    """``f``'s events are a possible sequence (``kernel_states`` accepts it) and every kernel is ready or cached."""
    for name, state in kernel_states(f.events).items():
        assert state.state in FINISHED and state.state != "failed", f"kernel {name}: {state.history}"


def reproducer_folder(status: str) -> Path:
    """The reproducer folder a fallback reason names."""
    match = re.search(r"\(reproducer: ([^()]+)\)", status)
    assert match is not None, f"the reason names no reproducer: {status}"
    return Path(match.group(1))


def call_both(f: nd.Function, reference: nd.Function, args: Sequence[Any], what: str = "") -> list[np.ndarray]:
    """``f(*args)``, checked against ``reference(*args)``; the results."""
    got = f(*args)
    assert_agrees(got, reference(*args), what)
    return as_list(got)

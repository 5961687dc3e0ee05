"""Compiled answers are never wrong where the interpreter's are right.

- The switch interval set while kernels load is restored when two loads overlap.
"""

from __future__ import annotations

import sys
import threading

import pytest

from nbdiff.backends import cpu
from tests.backends.cpu_support import WAIT


# ---------------------------------------------------------------------------------------------------------------
# Process-wide settings
# ---------------------------------------------------------------------------------------------------------------
def test_the_switch_interval_is_restored_when_two_loads_overlap():
    """A enters, B enters, A leaves, B leaves: the interval the process had comes back (each thread restoring what
    it saw would leave B's, the 1 ms one)."""
    original = sys.getswitchinterval()
    steps = {name: threading.Event() for name in ("a in", "b in", "a out")}
    inside: dict[str, float] = {}

    def a() -> None:
        with cpu._gentle_switching():
            inside["a"] = sys.getswitchinterval()
            steps["a in"].set()
            steps["b in"].wait(WAIT)
        steps["a out"].set()

    def b() -> None:
        steps["a in"].wait(WAIT)
        with cpu._gentle_switching():
            inside["b"] = sys.getswitchinterval()
            steps["b in"].set()
            steps["a out"].wait(WAIT)
            inside["b after a"] = sys.getswitchinterval()

    sys.setswitchinterval(0.005)
    try:
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        loading = cpu.LOAD_SWITCH_INTERVAL
        assert inside == pytest.approx({"a": loading, "b": loading, "b after a": loading})
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(original)

"""What the workers have compiled: ``worker_status(client)`` and ``wait_compiled(client)``.

Each worker reports the nbdiff functions its tasks have unpickled (``shipping.local_functions``): the function's
status and, per kernel, its last compile event (``ready`` or ``cached`` mean compiled). The report runs on the
workers through ``client.run``, so it needs a ``distributed.Client``; a wait polls without blocking the worker's
event loop.
"""

from __future__ import annotations

import asyncio
import html
import time
from dataclasses import dataclass
from typing import Any

from nbdiff.dask.shipping import local_functions
from nbdiff.runtime.events import kernel_states

COMPILED_STATES = ("ready", "cached")
NOTHING_TO_COMPILE = "interpreting (nothing to compile"
POLL_S = 0.05


@dataclass(frozen=True)
class StatusRow:
    """One kernel of one function on one worker (``kernel`` is "" for a function with nothing to compile)."""

    worker: str
    function: str
    status: str
    answered: str  # what answered the function's last call on this worker: "numpy" (the interpreter) or "cpu"
    kernel: str
    state: str

    @property
    def compiled(self) -> bool:
        """The kernel is compiled and the function answers compiled (checked against the interpreter), or the
        function has nothing to compile (NumPy runs each of its ops: a lone matmul, say)."""
        if self.status.startswith(NOTHING_TO_COMPILE):
            return True
        return self.status == "compiled" and (not self.kernel or self.state in COMPILED_STATES)


class StatusTable:
    """Rows per worker, function and kernel; ``compiled`` when every function on every worker runs compiled (or
    has nothing to compile)."""

    columns = ("worker", "function", "status", "answered", "kernel", "state")

    def __init__(self, rows: list[StatusRow], workers: list[str]):
        self.rows = rows
        self.workers = workers

    @property
    def compiled(self) -> bool:
        """Every worker has run some nbdiff function, and all of them run compiled."""
        reporting = {row.worker for row in self.rows}
        return bool(self.rows) and reporting == set(self.workers) and all(row.compiled for row in self.rows)

    def _cells(self) -> list[tuple[str, ...]]:
        return [tuple(getattr(row, c) for c in self.columns) for row in self.rows]

    def __str__(self) -> str:
        cells = [self.columns, *self._cells()]
        widths = [max(len(cell[i]) for cell in cells) for i in range(len(self.columns))]
        lines = ["  ".join(value.ljust(width) for value, width in zip(cell, widths)).rstrip() for cell in cells]
        idle = [w for w in self.workers if w not in {row.worker for row in self.rows}]
        lines += [f"{worker}: no nbdiff function yet" for worker in idle]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(value)}</td>" for value in cells) + "</tr>" for cells in self._cells()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        return str(self)


def worker_status(client: Any) -> StatusTable:
    """The compile status of every nbdiff function on every worker of ``client`` (a ``distributed.Client``)."""
    reports = client.run(_report)
    rows = [StatusRow(worker, *entry) for worker, entries in sorted(reports.items()) for entry in entries]
    return StatusTable(rows, sorted(reports))


def wait_compiled(client: Any, timeout: float | None = None) -> StatusTable:
    """Wait until every nbdiff function on every worker has finished compiling (or ``timeout`` seconds) and return
    the status then; ``table.compiled`` says whether all of them run compiled."""
    client.run(_wait, timeout)
    return worker_status(client)


def _report() -> list[tuple[str, str, str, str, str]]:
    """This worker's rows: (function, status, answered, kernel, state)."""
    rows = []
    for key, f in sorted(local_functions().items(), key=lambda item: (item[1].name or "", item[0])):
        label = f"{f.name or 'function'} {key[:8]}"
        states = kernel_states(f.events)
        if not states:
            rows.append((label, f.status, f.backend, "", ""))
        rows += [(label, f.status, f.backend, kernel, state.state) for kernel, state in states.items()]
    return rows


async def _wait(timeout: float | None) -> bool:
    """Poll this worker's functions until none is still compiling (the event loop keeps serving meanwhile)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while any(_pending(f.status) for f in local_functions().values()):
        if deadline is not None and time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


def _pending(status: str) -> bool:
    return status.startswith("compiling") or status == "interpreting"

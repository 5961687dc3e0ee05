"""nbdiff's options: one frozen object, read from the environment once, changed with a context manager.

``NBDIFF_DEBUG=1`` turns on debug checks (the graph verifier after every rewrite pass, and the interpreter's
check that each result has its node's static type). This is the only module that reads environment variables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class Options:
    """Settings that change how nbdiff prepares and runs functions (not what they compute)."""

    debug: bool = False  # verify the graph after every pass; check every interpreter result's type


def _from_environment() -> Options:
    return Options(debug=os.environ.get("NBDIFF_DEBUG", "").lower() in ("1", "true", "yes"))


_defaults = _from_environment()
_local = threading.local()


def options() -> Options:
    """The options in force (the innermost ``option_context``, else the environment's defaults)."""
    return getattr(_local, "current", _defaults)


@contextlib.contextmanager
def option_context(**changes: Any) -> Iterator[Options]:
    """Change options inside a block: ``with nd.option_context(debug=True): ...``."""
    previous = options()
    try:
        current = dataclasses.replace(previous, **changes)
    except TypeError:
        names = ", ".join(f.name for f in dataclasses.fields(Options))
        raise TypeError(f"option_context: unknown option in {sorted(changes)}; options are {names}") from None
    _local.current = current
    try:
        yield current
    finally:
        _local.current = previous

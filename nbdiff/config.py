"""nbdiff's options: one frozen object, read from the environment once, changed with a context manager.

``NBDIFF_DEBUG=1`` turns on debug checks (the graph verifier after every rewrite pass, and the interpreter's
check that each result has its node's static type). ``NBDIFF_CACHE_DIR`` sets where compiled kernels are kept
(default: ``default_cache_dir()``). ``NBDIFF_COMPILE=0`` makes ``backend="auto"`` use the interpreter only (the
test suite sets it: most tests are about graphs, not compilation). ``NBDIFF_FREEZE_GC=0`` keeps the compiled
backend from freezing the objects alive after Numba's first load out of cyclic garbage collection.
``NBDIFF_COMPILE_TIMEOUT`` is how many seconds (default 600) one compile job may take in the compile worker: a
stopped or hung worker is then killed and replaced, the job retried once, and then the kernel falls back to the
interpreter ("timed out after N s"). ``NBDIFF_FULL_TRACEBACK=1`` shows nbdiff's own frames in the tracebacks of
its errors in IPython (by default they show the user's frames only). ``NBDIFF_MATH=libm`` makes compiled CPU
kernels call libm's math functions rather than nbdiff's vectorisable ones (``nbdiff.backends.vmath``). This is the
only module that reads environment variables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

DEFAULT_COMPILE_TIMEOUT = 600.0  # seconds
MATH_CHOICES = ("nbdiff", "libm")  # the math option's values (nbdiff.backends.vmath.MATH_CHOICES)


@dataclass(frozen=True)
class Options:
    """Settings that change how nbdiff prepares and runs functions (not what they compute)."""

    debug: bool = False  # verify the graph after every pass; check every interpreter result's type
    cache_dir: str | None = None  # where kernel modules and reproducers are kept; None: default_cache_dir()
    compile: bool = True  # backend="auto" compiles in the background (NBDIFF_COMPILE=0: the interpreter only)
    fastmath: bool = False  # the default of nd.function(fastmath=...): LLVM's fast-math flags but nnan/ninf
    freeze_gc: bool = True  # after Numba's import and first kernel load, freeze the objects alive then out of
    # cyclic garbage collection once (NBDIFF_FREEZE_GC=0: never), so full collections stop stalling the notebook
    compile_timeout: float = DEFAULT_COMPILE_TIMEOUT  # seconds one job may take in the compile worker (then it is
    # killed and replaced, the job retried once, then the kernel falls back); NBDIFF_COMPILE_TIMEOUT
    full_traceback: bool = False  # an nbdiff error's traceback in IPython keeps nbdiff's and IPython's own frames
    # (NBDIFF_FULL_TRACEBACK=1), for debugging nbdiff; by default it shows the user's frames only
    math: str = "nbdiff"  # the default of nd.function(math=...): CPU kernels call nbdiff's vectorisable math
    # (nbdiff.backends.vmath) or "libm" (NBDIFF_MATH)


def default_cache_dir() -> str:
    """The user's cache folder for nbdiff: ``$XDG_CACHE_HOME/nbdiff`` or ``~/.cache/nbdiff`` (Linux and others),
    ``~/Library/Caches/nbdiff`` (macOS), ``%LOCALAPPDATA%/nbdiff`` (Windows)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nbdiff")


def _from_environment() -> Options:
    return Options(
        debug=os.environ.get("NBDIFF_DEBUG", "").lower() in ("1", "true", "yes"),
        cache_dir=os.environ.get("NBDIFF_CACHE_DIR") or None,
        compile=os.environ.get("NBDIFF_COMPILE", "1").lower() not in ("0", "false", "no"),
        freeze_gc=os.environ.get("NBDIFF_FREEZE_GC", "1").lower() not in ("0", "false", "no"),
        compile_timeout=_seconds("NBDIFF_COMPILE_TIMEOUT", DEFAULT_COMPILE_TIMEOUT),
        full_traceback=os.environ.get("NBDIFF_FULL_TRACEBACK", "").lower() in ("1", "true", "yes"),
        math=_math_choice(),
    )


def _math_choice() -> str:
    """``NBDIFF_MATH`` ("nbdiff" or "libm"); another value is reported and ignored (as in ``_seconds``)."""
    text = os.environ.get("NBDIFF_MATH", "").strip().lower()
    if not text:
        return Options.math
    if text not in MATH_CHOICES:
        warnings.warn(
            f"NBDIFF_MATH={text!r} is not one of {', '.join(MATH_CHOICES)}: using {Options.math}", stacklevel=2
        )
        return Options.math
    return text


def _seconds(variable: str, default: float) -> float:
    """A positive number of seconds from the environment; a value that is not one is reported and ignored (an
    error here would make ``import nbdiff`` fail)."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        warnings.warn(f"{variable}={text!r} is not a positive number of seconds: using {default:g}", stacklevel=2)
        return default
    return value


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
    timeout = current.compile_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"option_context: compile_timeout must be a positive number of seconds, got {timeout!r}")
    if current.math not in MATH_CHOICES:
        raise ValueError(f"option_context: math must be one of {', '.join(MATH_CHOICES)}, got {current.math!r}")
    _local.current = current
    try:
        yield current
    finally:
        _local.current = previous

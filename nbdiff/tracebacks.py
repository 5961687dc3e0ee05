"""Tracebacks that show the user's frames: nbdiff's errors name the user's line, so its own frames are noise.

An nbdiff error raised for a user's mistake (a shape that does not fit, in a ``%%graph`` cell or anywhere) passes
through a dozen of nbdiff's frames (op construction, inference, the magic, the interpreter). In IPython, nbdiff's
errors render their traceback with those frames, and IPython's own, left out, as NumPy and JAX filter theirs:
what is left is the user's cells and files, and the message that names the op, the shapes and the line.
``NBDIFF_FULL_TRACEBACK=1`` (or ``nd.option_context(full_traceback=True)``) shows every frame, for debugging
nbdiff itself. Outside IPython tracebacks are Python's own.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
LIBRARY_PACKAGES = ("nbdiff", "IPython")  # their frames are hidden from an nbdiff error's traceback


def _library_dirs() -> tuple[str, ...]:
    """The folders of the packages whose frames are hidden (those imported)."""
    dirs = [_PACKAGE_DIR]
    ipython = sys.modules.get("IPython")
    if ipython is not None and getattr(ipython, "__file__", None):
        dirs.append(os.path.dirname(os.path.abspath(ipython.__file__)) + os.sep)
    return tuple(dirs)


def is_library_frame(filename: str) -> bool:
    """Whether a frame's file belongs to nbdiff or IPython (not the user's code)."""
    return filename.startswith(_library_dirs())


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """The traceback ``tb`` with nbdiff's and IPython's frames left out (the user's frames, in order)."""
    kept = []
    while tb is not None:
        if not is_library_frame(tb.tb_frame.f_code.co_filename):
            kept.append(tb)
        tb = tb.tb_next
    filtered = None
    for entry in reversed(kept):
        filtered = TracebackType(filtered, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return filtered


def ipython_renderer(error: BaseException):
    """The ``_render_traceback_`` IPython calls for an nbdiff error: its traceback cut to the user's frames,
    formatted by the running shell. Raises ``AttributeError`` (IPython then formats the whole traceback) when
    ``full_traceback`` was in force where the error was raised, or outside an IPython shell."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if getattr(error, "full_traceback", False) or shell is None:
        raise AttributeError("_render_traceback_")

    def render() -> list[str]:
        chained = _chain(error)[1:]
        originals = [exc.__traceback__ for exc in chained]
        try:  # the exceptions it was raised from are shown with their user frames too, then given theirs back
            for exc in chained:
                exc.__traceback__ = user_traceback(exc.__traceback__)
            tb = user_traceback(error.__traceback__)
            return shell.InteractiveTB.structured_traceback(type(error), error, tb, tb_offset=0)
        finally:
            for exc, original in zip(chained, originals):
                exc.__traceback__ = original

    return render


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during (``__cause__``, ``__context__``), each once."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or any(exc is other for other in seen):
            continue
        seen.append(exc)
        pending.extend([exc.__context__, exc.__cause__])
    return seen

"""The registry of compile targets: names mapped to lazily imported target classes.

``nd.function`` never imports a backend: it asks ``choose(backend, compile_by_default)`` for a target and calls its
``start``. A target class (``nbdiff.backends.cpu.CpuTarget``; the CUDA one registers the same way) implements:

- ``name``: what ``f.backend`` says once its runner answers;
- ``problem() -> str | None``: why it cannot run here (Numba missing, no GPU), None when it can; cheap, imports
  nothing heavy;
- ``start(graph, kernels, status, fastmath) -> compilation``: begin compiling in the background, reporting to the
  ``CompileStatus`` ``status``; ``start(..., device_outputs=True)`` is passed only when the user asked for device
  arrays back (a target without device memory refuses it);
- optionally ``reports_problem = True``: ``backend=<name>`` where it cannot run does not raise but starts it all the
  same, and its ``start`` reports why as the function's fallback status (the interpreter answers): the CUDA target,
  whose "no GPU here" is a fact of the machine, not a mistake in the call.

"auto" takes the first registered target that can run here, in registration order, or none (the interpreter).
"""

from __future__ import annotations

import importlib
from typing import Any

from nbdiff.errors import BackendError

_TARGETS: dict[str, str] = {  # name -> "module:class", imported on demand
    "cpu": "nbdiff.backends.cpu:CpuTarget",
    "cuda": "nbdiff.cuda.target:CudaTarget",
}
_AUTO = ("cpu",)  # the targets "auto" tries, in order (not CUDA: see docs/architecture.md, "The CUDA target")
INTERPRETER = "numpy"


def register(name: str, where: str, auto: bool = False) -> None:
    """Register the target class at ``where`` ("module:Class") under ``name``; ``auto``: "auto" may pick it (after
    those registered before)."""
    global _AUTO
    _TARGETS[name] = where
    if auto and name not in _AUTO:
        _AUTO = (*_AUTO, name)


def names() -> tuple[str, ...]:
    """Every ``backend=`` value ``nd.function`` accepts."""
    return ("auto", INTERPRETER, *_TARGETS)


def target(name: str) -> Any:
    """The target class registered as ``name`` (imported now)."""
    try:
        module, _, attribute = _TARGETS[name].partition(":")
    except KeyError:
        raise BackendError(
            f"function: backend={name!r} needs nbdiff's {name.upper()} backend, which this version does not include "
            "yet; use backend='auto' or 'cpu' (compiled with Numba) or 'numpy' (the NumPy interpreter)"
        ) from None
    return getattr(importlib.import_module(module), attribute)


def choose(backend: str, compile_by_default: bool) -> Any | None:
    """The target for ``nd.function(..., backend=backend)``: None for the interpreter; a named target (raising
    ``BackendError`` with its ``problem`` when it cannot run here); for "auto", the first that can run here."""
    if backend not in names():
        raise BackendError(f"function: backend must be one of {', '.join(names())}, got {backend!r}")
    if backend == INTERPRETER or (backend == "auto" and not compile_by_default):
        return None
    if backend != "auto":
        chosen = target(backend)
        problem = chosen.problem()
        if problem is not None and not getattr(chosen, "reports_problem", False):
            raise BackendError(
                f"function: backend={backend!r} {problem}; backend='auto' or 'numpy' runs the NumPy interpreter"
            )
        return chosen
    for name in _AUTO:
        candidate = target(name)
        if candidate.problem() is None:
            return candidate
    return None

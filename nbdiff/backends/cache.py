"""Kernel modules on disk: written once, compiled by the worker into Numba's disk cache, loaded here without
compiling; and reproducer folders for kernels that failed to compile or disagreed with the interpreter.

A kernel module is a real file ``<cache>/kernels-py3XX/<name>.py`` whose ``kernel`` is ``numba.njit(cache=True)``,
so Numba keeps its machine code in ``__pycache__`` beside it, keyed by the file's modification time: a module is
never rewritten with the same text. The compile worker (``nbdiff.backends.worker``) compiles it and records the
signatures it saved in ``<name>.compiled.json``; the main process then loads them from Numba's cache in
milliseconds (``load_compiled``) instead of compiling, which would hold the GIL and stall the notebook.

Signature strings are Numba's (``"void(int64, float64[::1])"`` or ``"(int64, float64[::1])"``). Numba's cache
is keyed here by the argument types only (the key a call compiles under); a return type, if given, is ignored.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from nbdiff.config import default_cache_dir, options
from nbdiff.errors import BackendError

MARKER_SUFFIX = ".compiled.json"
# Relative tolerance by dtype of a reproducer's comparison; the absolute one is this times the output's largest
# finite magnitude (compiled transcendentals may differ from NumPy's in the last ulps, which cancellation grows).
REPRODUCER_TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "complex128": 1e-9, "complex64": 1e-4}


class CacheMiss(BackendError):
    """A kernel signature that Numba's disk cache does not hold (or cannot give back) for this module."""


# ---------------------------------------------------------------------------------------------------------------
# Folders and module files
# ---------------------------------------------------------------------------------------------------------------
def cache_directory() -> Path:
    """nbdiff's cache folder: the ``cache_dir`` option (``NBDIFF_CACHE_DIR``), else the user's cache folder."""
    configured = getattr(options(), "cache_dir", None)
    return Path(configured or default_cache_dir()).expanduser()


def kernels_directory(root: Path | None = None) -> Path:
    """Where kernel modules live: one folder per Python minor version (the generated text may depend on it), in
    ``root`` (default: ``cache_directory()``)."""
    return (root or cache_directory()) / f"kernels-py{sys.version_info.major}{sys.version_info.minor}"


def reproducers_directory(root: Path | None = None) -> Path:
    """Where ``write_reproducer`` folders go, in ``root`` (default: ``cache_directory()``)."""
    return (root or cache_directory()) / "reproducers"


def write_module(directory: Path, name: str, source: str) -> Path:
    """``<directory>/<name>.py`` holding ``source``, written atomically; an identical file is left untouched (its
    modification time is part of Numba's cache key: rewriting it would throw the compiled code away)."""
    path = Path(directory) / f"{name}.py"
    if _same_text(path, source):
        return path
    _write_atomically(path, source, keep_same=True)
    return path


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def _write_atomically(path: Path, text: str, keep_same: bool = False) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path`` (readers never see half).

    With ``keep_same``, a file that another thread or process put at ``path`` meanwhile with the same text is
    kept: the temporary file is linked into place only where none exists (two functions of one structure created
    at once write the same module; replacing the first writer's file would change its modification time, and
    Numba's cache would then miss what the worker had just compiled from it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        if keep_same:
            try:
                os.link(temporary, path)  # atomic, and fails where path exists
            except FileExistsError:
                if not _same_text(path, text):
                    os.replace(temporary, path)
            except OSError:  # no hard links on this file system
                os.replace(temporary, path)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        else:
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def import_module_from(path: Path, name: str) -> ModuleType:
    """The module ``name`` imported from the file ``path`` and registered in ``sys.modules``; reused when it was
    already imported from that file and the file has not changed since.

    Serialised by a lock: kernels of several functions load from different threads, and a second thread must not
    be handed a module that the first one has registered but not yet finished executing (it has no ``kernel``
    until its ``import numba`` returns)."""
    path = Path(path).resolve()
    stamp = _stamp(path)
    with _import_lock:
        existing = sys.modules.get(name)
        if existing is not None and getattr(existing, "__nbdiff_origin__", None) == (str(path), stamp):
            return existing
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {name} from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if sys.modules.get(name) is module:
                del sys.modules[name]
            raise
        module.__nbdiff_origin__ = (str(path), stamp)  # type: ignore[attr-defined]  # only once it is complete
        return module


_import_lock = threading.RLock()


def _stamp(path: Path) -> list[int]:
    """The file's modification time (ns) and size: what Numba's cache checks, and what markers record."""
    status = path.stat()
    return [status.st_mtime_ns, status.st_size]


# ---------------------------------------------------------------------------------------------------------------
# Compiled markers
# ---------------------------------------------------------------------------------------------------------------
def marker_path(path: Path) -> Path:
    """The marker file of the module at ``path``: ``<name>.compiled.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".py") + MARKER_SUFFIX)


def compiled_signatures(path: Path) -> set[str]:
    """The signatures the worker compiled into Numba's cache for the module at ``path`` as it is now (a marker
    written for an earlier version of the file counts for nothing)."""
    try:
        record = json.loads(marker_path(path).read_text(encoding="utf-8"))
        if record.get("module") != _stamp(Path(path)):
            return set()
        return set(record.get("signatures", ()))
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def is_compiled(path: Path, signatures: Sequence[str]) -> bool:
    """Whether every one of ``signatures`` (compared as written) was compiled into Numba's cache by the worker."""
    return set(signatures) <= compiled_signatures(path)


def mark_compiled(path: Path, signatures: Sequence[str]) -> None:
    """Record ``signatures`` as compiled into Numba's cache, merged with the marker's earlier entries.

    Two processes marking the same module at once may lose one's entries: the cost is a recompile that is a cache
    hit, never a wrong answer."""
    merged = compiled_signatures(path) | set(signatures)
    record = {"module": _stamp(Path(path)), "signatures": sorted(merged)}
    _write_atomically(marker_path(path), json.dumps(record, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Loading compiled kernels (main process)
# ---------------------------------------------------------------------------------------------------------------
def cache_key(signature: str) -> tuple:
    """The argument types of a Numba signature string, as the tuple Numba's disk cache is keyed by (the key a call
    compiles under; the worker compiles with it too)."""
    from numba.core import sigutils

    args, _ = sigutils.normalize_signature(signature)
    return tuple(args)


def load_compiled(path: Path, name: str, signatures: Sequence[str], function: str = "kernel") -> Any:
    """The dispatcher ``function`` of the module at ``path`` with every signature loaded from Numba's disk cache,
    never compiled (compiling here would hold the GIL); calls with other types then raise ``TypeError``.

    Raises ``CacheMiss`` when a signature is not in the cache (compile it in the worker first). This is the one
    place that uses Numba's private API: what ``Dispatcher.compile`` does on a cache hit (numba 0.59-0.65)."""
    if not signatures:
        raise ValueError(f"load_compiled({name}): no signatures to load")
    from numba.core.compiler_lock import global_compiler_lock

    dispatcher = getattr(import_module_from(path, name), function)
    try:
        cache, context, overloads = dispatcher._cache, dispatcher.targetctx, dispatcher.overloads
    except AttributeError as error:
        raise CacheMiss(f"{name}.{function}: this Numba has no dispatcher cache to load from ({error})") from None
    with global_compiler_lock:
        for signature in signatures:
            key = cache_key(signature)
            if key in overloads:
                continue
            try:
                result = cache.load_overload(key, context)
            except Exception as error:  # a damaged or foreign cache file is a miss, not a crash
                raise CacheMiss(f"{name}.{function}{signature}: Numba's cache failed to load it: {error}") from error
            if result is None:
                raise CacheMiss(f"{name}.{function}{signature} is not in Numba's cache for {path}")
            try:
                if not result.objectmode:
                    context.insert_user_function(result.entry_point, result.fndesc, [result.library])
                dispatcher.add_overload(result)
            except AttributeError as error:
                detail = f"this Numba's cache results are not as expected ({error})"
                raise CacheMiss(f"{name}.{function}: {detail}") from None
    dispatcher.disable_compile()
    return dispatcher


# ---------------------------------------------------------------------------------------------------------------
# Reproducers
# ---------------------------------------------------------------------------------------------------------------
def write_reproducer(
    directory: Path,
    name: str,
    source: str,
    arguments: Sequence[Any],
    expected: Sequence[np.ndarray] | None,
    reason: str,
    signatures: Sequence[str] = (),
    outputs: Sequence[int] = (),
    function: str = "kernel",
) -> Path:
    """A self-contained folder ``<directory>/<name>-<time>/`` that replays a kernel with ``python reproduce.py``
    (NumPy and Numba only): ``kernel.py``, ``arguments.npz``, ``expected.npz`` (when given), ``README.txt``.

    ``arguments`` are the kernel's call arguments in order (arrays and scalars); those at positions ``outputs``
    are output buffers, recorded by dtype and shape and allocated afresh (filled with NaN where the dtype allows,
    so an element the kernel never writes shows). ``expected[j]`` is the interpreter's value of output
    ``outputs[j]``; with no ``outputs``, ``expected`` are the values the call returns (a whole-function entry
    point returns a tuple). ``function`` is the module's compiled function (``kernel``, or ``entry``). With no
    arguments (a compile failure) the script compiles ``signatures`` so the error shows."""
    folder = _new_folder(Path(directory), name)
    (folder / "kernel.py").write_text(source, encoding="utf-8")
    manifest, arrays = _record_arguments(arguments, outputs)
    manifest["signatures"] = list(signatures)
    manifest["function"] = function
    arrays["manifest"] = np.array(json.dumps(manifest))
    np.savez(folder / "arguments.npz", **arrays)
    if expected is not None:
        np.savez(folder / "expected.npz", **{f"expected{j}": np.asarray(v) for j, v in enumerate(expected)})
    (folder / "reproduce.py").write_text(_REPRODUCE_SCRIPT.replace("TOLERANCE = {}", _tolerance_line()))
    (folder / "README.txt").write_text(_readme(name, reason, manifest, expected is not None), encoding="utf-8")
    return folder


def _new_folder(directory: Path, name: str) -> Path:
    """A folder named after ``name`` and the current time that did not exist before."""
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1000):
        folder = directory / (stem if attempt == 0 else f"{stem}-{attempt}")
        with contextlib.suppress(FileExistsError):
            folder.mkdir(parents=True)
            return folder
    raise FileExistsError(f"no free reproducer folder name for {stem} in {directory}")


def _record_arguments(arguments: Sequence[Any], outputs: Sequence[int]) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest (each argument's kind, dtype and shape) and the arrays to save for ``arguments``."""
    kinds, arrays = [], {}
    for i, argument in enumerate(arguments):
        value = np.asarray(argument)
        kind = "output" if i in outputs else ("array" if isinstance(argument, np.ndarray) else "scalar")
        kinds.append({"kind": kind, "dtype": value.dtype.name, "shape": list(value.shape)})
        if kind != "output":
            arrays[f"arg{i}"] = value
    return {"arguments": kinds, "outputs": [int(i) for i in outputs]}, arrays


def _tolerance_line() -> str:
    return f"TOLERANCE = {REPRODUCER_TOLERANCE!r}"


def _readme(name: str, reason: str, manifest: dict, has_expected: bool) -> str:
    """What happened and how to replay it."""
    import platform

    lines = [
        f"nbdiff kernel reproducer: {name}",
        "",
        "Reason:",
        *("    " + line for line in reason.splitlines()),
        "",
        "Replay (needs only NumPy and Numba):  python reproduce.py",
        "  kernel.py      the generated kernel module, as nbdiff compiled it",
        "  arguments.npz  the call's arguments (inputs saved; output buffers recorded by dtype and shape)",
    ]
    if has_expected:
        lines.append("  expected.npz   the interpreter's outputs; the script compares and exits 1 on a mismatch")
    if manifest["signatures"]:
        lines += ["", "Signatures:", *("    " + s for s in manifest["signatures"])]
    if manifest["arguments"]:
        lines += ["", "Arguments:"]
        lines += [f"    {i}: {a['kind']} {a['dtype']}{a['shape']}" for i, a in enumerate(manifest["arguments"])]
    lines += ["", f"Written by nbdiff on Python {platform.python_version()}, NumPy {np.__version__}."]
    return "\n".join(lines) + "\n"


_REPRODUCE_SCRIPT = '''\
"""Replay an nbdiff kernel: python reproduce.py (NumPy and Numba only). Exit code 1 on a mismatch."""

import importlib.util
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {}


def load_kernel(function):
    spec = importlib.util.spec_from_file_location("nbdiff_reproducer_kernel", os.path.join(HERE, "kernel.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, function)


def fresh_output(dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return np.full(shape, np.nan, dtype=dtype)
    return np.zeros(shape, dtype=dtype)


def arguments(saved, manifest):
    values = []
    for i, record in enumerate(manifest["arguments"]):
        if record["kind"] == "output":
            values.append(fresh_output(record["dtype"], tuple(record["shape"])))
        elif record["kind"] == "scalar":
            values.append(saved["arg%d" % i][()])
        else:
            values.append(np.ascontiguousarray(saved["arg%d" % i]))
    return values


def compare(j, got, expected):
    """Print the differences of output j; whether it agrees."""
    got = np.asarray(got).reshape(-1)
    expected = np.asarray(expected).reshape(-1)
    if got.size != expected.size:
        print("output %d: %d elements, expected %d: MISMATCH" % (j, got.size, expected.size))
        return False
    if expected.dtype.kind not in "fc":
        wrong = int(np.count_nonzero(got != expected))
        print("output %d: %d elements differ: %s" % (j, wrong, "MISMATCH" if wrong else "agree"))
        return wrong == 0
    rtol = TOLERANCE.get(expected.dtype.name, 1e-9)
    with np.errstate(all="ignore"):
        same_nan = np.array_equal(np.isnan(got), np.isnan(expected))
        finite = np.isfinite(expected) & np.isfinite(got)
        same_inf = np.array_equal(got[np.isinf(expected)], expected[np.isinf(expected)])
        difference = np.abs(got[finite] - expected[finite])
        scale = float(np.abs(expected[finite]).max()) if difference.size else 0.0
        absolute = float(difference.max()) if difference.size else 0.0
        relative = float((difference / np.maximum(np.abs(expected[finite]), 1e-300)).max()) if difference.size else 0.0
        close = bool(np.all(difference <= rtol * np.abs(expected[finite]) + rtol * scale))
    ok = same_nan and same_inf and close
    print(
        "output %d: max abs difference %.3g, max relative difference %.3g%s: %s"
        % (j, absolute, relative, "" if same_nan and same_inf else ", NaN/inf positions differ",
           "agree" if ok else "MISMATCH")
    )
    return ok


def main():
    saved = np.load(os.path.join(HERE, "arguments.npz"))
    manifest = json.loads(str(saved["manifest"]))
    kernel = load_kernel(manifest.get("function", "kernel"))
    if not manifest["arguments"]:
        for signature in manifest["signatures"]:
            print("compiling kernel for signature %s" % signature)
            kernel.compile(signature)
        print("compiled: no error")
        return 0
    values = arguments(saved, manifest)
    returned = kernel(*values)
    if manifest["outputs"]:  # a kernel writes its outputs into buffers
        results = [values[i] for i in manifest["outputs"]]
        where = ["argument %d" % i for i in manifest["outputs"]]
    else:  # an entry point returns them
        results = list(returned) if isinstance(returned, tuple) else [returned]
        where = ["returned" for _ in results]
    for j, result in enumerate(results):
        print("output %d (%s):" % (j, where[j]))
        print(result)
    expected_path = os.path.join(HERE, "expected.npz")
    if not os.path.exists(expected_path):
        return 0
    expected = np.load(expected_path)
    if len(expected.files) != len(results):
        print("%d outputs, expected %d: MISMATCH" % (len(results), len(expected.files)))
        return 1
    agree = [compare(j, result, expected["expected%d" % j]) for j, result in enumerate(results)]
    print("agree" if all(agree) else "MISMATCH")
    return 0 if all(agree) else 1


if __name__ == "__main__":
    sys.exit(main())
'''

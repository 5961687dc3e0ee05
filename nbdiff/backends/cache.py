"""Kernel modules on disk: written once, compiled by the worker into Numba's disk cache, loaded here without
compiling; and reproducer folders for kernels that failed to compile or disagreed with the interpreter.

A kernel module is a real file ``<cache>/kernels-py3XX/<name>.py`` whose ``kernel`` is ``numba.njit(cache=True)``,
so Numba keeps its machine code in ``__pycache__`` beside it, keyed by the file's modification time: a module is
never rewritten with the same text. The compile worker (``nbdiff.backends.worker``) compiles it and records the
signatures it saved in ``<name>.compiled.json``; the main process then loads them from Numba's cache in milliseconds
(``numba_loading.load_compiled``, the CPU target's) instead of compiling, which would hold the GIL and stall the
notebook.

Signature strings are Numba's (``"void(int64, float64[::1])"`` or ``"(int64, float64[::1])"``). Numba's cache
is keyed here by the argument types only (the key a call compiles under); a return type, if given, is ignored.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Iterator, Sequence

import numpy as np

from nbdiff.config import default_cache_dir, options
from nbdiff.errors import BackendError

MARKER_SUFFIX = ".compiled.json"
# Relative tolerance by dtype of a reproducer's comparison; the absolute one is this times the output's largest
# finite magnitude (compiled transcendentals may differ from NumPy's in the last ulps, which cancellation grows).
REPRODUCER_TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "complex128": 1e-9, "complex64": 1e-4}
# A reproducer saves at most this many bytes of arrays (inputs and expected outputs): beyond it the expected
# outputs are left out and large inputs are saved as their leading elements plus a seed (a partial replay).
REPRODUCER_MAX_BYTES = 16 * 2**20
REPRODUCERS_PER_KERNEL = 5  # reproducer folders kept per kernel module; older ones are deleted
REPRODUCER_FOLDER = re.compile(r"(?P<name>.+)-(?P<time>\d{8}-\d{6})(?:-(?P<attempt>\d+))?")

_log = logging.getLogger("nbdiff.cache")


class CacheMiss(BackendError):
    """A kernel signature that Numba's disk cache does not hold (or cannot give back) for this module."""


class CacheRefused(BackendError):
    """A cache folder another user could write into (or a symbolic link where nbdiff writes): nothing in it is
    imported or loaded; the interpreter answers instead."""


# ---------------------------------------------------------------------------------------------------------------
# Private folders and files: nbdiff imports code and Numba unpickles files from the cache, so no other user may
# be able to write any folder of it, and nothing nbdiff writes follows a symbolic link.
# ---------------------------------------------------------------------------------------------------------------
def cache_directory() -> Path:
    """nbdiff's cache folder: the ``cache_dir`` option (``NBDIFF_CACHE_DIR``), else the user's cache folder."""
    configured = getattr(options(), "cache_dir", None)
    return Path(configured or default_cache_dir()).expanduser()


def cache_root(root: Path | None = None) -> Path:
    """The cache folder ``root`` (default: ``cache_directory()``), made private or checked (``private_folder``);
    its missing parents are made too."""
    root = Path(root or cache_directory())
    if not root.parent.exists():
        os.makedirs(root.parent, mode=0o700, exist_ok=True)
    return private_folder(root)


def kernels_directory(root: Path | None = None) -> Path:
    """Where kernel modules live, made private or checked with ``root`` and its ``__pycache__`` (where Python and
    Numba write): one folder per Python minor version (the generated text may depend on it)."""
    folder = private_folder(cache_root(root) / f"kernels-py{sys.version_info.major}{sys.version_info.minor}")
    private_folder(folder / "__pycache__")
    return folder


def reproducers_directory(root: Path | None = None) -> Path:
    """Where ``write_reproducer`` folders go, made private or checked with ``root``."""
    return private_folder(cache_root(root) / "reproducers")


def private_folder(path: Path) -> Path:
    """``path`` made as a folder only this user may use (0700, whatever the umask), or, where it exists, checked:
    a real folder (not a symbolic link), owned by this user, that neither group nor others may write. Raises
    ``CacheRefused`` otherwise: whoever can write a cache folder can run code as the user who loads from it."""
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        _make_private_folder(path)
    return _check_private_folder(path)


def _make_private_folder(path: Path) -> None:
    """Create ``path`` with mode 0700 exactly (``os.mkdir`` applies the umask); ``FileExistsError`` if it exists."""
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)


def _check_private_folder(path: Path) -> Path:
    """``path`` if it passes ``private_folder``'s checks (``os.lstat``: a link is never followed), else raise."""
    status = os.lstat(path)
    if stat.S_ISLNK(status.st_mode):
        raise _refusal(path, status, f"it is a symbolic link (to {os.readlink(path)}), not a folder")
    if not stat.S_ISDIR(status.st_mode):
        raise _refusal(path, status, "it is not a folder")
    if not hasattr(os, "getuid"):  # Windows: no POSIX owner or mode bits to check
        return path
    if status.st_uid != os.getuid():
        raise _refusal(path, status, f"it belongs to another user, not to you ({_user_name(os.getuid())})")
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refusal(path, status, "its group or other users may write it")
    return path


def _refusal(path: Path, status: os.stat_result, problem: str) -> CacheRefused:
    """The error for a cache folder that fails the checks: the folder, its owner and mode, and what to do."""
    owner = _user_name(status.st_uid) if hasattr(os, "getuid") else "unknown"
    return CacheRefused(
        f"nbdiff refuses the cache folder {path} (owner {owner}, mode {stat.S_IMODE(status.st_mode):04o}): {problem}. "
        "nbdiff imports kernel modules and loads Numba's pickled files from it, so whoever can change it could run "
        "code as you. Remove it (or have its owner remove it) and nbdiff makes a private one, or choose another "
        "cache folder: NBDIFF_CACHE_DIR or nd.option_context(cache_dir=...). The interpreter answers meanwhile."
    )


def _user_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` where the user database does not know the id."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@contextlib.contextmanager
def _new_private_file(path: Path) -> Iterator[IO[bytes]]:
    """A new file at ``path`` with mode 0600 exactly, open for writing; fails where anything exists at ``path``,
    a symbolic link included (``O_EXCL``, ``O_NOFOLLOW``)."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(handle, "wb") as file:
        _make_private_file(handle)
        yield file


def _make_private_file(handle: int) -> None:
    """Mode 0600 exactly for the open file ``handle`` (its creation applied the umask, which may remove bits)."""
    if hasattr(os, "fchmod"):
        os.fchmod(handle, 0o600)


def _read_text(path: Path) -> str:
    """The text of the file at ``path``, never through a symbolic link (``OSError`` for one)."""
    handle = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(handle, "r", encoding="utf-8") as file:
        return file.read()


# ---------------------------------------------------------------------------------------------------------------
# Module files
# ---------------------------------------------------------------------------------------------------------------
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
        return _read_text(path) == text
    except (OSError, UnicodeDecodeError):
        return False


def _write_atomically(path: Path, text: str, keep_same: bool = False) -> None:
    """Write ``text`` to a private temporary file beside ``path``, then rename it over ``path`` (readers never see
    half); the folder must be private (``private_folder``), and a symbolic link at ``path`` is refused.

    With ``keep_same``, a file that another thread or process put at ``path`` meanwhile with the same text is
    kept: the temporary file is linked into place only where none exists (two functions of one structure created
    at once write the same module; replacing the first writer's file would change its modification time, and
    Numba's cache would then miss what the worker had just compiled from it)."""
    private_folder(path.parent)
    _refuse_link(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _make_private_file(handle)
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        if keep_same:
            try:
                os.link(temporary, path)  # atomic, and fails where path exists
            except FileExistsError:
                if not _same_text(path, text):
                    _refuse_link(path)
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


def _refuse_link(path: Path) -> None:
    """``CacheRefused`` where ``path`` is a symbolic link: nbdiff never writes through one, nor replaces one."""
    if os.path.islink(path):
        raise CacheRefused(
            f"nbdiff refuses to write {path}: it is a symbolic link (to {os.readlink(path)}), which nbdiff never "
            "makes; someone else put it there. Remove it, or choose another cache folder (NBDIFF_CACHE_DIR or "
            "nd.option_context(cache_dir=...))."
        )


def import_module_from(path: Path, name: str) -> ModuleType:
    """The module ``name`` imported from the file ``path`` and registered in ``sys.modules``; reused when it was
    already imported from that file and the file has not changed since.

    The module's folder and its ``__pycache__`` must be private (``private_folder``) and the file a regular one,
    checked before anything is imported; so must the folder of Numba's cache of each dispatcher the module
    defines (``CacheRefused``, with the module dropped), before any of it is loaded.

    Serialised by a lock: kernels of several functions load from different threads, and a second thread must not
    be handed a module that the first one has registered but not yet finished executing (it has no ``kernel``
    until its ``import numba`` returns)."""
    path = _checked_module_file(Path(path))
    stamp = module_stamp(path)
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
            _check_numba_cache_folders(module)
        except BaseException:
            if sys.modules.get(name) is module:
                del sys.modules[name]
            raise
        module.__nbdiff_origin__ = (str(path), stamp)  # type: ignore[attr-defined]  # only once it is complete
        return module


_import_lock = threading.RLock()


def _checked_module_file(path: Path) -> Path:
    """``path``, absolute, once its folder and ``__pycache__`` (where Python and Numba write beside it) are private
    folders, and the cache folder above where its folder is a cache's ``kernels-py3XX`` (whoever may write there
    may replace the folder), and it is a regular file, not a symbolic link."""
    if re.fullmatch(r"kernels-py\d+", path.parent.name):
        _check_private_folder(path.parent.parent)
    private_folder(path.parent)
    private_folder(path.parent / "__pycache__")
    _refuse_link(path)
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise CacheRefused(f"nbdiff refuses to import {path}: it is not a regular file")
    return path.parent.resolve() / path.name


def _check_numba_cache_folders(module: ModuleType) -> None:
    """Check the folder where each of ``module``'s dispatchers keeps its disk cache (normally the module's
    ``__pycache__``; elsewhere under ``NUMBA_CACHE_DIR``, or where that one was not writable)."""
    for value in list(vars(module).values()):
        folder = getattr(getattr(value, "_cache", None), "cache_path", None) if hasattr(value, "py_func") else None
        if isinstance(folder, str):
            _check_private_folder(Path(folder))


def module_stamp(path: Path) -> list[int]:
    """The file's modification time (ns) and size: what Numba's cache checks, and what markers record."""
    status = os.lstat(path)
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
        record = json.loads(_read_text(marker_path(path)))
        if record.get("module") != module_stamp(Path(path)):
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
    record = {"module": module_stamp(Path(path)), "signatures": sorted(merged)}
    _write_atomically(marker_path(path), json.dumps(record, indent=1) + "\n")


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
    """A self-contained private folder ``<directory>/<name>-<time>/`` (0700, files 0600: it holds the user's data)
    that replays a kernel with ``python reproduce.py`` (NumPy and Numba only): ``kernel.py``, ``arguments.npz``,
    ``expected.npz`` (when given), ``README.txt``. Only the newest ``REPRODUCERS_PER_KERNEL`` folders of ``name``
    are kept.

    ``arguments`` are the kernel's call arguments in order (arrays and scalars); those at positions ``outputs``
    are output buffers, recorded by dtype and shape and allocated afresh (filled with NaN where the dtype allows,
    so an element the kernel never writes shows). ``expected[j]`` is the interpreter's value of output
    ``outputs[j]``; with no ``outputs``, ``expected`` are the values the call returns (a whole-function entry
    point returns a tuple). Beyond ``REPRODUCER_MAX_BYTES`` the replay is partial (``_record_arguments``).
    ``function`` is the module's compiled function (``kernel``, or ``entry``). With no arguments (a compile
    failure) the script compiles ``signatures`` so the error shows."""
    directory = private_folder(Path(directory))
    folder = _new_folder(directory, name)
    manifest, arrays, expected = _record_arguments(arguments, outputs, expected)
    manifest["signatures"] = list(signatures)
    manifest["function"] = function
    arrays["manifest"] = np.array(json.dumps(manifest))
    _write_new_file(folder / "kernel.py", source)
    with _new_private_file(folder / "arguments.npz") as file:
        np.savez(file, **arrays)
    if expected is not None:
        with _new_private_file(folder / "expected.npz") as file:
            np.savez(file, **{f"expected{j}": v for j, v in enumerate(expected)})
    _write_new_file(folder / "reproduce.py", _REPRODUCE_SCRIPT.replace("TOLERANCE = {}", _tolerance_line()))
    _write_new_file(folder / "README.txt", _readme(name, reason, manifest, expected is not None))
    _prune_reproducers(directory, name)
    return folder


def _write_new_file(path: Path, text: str) -> None:
    """``text`` in a new private file at ``path`` (``_new_private_file``)."""
    with _new_private_file(path) as file:
        file.write(text.encode("utf-8"))


def _new_folder(directory: Path, name: str) -> Path:
    """A new private folder named after ``name`` and the current time (``REPRODUCER_FOLDER``), numbered after any
    of that second, so that later folders sort after earlier ones even where older ones were deleted."""
    moment = time.strftime("%Y%m%d-%H%M%S")
    taken = [_folder_order(entry, name) for entry in os.listdir(directory)]
    first = 1 + max((attempt for found, attempt in filter(None, taken) if found == moment), default=-1)
    for attempt in range(first, first + 1000):
        folder = directory / (f"{name}-{moment}" if attempt == 0 else f"{name}-{moment}-{attempt}")
        with contextlib.suppress(FileExistsError):
            _make_private_folder(folder)
            return folder
    raise FileExistsError(f"no free reproducer folder name for {name}-{moment} in {directory}")


def _folder_order(entry: str, name: str) -> tuple[str, int] | None:
    """The time and number in a reproducer folder name of ``name`` (None for any other name)."""
    match = REPRODUCER_FOLDER.fullmatch(entry)
    if match is None or match["name"] != name:
        return None
    return match["time"], int(match["attempt"] or 0)


def _prune_reproducers(directory: Path, name: str) -> None:
    """Delete all but the newest ``REPRODUCERS_PER_KERNEL`` reproducer folders of ``name`` in ``directory``: only
    real folders with the names ``_new_folder`` gives (never a symbolic link, nor through one)."""
    found = []
    for entry in os.scandir(directory):
        order = _folder_order(entry.name, name)
        if order is not None and entry.is_dir(follow_symlinks=False):
            found.append((order, entry.path))
    for _, path in sorted(found)[: max(0, len(found) - REPRODUCERS_PER_KERNEL)]:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)  # removes a link inside, never what it points to


def _record_arguments(
    arguments: Sequence[Any], outputs: Sequence[int], expected: Sequence[np.ndarray] | None = None
) -> tuple[dict, dict[str, np.ndarray], list[np.ndarray] | None]:
    """The manifest (each argument's kind, dtype and shape), the arrays to save for ``arguments``, and the expected
    values to save (None: none).

    Where inputs and expected values together exceed ``REPRODUCER_MAX_BYTES``, the expected values are not saved,
    and each array input larger than its share of the limit is saved as its leading elements plus a seed (its
    manifest entry's ``partial``): ``reproduce.py`` draws the rest from it and says the replay is partial."""
    kinds: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    for i, argument in enumerate(arguments):
        value = np.asarray(argument)
        kind = "output" if i in outputs else ("array" if isinstance(argument, np.ndarray) else "scalar")
        kinds.append({"kind": kind, "dtype": value.dtype.name, "shape": list(value.shape)})
        if kind != "output":
            arrays[f"arg{i}"] = value
    wanted = None if expected is None else [np.asarray(v) for v in expected]
    size = sum(a.nbytes for a in arrays.values()) + sum(v.nbytes for v in wanted or ())
    manifest = {"arguments": kinds, "outputs": [int(i) for i in outputs], "expected": "saved", "partial": False}
    if size <= REPRODUCER_MAX_BYTES:
        return manifest, arrays, wanted
    if wanted is not None:
        manifest["expected"] = f"not saved: the reproducer would hold {size} bytes, over {REPRODUCER_MAX_BYTES}"
    share = REPRODUCER_MAX_BYTES // max(1, len(arrays))
    for key, value in list(arrays.items()):
        position = int(key.removeprefix("arg"))
        if kinds[position]["kind"] == "array" and value.nbytes > share:
            head = value.reshape(-1)[: max(1, share // max(1, value.itemsize))]
            arrays[key] = np.array(head)
            kinds[position]["partial"] = {"seed": position, "saved": int(head.size)}
            manifest["partial"] = True
    return manifest, arrays, None


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
    elif manifest["expected"] != "saved":
        lines.append(f"  (the interpreter's outputs were {manifest['expected']}: the script does not compare)")
    if manifest["partial"]:
        lines += [
            "",
            "PARTIAL replay: the inputs marked 'partial' below were larger than the reproducer's size limit; only",
            "their leading elements were saved, and reproduce.py draws the others from the recorded seed (uniformly",
            "between the saved elements' extremes), so the replay may not show the failure.",
        ]
    if manifest["signatures"]:
        lines += ["", "Signatures:", *("    " + s for s in manifest["signatures"])]
    if manifest["arguments"]:
        lines += ["", "Arguments:"]
        for i, a in enumerate(manifest["arguments"]):
            partial = a.get("partial")
            note = f" (partial: first {partial['saved']} elements saved, seed {partial['seed']})" if partial else ""
            lines.append(f"    {i}: {a['kind']} {a['dtype']}{a['shape']}{note}")
    lines += ["", f"Written by nbdiff on Python {platform.python_version()}, NumPy {np.__version__}."]
    return "\n".join(lines) + "\n"


_REPRODUCE_SCRIPT = '''\
"""Replay an nbdiff kernel: python reproduce.py (NumPy and Numba only). Exit code 1 on a mismatch."""

import importlib.util
import json
import os
import re
import shutil
import stat
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
        elif "partial" in record:
            values.append(regenerated(saved["arg%d" % i], record))
        else:
            values.append(np.ascontiguousarray(saved["arg%d" % i]))
    return values


def regenerated(head, record):
    """A partly saved input: its saved leading elements, the rest drawn with the recorded seed, uniformly between
    the saved elements' (finite) extremes."""
    dtype, shape = np.dtype(record["dtype"]), tuple(record["shape"])
    size = int(np.prod(shape, dtype=np.int64))
    random = np.random.default_rng(record["partial"]["seed"])
    head = np.asarray(head).reshape(-1)
    if dtype.kind == "b":
        values = random.random(size) < 0.5
    elif dtype.kind in "iu":
        values = random.integers(head.min(), head.max(), size=size, endpoint=True, dtype=dtype)
    else:
        parts = [head.real, head.imag] if dtype.kind == "c" else [head]
        drawn = []
        for part in parts:
            finite = part[np.isfinite(part)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            drawn.append(random.uniform(low, high, size))
        values = drawn[0] + 1j * drawn[1] if dtype.kind == "c" else drawn[0]
    values = np.asarray(values).astype(dtype)
    values[: head.size] = head
    return values.reshape(shape)


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
    if manifest.get("partial"):
        print("PARTIAL replay: some inputs were too large to save in full (see README.txt); the rest is drawn")
    if manifest.get("expected", "saved") != "saved":
        print("the interpreter's outputs were %s: no comparison" % manifest["expected"])
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

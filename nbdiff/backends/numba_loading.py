"""Loading Numba CPU kernels from Numba's disk cache in the main process, never compiling: the CPU target's use of
the Numba dispatcher's private API (``load_compiled``), and the quarantine of a module's damaged cache files.

The target-neutral cache (``cache.py``) writes modules, marks them compiled and keeps reproducers; the compile
worker compiles with ``cache_key`` and quarantines with ``quarantine`` too.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from nbdiff.backends.cache import (
    CacheMiss,
    compiled_signatures,
    import_module_from,
    marker_path,
    module_stamp,
    private_folder,
)
from nbdiff.errors import BackendError

_log = logging.getLogger("nbdiff.cache")


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

    Raises ``CacheMiss`` when a signature is not in the cache (compile it in the worker first), also when a cache
    file is damaged or another kernel's: that module's entries are then quarantined (``quarantine``) and the miss
    names the file, so the caller compiles it again. This is the one place that uses Numba's private API: what
    ``Dispatcher.compile`` does on a cache hit (numba 0.59-0.68)."""
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
            result = _load_entry(Path(path), name, function, signature, cache, context)
            try:
                if not result.objectmode:
                    context.insert_user_function(result.entry_point, result.fndesc, [result.library])
                dispatcher.add_overload(result)
            except AttributeError as error:
                detail = f"this Numba's cache results are not as expected ({error})"
                raise CacheMiss(f"{name}.{function}: {detail}") from None
    dispatcher.disable_compile()
    return dispatcher


def _load_entry(path: Path, name: str, function: str, signature: str, cache: Any, context: Any) -> Any:
    """Numba's cache entry of ``signature``, checked to be this module's; ``CacheMiss`` where there is none, after
    quarantining the module's entries where a file is damaged or the worker had recorded the entry compiled."""
    key = cache_key(signature)
    what = f"{name}.{function}{signature}"
    try:
        result = cache.load_overload(key, context)
        if result is not None:
            _check_entry(result, name, key)
    except Exception as error:  # a damaged or foreign cache file is a miss, not a crash
        damaged, where = _damaged_file(cache, key, context), quarantine(path, cache)
        _log.warning("nbdiff: Numba's cache file %s is damaged (%s); %s", damaged, error, where)
        detail = f"Numba's cache file {damaged} is damaged ({type(error).__name__}: {error}); {where}"
        raise CacheMiss(f"{what}: {detail}") from error
    if result is not None:
        return result
    if signature not in compiled_signatures(path):
        raise CacheMiss(f"{what} is not in Numba's cache for {path}")
    damaged, where = _damaged_file(cache, key, context), quarantine(path, cache)  # a worker might reuse it
    _log.info("nbdiff: %s is missing from Numba's cache file %s; %s", what, damaged, where)
    detail = "although the worker compiled it (another kernel's file, or another Numba's or machine's)"
    raise CacheMiss(f"{what} is not in Numba's cache file {damaged} {detail}; {where}")


class ForeignEntry(ValueError):
    """A Numba cache entry that loads, but was compiled from another module or for other argument types."""


def _check_entry(result: Any, name: str, key: tuple) -> None:
    """Raise ``ForeignEntry`` unless the loaded ``result`` is the module ``name``'s code for the types ``key`` (a
    data file copied from another kernel unpickles fine, and would compute that kernel's function)."""
    module = getattr(getattr(result, "fndesc", None), "modname", name)
    arguments = tuple(getattr(getattr(result, "signature", None), "args", key))
    if module != name or arguments != key:
        raise ForeignEntry(f"it holds {module}{arguments}, not {name}{key}")


def _damaged_file(cache: Any, key: tuple, context: Any) -> Path | str:
    """Which of Numba's cache files failed to load for ``key``: the index, or the data file it names."""
    try:
        files = cache._cache_file
        try:
            overloads = files._load_index()
        except Exception:
            return Path(files._index_path)
        data = overloads.get(cache._index_key(key, context.codegen()))
        return Path(files._data_path(data)) if data else Path(files._index_path)
    except Exception:  # another Numba's layout: name the folder
        return f"in {getattr(cache, 'cache_path', '?')}"


def quarantine(path: Path, cache: Any) -> str:
    """Move Numba's cache files of the module at ``path`` (its index and data files) into a new private folder in
    ``<kernels>/quarantine/``, then delete its marker and bump its modification time, so that every process (the
    compile worker included) imports it afresh and compiles it again; what was done, in words."""
    try:
        folder, base = Path(cache.cache_path), cache._impl.filename_base
        files = [folder / f"{base}.nbi", *folder.glob(glob.escape(base) + ".*.nbc")]
        target = Path(tempfile.mkdtemp(dir=private_folder(path.parent / "quarantine"), prefix=f"{path.stem}-"))
        for file in files:
            if os.path.lexists(file):
                os.replace(file, target / file.name)
        done = f"this module's cache files were moved to {target}; it will be compiled again"
    except (AttributeError, OSError, BackendError) as error:
        done = f"quarantining its cache files failed ({error}); it will be compiled again"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker_path(path))
    with contextlib.suppress(OSError):
        now = time.time_ns()
        os.utime(path, ns=(now, max(now, module_stamp(path)[0] + 1)))
    return done

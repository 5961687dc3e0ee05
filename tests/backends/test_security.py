"""The cache holds code that nbdiff imports and pickles that Numba loads, so no other local user may be able to put
anything there (issue 13). Under umask 000 every folder nbdiff makes is 0700 and every file it writes 0600; a cache
folder owned by another user, or one that group or others may write, is refused with a clear status, and nothing
planted in it runs (neither a module's bytecode nor a Numba index pickle); a symbolic link planted where nbdiff
writes is refused, never followed.

The attacker's side runs as ``nobody`` where the tests run as root (else that test is skipped): a forked child
that sets its user plants, in a folder everyone may write, what nbdiff would find under the predictable names of a
kernel's module.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import pickle
import shutil
import signal
import stat
import sys
import tempfile
import time
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cache, numba_loading
from nbdiff.backends.cpu import inject_fault, plan_units
from nbdiff.backends.worker import CompileJob, CompileWorker, compile_job, compile_worker, worker_path
from nbdiff.function import UNCHECKED
from tests.backends import test_worker as worker_tests
from tests.backends.cpu_support import WAIT, call_both, chain, fresh_bits, reproducer_folder

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX owners, modes and os.fork")

ARGS = (np.linspace(-1, 1, 5),)
KERNELS = f"kernels-py{sys.version_info.major}{sys.version_info.minor}"
NUMBA_FILES = (".nbi", ".nbc")  # Numba's own cache files, which the compile worker writes


class _Payload:
    """Pickles as a call of ``exec(code)``: what unpickling a planted Numba index would run."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def kernel_function(backend: str, bits: int) -> nd.Function:
    x = nd.vector("x", shape=(5,))
    return nd.function([x], chain(x, bits), backend=backend)


def index_name(name: str, source: str, function: str) -> str:
    """The name of Numba's index file for ``function`` of the module ``name``: ``<module>.<function>-<first
    line>.py3XX.nbi``, the first line being that of the function's code object (its decorator's)."""
    code = next(c for c in compile(source, name, "exec").co_consts if getattr(c, "co_name", None) == function)
    version = f"{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return f"{name}.{function}-{code.co_firstlineno}.py{version}.nbi"


def attack_plan(kernels: Path, bits: int, sentinels: Path) -> dict:
    """What the attacker plants for the kernels of ``kernel_function(bits)``, for ``plant_as``: for each module,
    its exact text (so nbdiff keeps it), bytecode that Python would take for it, and a Numba index whose first
    pickle runs code; each payload writes a sentinel file."""
    units = plan_units(kernel_function("numpy", bits), False, None)
    modules = []
    for module in [m for unit in units for m in unit.modules]:
        path = kernels / f"{module.name}.py"
        bytecode = f"open({str(sentinels / (module.name + '.bytecode'))!r}, 'w').close()\n"
        payload = _Payload(f"open({str(sentinels / (module.name + '.pickle'))!r}, 'w').close()")
        modules.append(
            {
                "path": str(path),
                "source": module.source.encode(),
                "signatures": list(module.signatures),
                "pyc": importlib.util.cache_from_source(str(path)),
                "bytecode": marshal.dumps(compile(bytecode, str(path), "exec")),
                "index": str(kernels / "__pycache__" / index_name(module.name, module.source, module.function)),
                "pickle": pickle.dumps(payload),
            }
        )
    return {"kernels": str(kernels), "modules": modules}


def plant_as(plan: dict, uid: int | None = None, gid: int | None = None) -> None:
    """Plant ``plan`` from a child process under umask 000, as the user ``uid`` where given (``os.fork``, then
    ``os.setuid``: the child runs only system calls and byte writes, safe after a fork in a threaded process)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.umask(0)
            if uid is not None:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            _plant(plan)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "planting failed"
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("planting never finished")


def _plant(plan: dict) -> None:
    """The attacker's side of ``plant_as`` (the marker's stamp and the bytecode's header match the written file)."""
    os.makedirs(os.path.join(plan["kernels"], "__pycache__"), exist_ok=True)
    for module in plan["modules"]:
        _write(module["path"], module["source"])
        status = os.stat(module["path"])
        stamp = {"module": [status.st_mtime_ns, status.st_size], "signatures": module["signatures"]}
        _write(module["path"][:-3] + ".compiled.json", json.dumps(stamp).encode())
        mtime, size = (int(status.st_mtime) & 0xFFFFFFFF), status.st_size & 0xFFFFFFFF
        header = MAGIC_NUMBER + bytes(4) + mtime.to_bytes(4, "little") + size.to_bytes(4, "little")
        _write(module["pyc"], header + module["bytecode"])
        _write(module["index"], module["pickle"])


def _write(path: str, data: bytes) -> None:
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(handle, data)
    finally:
        os.close(handle)


def assert_refused(bits: int, root: Path, refused: Path, sentinels: Path, problem: str) -> str:
    """A function whose kernels were planted in ``root`` falls back, naming ``refused``, and nothing planted ran:
    not in this process's background compilation, nor when loading or compiling the planted module directly."""
    with nd.option_context(cache_dir=str(root)):
        f = kernel_function("cpu", bits)
    status = f.wait(WAIT)
    assert status.startswith(f"fallback: nbdiff refuses the cache folder {refused} (owner "), status
    assert problem in status, status
    assert "NBDIFF_CACHE_DIR" in status and "nd.option_context(cache_dir=...)" in status, status
    reason = status.removeprefix("fallback: ")
    failed = [e for e in f.events if e.state == "failed"]
    assert failed and all(e.reason == reason for e in failed), f.events
    call_both(f, kernel_function("numpy", bits), ARGS, "with the cache refused")
    assert f.backend == "numpy"

    unit = plan_units(kernel_function("numpy", bits), False, None)[0]
    module = unit.modules[0]
    path = root / KERNELS / f"{module.name}.py"
    with pytest.raises(cache.CacheRefused, match="refuses"):
        numba_loading.load_compiled(path, module.name, module.signatures)
    result = compile_job(CompileJob(str(path), module.name, module.function, module.signatures))  # the worker's
    assert not result.ok and "refuses" in result.error, result
    assert sorted(os.listdir(sentinels)) == [], "planted code ran"
    return status


def stat_of(path: Path) -> tuple[int, int]:
    """The owner and permission bits of ``path`` (not following a link)."""
    status = os.lstat(path)
    return status.st_uid, stat.S_IMODE(status.st_mode)


# ---------------------------------------------------------------------------------------------------------------
# Another user's cache folder, and folders others may write
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def shared_folder():
    """A folder every user may create things in (like /tmp: sticky), outside the tests' private temporary ones."""
    folder = Path(tempfile.mkdtemp(prefix="nbdiff-shared-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to run the attacker as nobody")
def test_a_cache_folder_of_another_user_is_refused_and_nothing_planted_in_it_runs(tmp_path, shared_folder):
    import pwd

    try:
        attacker = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    bits, root, sentinels = fresh_bits(), shared_folder / "cache", tmp_path / "sentinels"
    sentinels.mkdir()
    plant_as(attack_plan(root / KERNELS, bits, sentinels), attacker.pw_uid, attacker.pw_gid)
    assert stat_of(root) == (attacker.pw_uid, 0o777)
    planted = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    status = assert_refused(bits, root, root, sentinels, "it belongs to another user, not to you (root (uid 0))")
    assert f"(owner nobody (uid {attacker.pw_uid}), mode 0777)" in status, status
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == planted, "nbdiff wrote in the refused folder"


@pytest.mark.parametrize(
    ("folder", "mode"), [("root", 0o777), ("kernels", 0o770), ("pycache", 0o777), ("pycache", 0o1777)]
)
def test_a_cache_folder_others_may_write_is_refused_and_nothing_planted_in_it_runs(tmp_path, folder, mode):
    bits, root, sentinels = fresh_bits(), tmp_path / "cache", tmp_path / "sentinels"
    sentinels.mkdir()
    plant_as(attack_plan(root / KERNELS, bits, sentinels))
    folders = {"root": root, "kernels": root / KERNELS, "pycache": root / KERNELS / "__pycache__"}
    for path in folders.values():
        path.chmod(0o700)
    folders[folder].chmod(mode)

    status = assert_refused(bits, root, folders[folder], sentinels, "its group or other users may write it")
    assert f"mode {mode:04o})" in status, status


# ---------------------------------------------------------------------------------------------------------------
# Symbolic links where nbdiff writes
# ---------------------------------------------------------------------------------------------------------------
def test_a_symbolic_link_where_nbdiff_writes_a_module_is_refused_not_followed(tmp_path):
    bits, root = fresh_bits(), tmp_path / "cache"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    module = plan_units(kernel_function("numpy", bits), False, None)[0].modules[0]
    (root / KERNELS).mkdir(parents=True)
    link = root / KERNELS / f"{module.name}.py"
    link.symlink_to(victim)
    with nd.option_context(cache_dir=str(root)):
        f = kernel_function("cpu", bits)
    status = f.wait(WAIT)
    assert status == f"fallback: nbdiff refuses to write {link}: it is a symbolic link (to {victim}), " + (
        "which nbdiff never makes; someone else put it there. Remove it, or choose another cache folder "
        "(NBDIFF_CACHE_DIR or nd.option_context(cache_dir=...))."
    )
    assert [e.state for e in f.events if e.kernel == "k0"] == ["failed"]
    assert link.is_symlink() and victim.read_text() == "precious\n"


def test_a_symbolic_link_where_nbdiff_writes_a_marker_is_refused_not_followed(tmp_path):
    path = cache.write_module(cache.kernels_directory(tmp_path), "security_marker", "x = 1\n")
    victim = tmp_path / "victim.json"
    victim.write_text("precious\n")
    cache.marker_path(path).symlink_to(victim)
    assert cache.compiled_signatures(path) == set()  # not read through the link either
    with pytest.raises(cache.CacheRefused, match="symbolic link"):
        cache.mark_compiled(path, ["(float64,)"])
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("folder", ["root", KERNELS, "__pycache__", "reproducers"])
def test_a_symbolic_link_for_a_cache_folder_is_refused(tmp_path, folder):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = tmp_path / "cache"
    where = {"root": root, KERNELS: root / KERNELS, "__pycache__": root / KERNELS / "__pycache__"}
    where["reproducers"] = root / "reproducers"
    where[folder].parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    where[folder].symlink_to(elsewhere)
    with pytest.raises(cache.CacheRefused, match=f"refuses the cache folder {where[folder]} .*symbolic link"):
        (cache.reproducers_directory if folder == "reproducers" else cache.kernels_directory)(root)
    assert list(elsewhere.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Modes under umask 000
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_written_under_umask_000(tmp_path_factory):
    """A cache where, under umask 000, a function compiled, one disagreed (a reproducer with expected values) and
    one failed to compile (a reproducer without): made by a compile worker started under that umask too."""
    root = tmp_path_factory.mktemp("umask") / "cache"
    previous = os.umask(0)
    try:
        compile_worker().close()  # the next job starts a worker, which inherits the umask
        with nd.option_context(cache_dir=str(root)):
            good = kernel_function("cpu", fresh_bits())
            with inject_fault("wrong-values"):
                wrong = kernel_function("cpu", fresh_bits())
            with inject_fault("compile-error"):
                broken = kernel_function("cpu", fresh_bits())
        assert good.wait(WAIT) == UNCHECKED and wrong.wait(WAIT) == UNCHECKED, (good.status, wrong.status)
        good(*ARGS)
        wrong(*ARGS)
        for f in (wrong, broken):
            f.wait(WAIT)
            assert reproducer_folder(f.status).parent == root / "reproducers", f.status
    finally:
        os.umask(previous)
        compile_worker().close()  # later tests get a worker with the usual umask
    return root


def walk(root: Path) -> tuple[dict[Path, int], dict[Path, int]]:
    """The permission bits of every folder and every file under ``root`` (``root`` included)."""
    folders, files = {root: stat_of(root)[1]}, {}
    for path in root.rglob("*"):
        (folders if path.is_dir() else files)[path] = stat_of(path)[1]
    return folders, files


def test_under_umask_000_every_cache_folder_is_0700_and_every_file_nbdiff_writes_0600(cache_written_under_umask_000):
    root = cache_written_under_umask_000
    folders, files = walk(root)
    assert {root, root / KERNELS, root / KERNELS / "__pycache__", root / "reproducers"} <= set(folders)
    assert len([p for p in folders if p.parent == root / "reproducers"]) == 2
    assert {p: oct(m) for p, m in folders.items() if m != 0o700} == {}
    ours = {p: m for p, m in files.items() if p.suffix not in NUMBA_FILES and p.name != "worker.log"}
    names = {p.name for p in ours}
    assert {"kernel.py", "arguments.npz", "expected.npz", "reproduce.py", "README.txt"} <= names, names
    assert any(n.endswith(".compiled.json") for n in names) and any(n.endswith(".py") for n in names), names
    assert {p: oct(m) for p, m in ours.items() if m != 0o600} == {}


def test_under_umask_000_numbas_cache_files_are_0600(cache_written_under_umask_000):
    _, files = walk(cache_written_under_umask_000)
    numba_files = {p: m for p, m in files.items() if p.suffix in NUMBA_FILES}
    assert any(p.suffix == ".nbi" for p in numba_files) and any(p.suffix == ".nbc" for p in numba_files)
    assert {p: oct(m) for p, m in numba_files.items() if m != 0o600} == {}


def test_the_worker_does_not_start_in_a_folder_others_may_write(tmp_path):
    """The worker's folder (its log, its working folder) is checked like every cache folder before it starts."""
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o777)
    job = worker_tests.module(cache.kernels_directory(tmp_path / "private"), "security_worker_open_folder")
    handle = CompileWorker(folder=folder)
    try:
        result = worker_tests.submit(handle, job).wait()
    finally:
        handle.close()
    assert not result.ok and "cannot be used" in result.error and str(folder) in result.error, result.error
    assert not (folder / "worker.log").exists() and handle.pid() is None


# ---------------------------------------------------------------------------------------------------------------
# The compile worker
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def worker(tmp_path):
    handle = CompileWorker(tmp_path / "worker")
    yield handle
    handle.close()


def test_the_worker_imports_nothing_from_the_working_folder(tmp_path, worker, monkeypatch):
    """A ``numba.py`` or ``llvmlite.py`` planted where the user started Python must not run in the worker."""
    planted = tmp_path / "planted"
    planted.mkdir()
    sentinel = tmp_path / "sentinel"
    for name in ("numba", "llvmlite"):
        (planted / f"{name}.py").write_text(f"open({str(sentinel)!r}, 'a').write({name!r})\n")
    monkeypatch.chdir(planted)
    assert str(planted) not in worker_path() and "" not in worker_path()
    result = worker_tests.submit(worker, worker_tests.module(tmp_path, "worker_isolated")).wait()
    assert not sentinel.exists(), f"the worker ran the planted {sentinel.read_text()}"
    assert result.ok, result.error


def test_a_symlink_planted_as_the_worker_log_is_refused_not_followed(tmp_path, worker):
    target = tmp_path / "elsewhere.txt"
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "worker.log").symlink_to(target)
    result = worker_tests.submit(worker, worker_tests.module(tmp_path, "worker_log_link")).wait()
    assert not result.ok and "worker.log is a symbolic link" in result.error, result.error
    assert not target.exists(), "the log followed the planted link"
    assert worker.starts == 0

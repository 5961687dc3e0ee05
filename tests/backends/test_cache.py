"""The kernel cache's robustness (issue 13): a damaged Numba cache file (garbage, empty, truncated, another kernel's)
is quarantined and the kernel compiled again, in this process and in a fresh one; reproducer folders are capped in
size and only the newest few per kernel are kept; a cache folder that cannot be used gives every function one clear
reason and a failed event, with no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends import cache, numba_loading
from nbdiff.backends.cpu import plan_units
from nbdiff.backends.worker import CompileJob, CompileResult, CompileWorker
from nbdiff.function import UNCHECKED
from tests.backends.cpu_support import WAIT, call_both, chain, fresh_bits, states
from tests.backends.test_worker import MODULE, SIGNATURE, TIMEOUT

OTHER = MODULE.replace("scale * i", "scale * i + 100.0")  # another kernel of the same signature
DOUBLE = """\
import numba


@numba.njit(cache=True)
def kernel(n, x, out):
    for i in range(n):
        out[i] = 2.0 * x[i]
"""


@pytest.fixture
def worker():
    handle = CompileWorker()
    yield handle
    handle.close()


def compile_in(worker: CompileWorker, path: Path, name: str) -> CompileResult:
    """Compile the module ``name`` at ``path`` in ``worker``; its result."""
    done, results = threading.Event(), []
    job = CompileJob(str(path), name, "kernel", (SIGNATURE,))
    worker.submit(job, on_done=lambda result: (results.append(result), done.set()))
    assert done.wait(TIMEOUT), "the job was never answered"
    return results[0]


def numba_files(path: Path) -> tuple[Path, Path]:
    """The index and (first) data file of Numba's cache of the module at ``path``."""
    (index,) = (path.parent / "__pycache__").glob(f"{path.stem}.kernel-*.nbi")
    return index, index.with_name(index.name.removesuffix(".nbi") + ".1.nbc")


def damage(kind: str, path: Path, other: Path) -> Path:
    """Damage the Numba cache of the module at ``path`` as ``kind`` says (``other``: another kernel's module);
    the file that was damaged."""
    index, data = numba_files(path)
    other_index, other_data = numba_files(other)
    if kind == "garbage index":
        index.write_bytes(b"not a pickle at all" * 5)
    elif kind == "empty index":
        index.write_bytes(b"")
    elif kind == "truncated data":
        data.write_bytes(data.read_bytes()[:100])
    elif kind == "another kernel's data":
        shutil.copyfile(other_data, data)
    else:
        assert kind == "another kernel's index"
        shutil.copyfile(other_index, index)
    return data if "data" in kind else index


KINDS = ["garbage index", "empty index", "truncated data", "another kernel's data", "another kernel's index"]


# ---------------------------------------------------------------------------------------------------------------
# Damaged Numba cache files
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_cache_file_is_quarantined_named_and_compiled_again(tmp_path, worker, kind):
    directory = cache.kernels_directory(tmp_path)
    tag = kind.replace(" ", "_").replace("'", "")
    name, other_name = f"cache_damaged_{tag}", f"cache_damaged_{tag}_other"
    path = cache.write_module(directory, name, MODULE)
    other = cache.write_module(directory, other_name, OTHER)
    assert compile_in(worker, path, name).ok and compile_in(worker, other, other_name).ok
    numba_loading.load_compiled(other, other_name, (SIGNATURE,))  # the other kernel is loaded here too
    damaged = damage(kind, path, other)

    with pytest.raises(cache.CacheMiss) as caught:
        numba_loading.load_compiled(path, name, (SIGNATURE,))
    message = str(caught.value)
    assert f"Numba's cache file {damaged} " in message, message
    assert "it will be compiled again" in message, message
    assert not cache.marker_path(path).exists()  # no process takes it for compiled any more
    (moved,) = (directory / "quarantine").iterdir()
    assert damaged.name in os.listdir(moved), os.listdir(moved)

    # The same worker, which holds the module from its first compile, compiles and saves it again.
    assert compile_in(worker, path, name).ok
    kernel = numba_loading.load_compiled(path, name, (SIGNATURE,))
    out = np.empty(4)
    kernel(4, 0.5, out)
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0, 1.5])


FRESH_PROCESS = """
import json, sys
import numpy as np
import nbdiff as nd
from tests.backends.cpu_support import chain

answers = {}
with nd.option_context(cache_dir=sys.argv[1]):
    functions = {bits: None for bits in json.loads(sys.argv[2])}
    for bits in functions:
        x = nd.vector("x", shape=(5,))
        functions[bits] = (nd.function([x], chain(x, bits), backend="cpu"), nd.function([x], chain(x, bits)))
for bits, (f, reference) in functions.items():
    f.wait(300)
    values = np.linspace(-1, 1, 5)
    same = bool(np.allclose(f(values), reference(values), rtol=1e-12, atol=0))  # the first call checks it
    states = [e.state for e in f.events if e.kernel == "k0"]  # the kernel's (the whole-plan unit is not damaged)
    answers[bits] = {"status": f.status, "states": states, "backend": f.backend, "same": same}
print(json.dumps(answers))
"""


@pytest.mark.slow
def test_a_fresh_process_recompiles_each_kind_of_damaged_kernel_and_compiles_the_function(tmp_path):
    bits = {kind: fresh_bits() for kind in KINDS}
    x = nd.vector("x", shape=(5,))
    with nd.option_context(cache_dir=str(tmp_path)):
        functions = {kind: nd.function([x], chain(x, b), backend="cpu") for kind, b in bits.items()}
    paths = {}
    for kind, f in functions.items():
        assert f.wait(WAIT) == UNCHECKED, f.status
        (module,) = plan_units(f, False, None)[0].modules
        paths[kind] = cache.kernels_directory(tmp_path) / f"{module.name}.py"
    damaged = {kind: damage(kind, paths[kind], paths[KINDS[(i + 1) % len(KINDS)]]) for i, kind in enumerate(KINDS)}

    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp_path), json.dumps(list(bits.values()))],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).parents[2],  # the repository: its nbdiff and tests are imported
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for kind, b in bits.items():
        answer = answers[str(b)]
        assert answer["status"] == "compiled", (kind, answer)
        assert answer["states"] == ["queued", "compiling", "ready"], (kind, answer)  # compiled again, not loaded
        assert answer["same"] and answer["backend"] == "cpu", (kind, answer)
        if kind != "another kernel's index":  # Numba reads that one as stale: a miss, no error to report
            assert f"Numba's cache file {damaged[kind]} is damaged" in done.stderr, (kind, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------------------------
# Reproducer folders
# ---------------------------------------------------------------------------------------------------------------
def test_a_reproducer_of_large_inputs_saves_a_slice_and_a_seed_and_replays_partially(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "REPRODUCER_MAX_BYTES", 4096)
    x = np.linspace(-3.0, 5.0, 10_000)
    arguments = [x.size, x, np.empty_like(x)]
    folder = cache.write_reproducer(tmp_path, "cache_big", DOUBLE, arguments, [2 * x], "a test", outputs=[2])

    assert not (folder / "expected.npz").exists()
    assert (folder / "arguments.npz").stat().st_size < 4096 + 2048  # the limit, plus the manifest and zip headers
    saved = np.load(folder / "arguments.npz")
    manifest = json.loads(str(saved["manifest"]))
    assert manifest["arguments"][1]["partial"] == {"seed": 1, "saved": 256}  # 4096 bytes shared by two inputs
    np.testing.assert_array_equal(saved["arg1"], x[:256])
    assert manifest["expected"].startswith("not saved: the reproducer would hold 160008 bytes, over 4096")
    readme = (folder / "README.txt").read_text()
    assert (
        "PARTIAL replay" in readme and "1: array float64[10000] (partial: first 256 elements saved, seed 1)" in readme
    )

    done = subprocess.run(
        [sys.executable, "reproduce.py"], cwd=folder, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PARTIAL replay" in done.stdout and "no comparison" in done.stdout, done.stdout


def test_a_partial_input_is_regenerated_with_its_slice_first_and_the_rest_within_its_range(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "REPRODUCER_MAX_BYTES", 1024)
    x = np.linspace(-3.0, 5.0, 1000)
    folder = cache.write_reproducer(tmp_path, "cache_regen", DOUBLE, [x.size, x, x], [2 * x], "a test", outputs=[2])
    script: dict = {"__file__": str(folder / "reproduce.py")}
    exec(compile((folder / "reproduce.py").read_text(), "reproduce.py", "exec"), script)
    saved = np.load(folder / "arguments.npz")
    manifest = json.loads(str(saved["manifest"]))
    values = script["arguments"](saved, manifest)
    head = manifest["arguments"][1]["partial"]["saved"]
    assert values[1].shape == x.shape and values[1].dtype == x.dtype
    np.testing.assert_array_equal(values[1][:head], x[:head])
    assert values[1][head:].min() >= x[:head].min() and values[1][head:].max() <= x[:head].max()
    np.testing.assert_array_equal(values[1], script["arguments"](saved, manifest)[1])  # the seed: the same values


def test_only_the_newest_reproducers_of_a_kernel_are_kept_and_nothing_else_is_deleted(tmp_path):
    directory = cache.private_folder(tmp_path / "reproducers")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("precious\n")
    (directory / "cache_prune-20000101-000000").symlink_to(victim)  # the oldest name, but a link
    (directory / "cache_prune_other-20000101-000000").mkdir()  # another kernel's
    (directory / "cache_prune-notes").mkdir()  # not a name nbdiff gives
    written = [cache.write_reproducer(directory, "cache_prune", "x = 1\n", [], None, "a test") for _ in range(8)]
    kept = sorted(p.name for p in directory.iterdir() if p.name.startswith("cache_prune-2") and not p.is_symlink())
    assert kept == sorted(p.name for p in written[-cache.REPRODUCERS_PER_KERNEL :])
    assert (directory / "cache_prune-20000101-000000").is_symlink()
    assert (victim / "precious.txt").read_text() == "precious\n"
    assert (directory / "cache_prune_other-20000101-000000").is_dir() and (directory / "cache_prune-notes").is_dir()


# ---------------------------------------------------------------------------------------------------------------
# A cache folder that cannot be used
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_unusable_cache_gives_each_function_one_reason_and_a_failed_event_without_a_traceback(
    tmp_path, caplog, capfd, where
):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder\n")
    root = blocker if where == "a file" else blocker / "cache"
    caplog.set_level(logging.INFO, logger="nbdiff")
    bits = [fresh_bits() for _ in range(3)]
    x = nd.vector("x", shape=(5,))
    with nd.option_context(cache_dir=str(root)):
        functions = [nd.function([x], chain(x, b), backend="cpu") for b in bits]
    for f, b in zip(functions, bits):
        status = f.wait(WAIT)
        reason = status.removeprefix("fallback: ")
        if where == "a file":
            assert reason.startswith(f"nbdiff refuses the cache folder {root} (owner "), status
            assert "it is not a folder" in reason, status
        else:
            assert reason == (
                f"the kernel cache in {root} cannot be used: NotADirectoryError: [Errno 20] Not a directory: '{root}'"
            ), status
        assert states(f, "k0") == ["failed"] and f.events[0].reason == reason
        call_both(f, nd.function([x], chain(x, b)), (np.linspace(-1, 1, 5),), "with an unusable cache")
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("kind", ["garbage index", "empty index", "truncated data"])
def test_a_damaged_cache_file_without_a_marker_is_quarantined_by_the_worker_that_meets_it(tmp_path, kind):
    """With no marker the main process never tries to load the module, so a fresh worker's compile is the first to
    read the damaged file: it sets the files aside and compiles afresh instead of failing the kernel for good."""
    directory = cache.kernels_directory(tmp_path)
    tag = kind.replace(" ", "_")
    name, other_name = f"cache_unmarked_{tag}", f"cache_unmarked_{tag}_other"
    path = cache.write_module(directory, name, MODULE)
    other = cache.write_module(directory, other_name, OTHER)
    first = CompileWorker(folder=tmp_path)
    try:
        assert compile_in(first, path, name).ok and compile_in(first, other, other_name).ok
    finally:
        first.close()
    damaged = damage(kind, path, other)
    os.unlink(cache.marker_path(path))

    fresh = CompileWorker(folder=tmp_path)  # a new process: nothing of the module is in its memory
    try:
        result = compile_in(fresh, path, name)
    finally:
        fresh.close()
    assert result.ok, result.error
    assert cache.is_compiled(path, (SIGNATURE,))
    (moved,) = (directory / "quarantine").iterdir()
    assert damaged.name in os.listdir(moved), os.listdir(moved)
    assert name in (tmp_path / "worker.log").read_text(), "the worker's log names the module it quarantined"
    kernel = numba_loading.load_compiled(path, name, (SIGNATURE,))
    out = np.empty(4)
    kernel(4, 0.5, out)
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0, 1.5])

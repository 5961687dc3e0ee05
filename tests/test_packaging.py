"""The package as a user meets it: a light import, the public names of the design contract, a fast import.

Each import check runs in a fresh interpreter (a subprocess), because this test process has long since imported
everything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd

# The public API of DESIGN.md section 2: tests and notebooks rely on these names, so none may go missing.
CONSTRUCTORS = ["scalar", "vector", "matrix", "tensor", "constant"]
FUNCTIONS = (
    "abs exp log log1p expm1 sqrt square sin cos tan tanh arctan sinh cosh sigmoid softplus relu erf maximum minimum "
    "where clip sum mean prod max min logsumexp softmax log_softmax dot matmul outer diag reshape transpose "
    "expand_dims squeeze broadcast_to concatenate stack arange zeros_like ones_like take_along_axis"
).split()
DERIVATIVES = ["grad", "Lop", "Rop", "jacobian", "hessian"]
EXECUTION = ["function", "Function"]
INSPECTION = ["dprint", "check_grads"]
JUPYTER_LAYER = ["draw", "load_ipython_extension"]  # nd.draw and `%load_ext nbdiff` (DESIGN.md section 7)
WIDGETS = ["draw", "status_panel", "rewrite_stepper", "plot"]  # loaded on first use (nbdiff/__init__.py __getattr__)

FUNCTION_ATTRIBUTES = ["status", "backend", "wait", "graph", "kernels", "history"]
VARIABLE_ATTRIBUTES = ["T", "shape", "ndim", "dtype", "astype", "sum", "mean", "max", "min", "prod", "reshape"]

HEAVY_MODULES = ["numba", "IPython", "ipywidgets", "matplotlib", "dask", "distributed"]


def run_python(code: str, *flags: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment and return the finished process."""
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=120, check=True)


def test_import_does_not_load_numba_ipython_or_widgets():
    """``import nbdiff`` stays light: the compiler and the notebook layer load only when first used."""
    code = f"import json, sys; import nbdiff; print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    loaded = json.loads(run_python(code).stdout)
    assert loaded == [], f"import nbdiff imported {loaded}"


def test_widgets_load_on_first_use():
    """``nd.plot`` and the other widgets are there, and touching them is what loads ipywidgets and matplotlib."""
    code = (
        "import json, sys; import nbdiff as nd; "
        f"names = [getattr(nd, n).__module__ for n in {WIDGETS!r}]; "
        "print(json.dumps([names, 'ipywidgets' in sys.modules, 'matplotlib' in sys.modules]))"
    )
    modules, widgets_loaded, matplotlib_loaded = json.loads(run_python(code).stdout)
    assert all(module.startswith("nbdiff.widgets.") for module in modules), modules
    assert widgets_loaded and matplotlib_loaded
    with pytest.raises(AttributeError, match="has no attribute 'no_such_widget'"):
        nd.no_such_widget  # noqa: B018


API_GROUPS = {
    "constructors": CONSTRUCTORS,
    "functions": FUNCTIONS,
    "derivatives": DERIVATIVES,
    "execution": EXECUTION,
    "inspection": INSPECTION,
}


@pytest.mark.parametrize("group", list(API_GROUPS))
def test_public_api_names_exist(group):
    missing = [name for name in API_GROUPS[group] if not hasattr(nd, name)]
    assert not missing, f"nbdiff lacks these names of DESIGN.md section 2: {missing}"


def test_public_functions_are_listed_in_all():
    """``from nbdiff import *`` gives every public function (each family module exports them in ``__all__``)."""
    present = [name for name in FUNCTIONS + DERIVATIVES + EXECUTION if hasattr(nd, name)]
    unlisted = [name for name in present if name not in nd.__all__]
    assert not unlisted, f"public names missing from nbdiff.__all__: {unlisted}"


def test_jupyter_layer_names_exist():
    """``nd.draw`` (the graph widget) and ``load_ipython_extension`` (``%load_ext nbdiff``) exist; both load lazily."""
    missing = [name for name in JUPYTER_LAYER if not hasattr(nd, name)]
    assert not missing, f"nbdiff lacks {missing}"


def test_function_and_variable_attributes():
    """The attributes a notebook reads on a function and on a variable (DESIGN.md section 2)."""
    x = nd.vector("x")
    f = nd.function([x], nd.sum(x))
    assert [a for a in FUNCTION_ATTRIBUTES if not hasattr(f, a)] == []
    assert [a for a in VARIABLE_ATTRIBUTES if not hasattr(nd.Variable, a)] == []
    assert f.wait() == f.status


@dataclass
class ImportTimes:
    """Cumulative import times in seconds, read from ``python -X importtime``."""

    nbdiff: float
    numpy: float

    @property
    def own(self) -> float:
        """nbdiff's own share: its cumulative time less NumPy's, which it imports."""
        return self.nbdiff - self.numpy


_IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def parse_importtime(stderr: str) -> ImportTimes:
    """Cumulative times of the top-level ``nbdiff`` and ``numpy`` imports; NumPy counts only if nested in nbdiff."""
    cumulative: dict[str, tuple[float, int]] = {}
    for line in stderr.splitlines():
        match = _IMPORTTIME_LINE.match(line)
        if match and match.group(4) in ("nbdiff", "numpy") and match.group(4) not in cumulative:
            cumulative[match.group(4)] = (int(match.group(2)) / 1e6, len(match.group(3)))
    assert "nbdiff" in cumulative, f"no nbdiff line in the importtime output:\n{stderr[-2000:]}"
    nbdiff_time, nbdiff_depth = cumulative["nbdiff"]
    numpy_time, numpy_depth = cumulative.get("numpy", (0.0, 0))
    nested = "numpy" in cumulative and numpy_depth > nbdiff_depth
    return ImportTimes(nbdiff_time, numpy_time if nested else 0.0)


def measure_import_time(runs: int = 3) -> ImportTimes:
    """The fastest of ``runs`` fresh-interpreter imports (after a warm-up that writes the bytecode caches)."""
    run_python("import nbdiff")
    samples = [parse_importtime(run_python("import nbdiff", "-X", "importtime").stderr) for _ in range(runs)]
    return min(samples, key=lambda s: s.own)


def test_parse_importtime():
    sample = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       951 |      49600 |     numpy\n"
        "import time:      1413 |      61848 |   nbdiff.function\n"
        "import time:       357 |      75415 | nbdiff\n"
    )
    times = parse_importtime(sample)
    assert times.nbdiff == pytest.approx(0.075415)
    assert times.numpy == pytest.approx(0.0496)
    assert times.own == pytest.approx(0.025815)


def test_import_time():
    """nbdiff's own import cost stays small; the target is 0.15 s, the bound is generous so CI noise never fails."""
    times = measure_import_time()
    print(f"import nbdiff: {times.nbdiff:.3f} s cumulative, numpy {times.numpy:.3f} s, nbdiff's own {times.own:.3f} s")
    assert times.own < 0.5, f"nbdiff's own import takes {times.own:.3f} s (numpy excluded); the target is 0.15 s"


REPO = Path(__file__).resolve().parents[1]


def readme_section(title: str) -> str:
    """The text of one ``## title`` section of the README."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_readme_example_runs_and_is_right():
    """The example at the top of the README works today and computes what it says."""
    intro = (REPO / "README.md").read_text().split("\n## ")[0]
    (example,) = code_blocks(intro, "python")
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    x0, v0 = np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.0, 0.0])
    t = np.tanh(x0)
    np.testing.assert_allclose(namespace["value"], np.sum(t**2), rtol=1e-12)
    np.testing.assert_allclose(namespace["gradient"], 2 * t * (1 - t**2), rtol=1e-12)
    np.testing.assert_allclose(namespace["hessian_v"], 2 * (1 - t**2) * (1 - 3 * t**2) * v0, rtol=1e-12)


def test_readme_example_compiles_in_a_fresh_process(tmp_path):
    """With compilation on (as for a user), the README's function reaches "compiled" and then answers from Numba."""
    intro = (REPO / "README.md").read_text().split("\n## ")[0]
    (example,) = code_blocks(intro, "python")
    call_again = "f(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.0, 0.0]))"
    script = f"{example}\n{call_again}\nprint('STATUS', f.status, f.backend)\n"
    environment = {**os.environ, "NBDIFF_COMPILE": "1", "NBDIFF_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "STATUS compiled cpu" in done.stdout, done.stdout


def test_readme_setup_has_two_commands_and_ci_runs_the_test_command():
    """Set-up is two commands; .ci/run runs the README's pytest invocation exactly."""
    commands = [line for block in code_blocks(readme_section("Set-up"), "bash") for line in block.splitlines() if line]
    assert len(commands) == 2, f"Set-up should hold exactly two commands, found {commands}"
    install, test_command = commands[1].split(" && ")
    assert install.startswith("pip install -e"), commands[1]
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines, f".ci/run does not run the README's test command {test_command!r}"

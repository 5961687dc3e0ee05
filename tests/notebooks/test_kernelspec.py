"""Every notebook in the repository stores the kernelspec ipykernel installs, so opening it changes nothing.

JupyterLab rewrites a notebook's stored kernel display name to the running kernel's ("Python 3 (ipykernel)"); a
notebook storing another name shows as modified in ``git status`` as soon as it is opened.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ipykernel.kernelspec import KERNEL_NAME, get_kernel_dict

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", ".ipynb_checkpoints", ".venv", "node_modules", "build", "dist"}


def repository_notebooks() -> list[Path]:
    """Every ``.ipynb`` under the repository root, outside checkpoints, environments and build folders."""
    return sorted(p for p in ROOT.rglob("*.ipynb") if not SKIPPED_DIRS & set(p.relative_to(ROOT).parts))


def test_the_repository_has_notebooks():
    names = [p.relative_to(ROOT).as_posix() for p in repository_notebooks()]
    assert any(name.startswith("notebooks/") for name in names) and "tests/browser/demo.ipynb" in names


@pytest.mark.parametrize("path", repository_notebooks(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_stores_the_kernelspec_ipykernel_installs(path):
    installed = get_kernel_dict()
    expected = {"name": KERNEL_NAME, "display_name": installed["display_name"], "language": installed["language"]}
    assert expected == {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    stored = json.loads(path.read_text(encoding="utf-8"))["metadata"].get("kernelspec")
    assert stored == expected, f"{path.relative_to(ROOT)}: set its kernelspec to {expected}"

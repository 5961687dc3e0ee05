"""What the README's test section promises: why the browser test may skip, and pytest saying so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_says_the_browser_test_needs_chromium_and_how_to_install_it():
    assert "/usr/bin/chromium" in README
    assert "apt-get install chromium" in README and ".ci/run" in README
    assert "NBDIFF_REQUIRE_BROWSER=1" in README


def test_readme_drops_the_stale_claim_that_every_kernel_is_interpreted():
    assert "every kernel is interpreted" not in " ".join(README.split())


def test_pytest_summary_shows_why_a_test_skipped(tmp_path):
    """With the project's configuration (pyproject's addopts), a skip's reason is in the summary."""
    test = tmp_path / "test_skips.py"
    test.write_text("import pytest\n\ndef test_needs_a_browser():\n    pytest.skip('no Chromium at /usr/bin/x')\n")
    command = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider", str(test)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SKIPPED [1]" in result.stdout and "no Chromium at /usr/bin/x" in result.stdout

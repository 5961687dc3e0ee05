"""Fixtures for the real-browser tests: a JupyterLab server on loopback and a Playwright page in Debian's Chromium.

The tests skip with a reason when Chromium or Playwright is missing; with ``NBDIFF_REQUIRE_BROWSER=1`` (set by
``.ci/run``) a missing piece fails the test instead, so CI can never pass by skipping it silently.
Screenshots go to ``$NBDIFF_SCREENSHOTS`` or, by default, ``tests/browser/screenshots/`` (ignored by git).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

# The demo notebook is run in JupyterLab by the browser test, not by nbval: keep nbval from collecting it.
collect_ignore = ["demo.ipynb"]

HERE = Path(__file__).parent
REPO_ROOT = HERE.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# The closed network of the test machines refuses Chromium's background connections; these flags keep it quiet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 1600}
SERVER_START_TIMEOUT_S = 60.0
PAGE_TIMEOUT_MS = 30_000

# JupyterLab user settings for the test server: render every cell (no windowed notebook, so every output is in the
# DOM), and no news or update notifications over the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def missing_browser_piece(reason: str) -> None:
    """Skip the test for a missing browser dependency, or fail it when the environment demands the browser test."""
    if os.environ.get("NBDIFF_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (NBDIFF_REQUIRE_BROWSER=1 asks for the browser test to run)")
    pytest.skip(reason)


@dataclass
class LabServer:
    """A running JupyterLab server: where it listens, its token and the folder it serves."""

    port: int
    token: str
    root_dir: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def base_url(self) -> str:
        """The server's address on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def add_notebook(self, name: str, notebook: dict) -> str:
        """Write a notebook (its JSON as a dict) into the served folder and return its name there."""
        (self.root_dir / name).write_text(json.dumps(notebook))
        return name

    def notebook_url(self, name: str) -> str:
        """The JupyterLab address that opens the served notebook ``name``, token included."""
        return f"{self.base_url}/lab/tree/{name}?token={self.token}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-chars:]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Record each phase's report on the test item, so fixtures can tell at teardown whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """The folder screenshots are written to; it ignores itself in git."""
    folder = Path(os.environ.get("NBDIFF_SCREENSHOTS") or HERE / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if folder.resolve().is_relative_to(REPO_ROOT.resolve()) and not ignore.exists():
        ignore.write_text("*\n")
    return folder


@pytest.fixture(scope="session")
def browser_type() -> Iterator[object]:
    """Playwright's Chromium launcher, pointed at Debian's Chromium; skips when either is missing."""
    if not CHROMIUM.exists():
        missing_browser_piece(f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing_browser_piece("the Python package playwright is missing (pip install playwright)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright.chromium


@pytest.fixture(scope="session")
def lab_server(browser_type: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server on 127.0.0.1 with a random token, serving a fresh folder; always stopped afterwards."""
    if importlib.util.find_spec("jupyterlab") is None:
        missing_browser_piece("JupyterLab is missing (pip install jupyterlab)")
    base = tmp_path_factory.mktemp("lab")
    server = start_lab_server(base)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture()
def lab_page(browser_type: object, tmp_path: Path, screenshot_dir: Path, request: pytest.FixtureRequest):
    """A fresh Chromium page (new user-data-dir); saves a screenshot when the test fails."""
    context = browser_type.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=VIEWPORT,
    )
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.pages[0] if context.pages else context.new_page()
    try:
        yield page
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            page.screenshot(path=str(screenshot_dir / f"FAILED-{request.node.name}.png"))
    finally:
        context.close()


def start_lab_server(base: Path) -> LabServer:
    """Start ``jupyter lab`` on a free loopback port, isolated from the user's Jupyter configuration."""
    root_dir, settings_dir = base / "root", base / "user-settings"
    root_dir.mkdir()
    write_lab_settings(settings_dir)
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--LabApp.user_settings_dir={settings_dir}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:  # CI runs as root on a fresh machine
        command.append("--allow-root")
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=root_dir,
            env=server_environment(base),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return LabServer(port, token, root_dir, log_path, process)


def server_environment(base: Path) -> dict[str, str]:
    """The server's environment: this interpreter's kernel, this checkout's nbdiff, private Jupyter folders."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(base / name.lower())
    # The notebook compiles as a user's would (the unit tests' NBDIFF_COMPILE=0 must not reach it), into a cache
    # of its own, so the status panel is seen going from interpreting through compiling to compiled.
    env["NBDIFF_COMPILE"] = "1"
    env["NBDIFF_CACHE_DIR"] = str(base / "nbdiff-cache")
    return env


def write_lab_settings(settings_dir: Path) -> None:
    """Write the JupyterLab user settings the test server runs with."""
    for relative, values in LAB_SETTINGS.items():
        path = settings_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(server: LabServer) -> None:
    """Poll ``/api/status`` until the server answers; fail with its log if it exits or takes too long."""
    url = f"{server.base_url}/api/status?token={server.token}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"jupyter lab exited with code {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"jupyter lab did not answer within {SERVER_START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def stop_server(server: LabServer) -> None:
    """Stop the server and its kernels: ask it to shut down, then terminate, then kill its process group."""
    process = server.process
    if process.poll() is not None:
        return
    request = urllib.request.Request(f"{server.base_url}/api/shutdown?token={server.token}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=5).close()
        process.wait(timeout=15)
        return
    except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
        pass
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)

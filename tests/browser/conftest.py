"""The browser suite's machinery: a fresh JupyterLab per notebook, headless Chromium, and a process-leak check.

Collected only when asked for (``LABKIT_BROWSER=1`` or ``pytest tests/browser``): it takes minutes, not seconds.
Without Chromium or the playwright package it fails and says how to install them; it never skips.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHROMIUM = os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium")
INSTALL = "install them: `apt-get install chromium` and `.venv/bin/pip install playwright` (not `playwright install`)"
# JupyterLab settings for the test: no autosave (Run All must not rewrite the repo's notebooks), every cell in the
# DOM (windowing would detach off-screen widgets), no news toast over the widgets.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def _asked_for(config) -> bool:
    if os.environ.get("LABKIT_BROWSER") == "1":
        return True
    return any(
        HERE == Path(a.split("::")[0]).resolve() or HERE in Path(a.split("::")[0]).resolve().parents
        for a in config.args
    )


def pytest_ignore_collect(collection_path, config):
    """Leave the slow browser suite out of a plain ``pytest tests``."""
    if HERE in (collection_path, *collection_path.parents) and not _asked_for(config):
        return True
    return None


@pytest.fixture(scope="session")
def screenshots():
    """Where every before/after screenshot goes: $LABKIT_SCREENSHOTS (kept), or a temporary folder removed at the
    end of the session (nothing left behind)."""
    keep = os.environ.get("LABKIT_SCREENSHOTS")
    folder = Path(keep or tempfile.mkdtemp(prefix="labkit-screenshots-"))
    folder.mkdir(parents=True, exist_ok=True)
    _SUMMARY["screenshots"] = folder if keep else None
    yield folder
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)


_SUMMARY: dict = {"times": {}}


def pytest_terminal_summary(terminalreporter):
    if "screenshots" in _SUMMARY:
        for name, seconds in _SUMMARY["times"].items():
            terminalreporter.write_line(f"{name}: {seconds:.0f} s in the browser")
        where = _SUMMARY["screenshots"]
        terminalreporter.write_line(
            f"labkit browser screenshots: {where}"
            if where
            else "labkit browser screenshots: set LABKIT_SCREENSHOTS=<folder> to keep them"
        )


@pytest.fixture(scope="session")
def browser_times() -> dict:
    """{notebook: seconds} filled by the tests, printed at the end."""
    return _SUMMARY["times"]


@pytest.fixture(scope="session")
def playwright_api():
    """The sync Playwright API, or a failure naming the install commands."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the browser tests need the playwright package: {INSTALL}")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (or set LABKIT_CHROMIUM): {INSTALL}")
    with sync_playwright() as api:
        yield api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every live process below ``pid`` (from /proc: psutil is not a dependency)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":  # a zombie has exited already
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = cmdline(child)
        todo.extend(children.get(child, []))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def chromium_processes() -> dict[int, str]:
    """{pid: command line} of every running Chromium process, this test's or not."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and "chrom" in (line := cmdline(int(entry.name))).split(" ")[0]:
            found[int(entry.name)] = line
    return found


def alive(pids) -> dict[int, str]:
    """The pids of ``pids`` still running (not zombies), with their command lines."""
    out = {}
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out[pid] = cmdline(pid)
    return out


class Lab:
    """A JupyterLab on 127.0.0.1 with a token, rooted at the repo, with its own runtime and settings folders."""

    def __init__(self, scratch: Path):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.runtime = scratch / "runtime"
        settings = scratch / "settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {
            **os.environ,
            "LABKIT_OFFLINE": "1",
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "workspaces"),
            "PYTHONUNBUFFERED": "1",
        }
        args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1"]
        args += [f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.port_retries=0"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        self.log = (scratch / "lab.log").open("w")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {self.log.name}") from None
                time.sleep(0.3)

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/notebooks/{notebook}?token={self.token}&reset"

    def kernel_files(self) -> list[Path]:
        """The connection files of the kernels this server started (to talk to the notebook's kernel directly)."""
        return sorted(self.runtime.glob("kernel-*.json"))

    def api(self, method: str, path: str) -> None:
        request = urllib.request.Request(f"{self.base}{path}?token={self.token}", method=method)
        urllib.request.urlopen(request, timeout=30).close()

    def stop(self) -> None:
        """Shut every kernel down through the API, then the server; kill what is left after 20 s."""
        try:
            with urllib.request.urlopen(f"{self.base}/api/kernels?token={self.token}", timeout=10) as r:
                for kernel in json.load(r):
                    self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (urllib.error.URLError, ConnectionError):
            pass  # the server is down already: the leak check below still looks for its kernels
        self.proc.send_signal(signal.SIGINT)  # twice: jupyter asks for confirmation after the first
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture
def lab(tmp_path, playwright_api):
    """A fresh JupyterLab and a headless Chromium page; afterwards, no process the test started may be left."""
    scratch = Path(tempfile.mkdtemp(prefix="lab-", dir=tmp_path))
    chromium_before = set(chromium_processes())
    server = Lab(scratch)
    browser = playwright_api.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    started: dict[int, str] = {}
    try:
        yield server, page
    finally:
        started = descendants(os.getpid())  # the server, its kernels, the Playwright driver and Chromium
        # Chromium's crash handlers detach from it at once (their parent is init): new ones are ours too
        started.update({pid: line for pid, line in chromium_processes().items() if pid not in chromium_before})
        browser.close()
        server.stop()
    deadline = time.monotonic() + 20
    kernels = [pid for pid, line in started.items() if str(server.runtime) in line]
    while (left := alive(started)) and time.monotonic() < deadline:
        time.sleep(0.3)
    ours = {pid: line for pid, line in left.items() if any(k in line for k in ("jupyter", "ipykernel", "chrom"))}
    assert kernels, f"no kernel of this server was seen running: {started}"
    assert ours == {}, f"processes left behind by the browser test: {ours}"

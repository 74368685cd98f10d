"""`make lab` starts JupyterLab on the welcome notebook with a token, answers on localhost, and stops cleanly."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_serves_the_notebooks_with_a_token():
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        ["make", "-s", "-C", str(ROOT), "lab", f"PORT={port}", "LAB_ARGS=--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, so the whole server is stopped below
    )
    try:
        url, seen, deadline = None, [], time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            m = re.search(rf"(http://127\.0\.0\.1:{port}/lab\S*\?token=(\w+))", line)
            if m:
                url, token = m.group(1), m.group(2)
        assert url, "JupyterLab printed no URL with a token:\n" + "".join(seen[-30:])
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{base}/api/status?token={token}")
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=20) as r:
            names = {item["name"] for item in json.load(r)["content"]}
        assert "00_welcome.ipynb" in names  # the server's root is notebooks/, the chapters
        with urllib.request.urlopen(f"{base}/lab/tree/00_welcome.ipynb?token={token}", timeout=20) as r:
            assert r.status == 200 and "JupyterLab" in r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:  # token authentication is left on
            urllib.request.urlopen(f"{base}/api/contents", timeout=20)
        assert refused.value.code == 403
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 20  # the server finishes its shutdown after make itself has exited
    while (alive := group_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == [], f"processes left behind by make lab: {alive}"


def group_members(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()

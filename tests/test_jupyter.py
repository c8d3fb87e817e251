"""`make notebook`: JupyterLab serves notebooks/ (the server starts, lists them, stops on SIGTERM).

The command is the one `make notebook` runs, read with ``make --dry-run`` (the install stamp is
marked old with ``-o`` so that make prints nothing else), plus a free port, a token and no browser.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
START_TIMEOUT = 25  # seconds


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_command(jupyter_args: str) -> list:
    """What `make notebook JUPYTER_ARGS=...` runs, for the environment running the tests."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv, bin_dir = Path(sys.prefix), Path(sys.executable).parent
    proc = subprocess.run(
        [make, "--dry-run", "--silent", "--no-print-directory", "-C", str(REPO),
         "-o", f"{venv}/.installed-notebooks", "-o", f"{bin_dir}/python",
         f"VENV={venv}", f"BIN={bin_dir}", f"JUPYTER_ARGS={jupyter_args}", "notebook"],
        capture_output=True, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"`make notebook` would run more than JupyterLab:\n{proc.stdout}"
    argv = shlex.split(lines[0])
    assert argv[:2] == [str(bin_dir / "jupyter"), "lab"], argv
    return argv


def _get_json(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_make_notebook_serves_the_notebooks(tmp_path):
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (pip install -e '.[notebooks]')")
    assert NOTEBOOKS, "no notebooks in notebooks/"
    port, token = _free_port(), secrets.token_hex(16)
    argv = _notebook_command(f"--no-browser --port {port} --ServerApp.port_retries=0 "
                             f"--ServerApp.ip=127.0.0.1 --ServerApp.token={token}")
    assert "--ServerApp.root_dir=notebooks" in argv
    # the user's Jupyter configuration and runtime files stay out of the test
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTER_PLATFORM_DIRS="1")
    log = tmp_path / "jupyter.log"
    with open(log, "w") as out:
        server = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        listed, deadline = None, time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and server.poll() is None:
            try:
                listed = _get_json(f"http://127.0.0.1:{port}/api/contents", token)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        assert server.poll() is None, f"JupyterLab exited ({server.returncode}):\n{log.read_text()}"
        assert listed is not None, f"JupyterLab did not answer in {START_TIMEOUT} s:\n{log.read_text()}"
        names = sorted(item["name"] for item in listed["content"] if item["type"] == "notebook")
        assert names == NOTEBOOKS, listed
        with pytest.raises(urllib.error.HTTPError) as denied:  # the token is required
            _get_json(f"http://127.0.0.1:{port}/api/contents", "wrong-token")
        assert denied.value.code == 403
        lab = urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5)
        assert lab.status == 200 and b"JupyterLab" in lab.read()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail(f"JupyterLab did not stop within 15 s of SIGTERM:\n{log.read_text()}")
    assert code == 0, f"JupyterLab exited with {code} after SIGTERM:\n{log.read_text()}"

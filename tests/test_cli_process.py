"""The installed command as a user runs it, in its own process: usage errors, ``--version``,
``python -m seethrough``, Ctrl-C during ``explain`` and stopping ``seethrough dashboard``.

These run the real entry point, so a release of a dependency that changes how errors reach it
(typer, click) fails here rather than in a user's terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seethrough.cli.main import installed_version

SCRIPT = Path(sys.executable).with_name("seethrough")
"""The console script installed beside this Python (absent when the package is not installed)."""

MODULE = [sys.executable, "-m", "seethrough"]
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else MODULE
"""The console script as a user runs it (``python -m seethrough`` where it is not installed)."""


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", **extra)


def _ctrl_c_reaches_it() -> None:
    """In the child before it starts: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt. A test run started in the background (``make test &``: bash ignores
    SIGINT in such jobs) would pass the ignoring on, and a Ctrl-C could not reach the command,
    as with ``nohup``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands at once (each spends most of its time importing torch)."""
    procs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )
        for command in commands
    ]
    done = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return done


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    cases = {
        ("predict",): ["images", "Try 'seethrough predict --help'"],
        ("models", "--bogus"): ["--bogus", "Try 'seethrough models --help'"],
        ("nosuchcmd",): ["nosuchcmd", "Try 'seethrough --help'"],
        ("explain", "sample:chelsea", "--method"): ["--method", "seethrough explain --help"],
        ("predict", "-k", "x", "sample:chelsea"): ["-k", "seethrough predict --help"],
        ("explain", "sample:chelsea", "--out", str(a_file)): [str(a_file), "not a folder"],
    }
    for proc, (args, words) in zip(
        _run_all([[*COMMAND, *args] for args in cases]), cases.items(), strict=True
    ):
        assert proc.returncode == 2, (args, proc.stderr)
        line = _one_error_line(proc)
        for word in words:
            assert word in line, (args, line)
        assert proc.stdout == "", (args, proc.stdout)


def test_version_and_python_m_seethrough():
    script, module, error = _run_all(
        [[*COMMAND, "--version"], [*MODULE, "--version"], [*MODULE, "layers", "--nope"]]
    )
    for proc in (script, module):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"seethrough {installed_version()}"
        assert proc.stderr == ""
    assert error.returncode == 2
    assert "--nope" in _one_error_line(error) and "seethrough layers --help" in error.stderr


# ---------------------------------------------------------------------------------------------
# Ctrl-C during explain


def _wait_for(predicate, proc: subprocess.Popen, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"exited with {proc.returncode} before {what}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} in {seconds} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_during_explain_says_what_is_finished_and_leaves_whole_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 48), (30 * i, 90, 200 - 20 * i)).save(folder / f"im{i}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "seethrough", "explain", str(folder), "--out", str(out)]
    cmd += ["--model", "resnet18", "--weights", "none", "--size", "64"]
    cmd += ["--method", "gradcam,rise", "-p", "n_samples=1500"]  # seconds an image: time to stop
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        preexec_fn=_ctrl_c_reaches_it,
    )  # fmt: skip
    manifest = out / "run.json"

    def one_image_complete() -> bool:
        try:
            images = json.loads(manifest.read_text())["images"]
        except (OSError, ValueError):
            return False
        return any(image["complete"] for image in images)

    _wait_for(one_image_complete, proc, 240, "complete image")
    proc.send_signal(signal.SIGINT)
    out_text, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and " of 8 images complete" in last, err
    assert "not finished: " in last and str(manifest) in last, last
    run = json.loads(manifest.read_text())
    assert run["status"] == "interrupted" and run["finished"]
    complete = [image for image in run["images"] if image["complete"]]
    assert 1 <= len(complete) < 8
    assert last.startswith(f"interrupted: {len(complete)} of 8 images complete")
    for image in complete:
        assert image["methods"] == ["gradcam", "rise"] and image["error"] is None
        for name in ("gradcam.npz", "rise.npz", "gradcam.json", "figure.png"):
            assert (out / image["folder"] / name).is_file()
    # whatever the interrupt hit: only whole files, and no temporary file left behind
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")], files
    for path in files:
        if path.suffix == ".npz":
            with np.load(path) as data:
                assert data["map"].ndim == 2
        elif path.suffix == ".png":
            with Image.open(path) as im:
                im.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# seethrough dashboard in its own process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@pytest.mark.slow
def test_sigterm_stops_the_dashboard_server_and_frees_its_port(tmp_path):
    pytest.importorskip("streamlit")
    port = _free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "seethrough", "dashboard", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,  # so that nothing is left behind if this test fails
        )
    try:

        def healthy() -> bool:
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/_stcore/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status == 200
            return False

        _wait_for(healthy, proc, 120, "HTTP 200 on /_stcore/health")
        servers = _children(proc.pid)  # Linux; elsewhere the port says it all
        proc.send_signal(signal.SIGTERM)

        def stopped() -> bool:
            if any(_alive(pid) for pid in servers):
                return False
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return False
            return True

        deadline = time.monotonic() + 5
        while not stopped():
            assert time.monotonic() < deadline, "server still running or port still bound after 5 s"
            time.sleep(0.05)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

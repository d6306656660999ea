"""``seethrough dashboard``: the port checked first, TorchScript uploads only when asked, and the
server stopped with the command (signals passed on), without starting streamlit."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import pytest

from seethrough import dashboard
from seethrough.errors import InvalidParameterError
from tests.test_cli import cli, one_error_line


@pytest.fixture
def listening():
    """A port in use on the loopback address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_busy_port_is_one_line_before_anything_is_printed(capsys, monkeypatch, listening):
    monkeypatch.setattr(dashboard, "launch", lambda *a, **k: pytest.fail("started"))
    code, out, err = cli(capsys, "dashboard", "--port", str(listening))
    assert code == 2 and out == ""
    assert one_error_line(err) == (
        f"error: port {listening} on 127.0.0.1 is already in use: stop the program using it "
        "or pick another --port"
    )


def test_check_port(listening):
    dashboard.check_port("127.0.0.1", _free_port())
    dashboard.check_port("localhost", _free_port())
    with pytest.raises(InvalidParameterError, match="already in use"):
        dashboard.check_port("localhost", listening)
    with pytest.raises(InvalidParameterError, match="not a known address"):
        dashboard.check_port("no-such-host.invalid", _free_port())
    with pytest.raises(InvalidParameterError, match="between 1 and 65535"):
        dashboard.check_port("127.0.0.1", 0)


class FakeServer:
    """Stands in for the streamlit process: records its command and environment."""

    started: list[FakeServer] = []

    def __init__(self, cmd, env=None, **kwargs) -> None:
        self.cmd, self.env = cmd, env
        FakeServer.started.append(self)

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def fake_server(monkeypatch):
    FakeServer.started = []
    monkeypatch.setattr(dashboard.subprocess, "Popen", FakeServer)
    return FakeServer.started


def test_torchscript_uploads_only_with_the_flag(capsys, monkeypatch, fake_server):
    pytest.importorskip("streamlit")
    monkeypatch.setenv(dashboard.TORCHSCRIPT_ENV, "1")  # inherited: not enough
    code, out, err = cli(capsys, "dashboard", "--port", str(_free_port()))
    assert code == 0, err
    assert dashboard.TORCHSCRIPT_ENV not in fake_server[-1].env
    assert "TorchScript" not in err

    code, out, err = cli(capsys, "dashboard", "--port", str(_free_port()), "--allow-torchscript")
    assert code == 0, err
    assert fake_server[-1].env[dashboard.TORCHSCRIPT_ENV] == "1"
    assert "warning: TorchScript uploads accepted" in err and len(err.strip().splitlines()) == 1
    assert fake_server[-1].cmd[:4] == [sys.executable, "-m", "streamlit", "run"]


SERVER = """
import signal, sys, time
for name in ("SIGTERM", "SIGINT", "SIGHUP"):
    signal.signal(getattr(signal, name), {on_signal})
open(sys.argv[1], "w").close()
time.sleep(60)
sys.exit(5)
"""


def _serve_and_signal(tmp_path, on_signal: str, sig: int) -> tuple[int, float, int]:
    """Serve a stand-in server; send ``sig`` to this process once it runs.

    Returns the exit code, the seconds from the signal to the server's end, the server's pid.
    """
    ready = tmp_path / "ready"
    pids, sent = [], []
    real_popen = dashboard.subprocess.Popen

    def popen(cmd, **kwargs):
        proc = real_popen(cmd, **kwargs)
        pids.append(proc.pid)
        return proc

    def signal_when_ready() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sent.append(time.monotonic())
        os.kill(os.getpid(), sig)  # serve() has its handlers in place: the server runs

    server = [sys.executable, "-c", SERVER.format(on_signal=on_signal), str(ready)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dashboard.subprocess, "Popen", popen)
        threading.Thread(target=signal_when_ready, daemon=True).start()
        code = dashboard.serve(server)
    return code, time.monotonic() - sent[0], pids[0]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", 1)])
def test_signals_are_passed_on_to_the_server(tmp_path, sig):
    before = {s: signal.getsignal(s) for s in dashboard.FORWARDED_SIGNALS}
    code, seconds, pid = _serve_and_signal(tmp_path, "lambda *a: sys.exit(0)", sig)
    assert code == 0 and seconds < 2 and _gone(pid)
    assert {s: signal.getsignal(s) for s in dashboard.FORWARDED_SIGNALS} == before


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_a_server_that_ignores_the_signal_is_killed(monkeypatch, tmp_path):
    """Stopped within STOP_GRACE seconds (plus a poll), never left running."""
    monkeypatch.setattr(dashboard, "STOP_GRACE", 0.5)
    code, seconds, pid = _serve_and_signal(tmp_path, "signal.SIG_IGN", signal.SIGTERM)
    assert code == 0 and 0.5 <= seconds < 3 and _gone(pid)

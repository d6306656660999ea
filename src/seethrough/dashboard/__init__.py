"""The web dashboard: ``seethrough dashboard`` (needs ``pip install "seethrough[dashboard]"``).

Importing this package imports no streamlit: :mod:`seethrough.dashboard.service` is the
dashboard's logic in plain Python, :mod:`seethrough.dashboard.app` the Streamlit page that the
``streamlit`` runner executes in its own process.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from ..errors import InvalidParameterError, SeethroughError

__all__ = [
    "APP_PATH",
    "LOOPBACK",
    "RUNS_ENV",
    "TORCHSCRIPT_ENV",
    "DashboardUnavailableError",
    "check_port",
    "check_runs",
    "command",
    "launch",
    "serve",
    "server_environment",
]

APP_PATH = Path(__file__).with_name("app.py")
"""The Streamlit script of the dashboard."""

LOOPBACK = ("127.0.0.1", "localhost", "::1")

TORCHSCRIPT_ENV = "SEETHROUGH_DASHBOARD_TORCHSCRIPT"
"""Set to ``1`` for the server by ``seethrough dashboard --allow-torchscript`` (and only then)."""

RUNS_ENV = "SEETHROUGH_DASHBOARD_RUNS"
"""The folder of training runs the "Training run" view lists, set for the server by
``seethrough dashboard --runs DIR`` (and only then): visitors pick a run by its name under it."""

FORWARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)
"""Signals to the command that are passed on to the server, which then stops."""

STOP_GRACE = 3.0
"""Seconds the server has to stop after a forwarded signal before it is killed."""


class DashboardUnavailableError(SeethroughError, ImportError):
    """The dashboard's optional dependency (streamlit) is not installed."""


def _check_port_range(port: int) -> None:
    if not 0 < port < 65536:
        raise InvalidParameterError(f"--port {port}: must be between 1 and 65535")


def check_port(host: str = "127.0.0.1", port: int = 8501) -> None:
    """Check that the dashboard can serve on ``host:port``: bind it for a moment, as the server will.

    Raises:
        InvalidParameterError: the port is out of range or already in use, or ``host`` is not an
            address of this machine.
    """
    _check_port_range(port)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidParameterError(f"--host {host}: not a known address ({exc})") from None
    bound, unavailable = 0, None
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                if os.name != "nt":  # as servers do: a closed connection does not hold the port
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                bound += 1
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", None)):
                raise InvalidParameterError(
                    f"port {port} on {host} is already in use: stop the program using it "
                    "or pick another --port"
                ) from None
            if exc.errno == errno.EACCES:
                raise InvalidParameterError(
                    f"port {port} on {host}: permission denied (pick a port above 1023)"
                ) from None
            unavailable = exc  # for example ::1 on a machine without IPv6: the others may do
    if not bound:
        reason = unavailable.strerror if unavailable is not None else "no address"
        raise InvalidParameterError(f"cannot serve on {host}:{port}: {reason}")


def check_runs(runs: str | os.PathLike[str]) -> Path:
    """The ``--runs`` folder as an absolute path, checked to be an existing directory.

    Raises:
        InvalidParameterError: ``runs`` is not a directory.
    """
    path = Path(runs).expanduser().resolve()
    if not path.is_dir():
        raise InvalidParameterError(f"--runs {runs}: not a folder")
    return path


def command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The command line that serves the dashboard on ``host:port``."""
    _check_port_range(port)
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.maxUploadSize",
        "50",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
    ]


def server_environment(
    allow_torchscript: bool = False, runs: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """The server's environment: this one, with TorchScript uploads allowed only when asked and
    the training runs folder (:func:`check_runs`) only when given."""
    env = dict(os.environ, STREAMLIT_CLIENT_TOOLBAR_MODE="minimal")
    env.pop(TORCHSCRIPT_ENV, None)
    env.pop(RUNS_ENV, None)
    if allow_torchscript:
        env[TORCHSCRIPT_ENV] = "1"
    if runs is not None:
        env[RUNS_ENV] = str(check_runs(runs))
    return env


def launch(
    host: str = "127.0.0.1",
    port: int = 8501,
    *,
    allow_torchscript: bool = False,
    runs: str | os.PathLike[str] | None = None,
) -> int:
    """Serve the dashboard until it stops or is stopped; returns the server's exit code.

    The server runs in a child process, stopped with this one (see :func:`serve`).

    Args:
        host: address to serve on.
        port: port to serve on.
        allow_torchscript: accept TorchScript uploads (a TorchScript file is a program: only for
            a single user on their own machine).
        runs: a folder of training runs for the "Training run" view (visitors pick a run
            folder under it by name; nothing outside it is read).

    Raises:
        DashboardUnavailableError: streamlit is not installed.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise DashboardUnavailableError(
            "the dashboard needs streamlit: pip install 'seethrough[dashboard]'"
        )
    return serve(command(host, port), server_environment(allow_torchscript, runs))


def serve(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run the server ``cmd`` until it exits; returns its exit code.

    SIGTERM, SIGINT (Ctrl+C) and SIGHUP sent to this process are passed on to the server, which
    is waited for (and killed when it is still running :data:`STOP_GRACE` seconds later), so it
    never outlives this process nor keeps its port. A stop asked that way returns 0.
    """
    stops: list[tuple[int, float]] = []  # signal, when
    servers: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stops.append((signum, time.monotonic()))
        for server in servers:
            if server.poll() is None:
                try:
                    server.send_signal(signum)
                except ProcessLookupError:
                    pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        server = subprocess.Popen(cmd, env=env)
        servers.append(server)
        if stops:  # a signal came while the server was starting
            server.send_signal(stops[0][0])
        while True:
            try:
                code = server.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if stops and time.monotonic() > stops[0][1] + STOP_GRACE:
                    server.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for server in servers:
            if server.poll() is None:  # left by an error here: never keep it serving
                server.kill()
                server.wait()
    return 0 if stops else code

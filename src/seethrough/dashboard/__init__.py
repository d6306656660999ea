"""The web dashboard: ``seethrough dashboard`` (needs ``pip install "seethrough[dashboard]"``).

Importing this package imports no streamlit: :mod:`seethrough.dashboard.service` is the
dashboard's logic in plain Python, :mod:`seethrough.dashboard.app` the Streamlit page that the
``streamlit`` runner executes in its own process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidParameterError, SeethroughError

__all__ = ["APP_PATH", "LOOPBACK", "DashboardUnavailableError", "command", "launch"]

APP_PATH = Path(__file__).with_name("app.py")
"""The Streamlit script of the dashboard."""

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class DashboardUnavailableError(SeethroughError, ImportError):
    """The dashboard's optional dependency (streamlit) is not installed."""


def command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The command line that serves the dashboard on ``host:port``."""
    if not 0 < port < 65536:
        raise InvalidParameterError(f"--port {port}: must be between 1 and 65535")
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


def launch(host: str = "127.0.0.1", port: int = 8501) -> int:
    """Serve the dashboard until interrupted; returns the server's exit code.

    Raises:
        DashboardUnavailableError: streamlit is not installed.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise DashboardUnavailableError(
            "the dashboard needs streamlit: pip install 'seethrough[dashboard]'"
        )
    env = dict(os.environ, STREAMLIT_CLIENT_TOOLBAR_MODE="minimal")
    try:
        return subprocess.call(command(host, port), env=env)
    except KeyboardInterrupt:
        return 0

"""The command on Ray in its own process: it joins a cluster started apart (``ray start --head``)
by ``--address HOST:PORT`` and leaves it running; SIGTERM in the middle of a Ray run exits 130
with one line, leaves a table of finished rows only (no duplicate, no temporary file), shuts down
the cluster the command started, and a rerun completes the table without repeating a row.

Each test runs the CLI as a subprocess (a fresh process, as a user runs it); the cluster started
apart is stopped by signalling the ``ray start --block`` process this module started, which
stops the processes it started (never ``ray stop``, which would stop every cluster of the
machine)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seethrough.audit import AuditSpec, audit, read_table
from tests.audit.conftest import sigterm_half_way, stopped_rows, write_digits
from tests.audit.test_audit_cli import args

pytest.importorskip("ray", reason="the Ray engine needs the ray extra")
pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data (the ray extra)")
psutil = pytest.importorskip("psutil", reason="Ray installs psutil")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).parents[2]
RAY_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] \w+\.cc:\d+: ")
"""A line of Ray's own C++ log (e.g. its note on actor restarts), which the command cannot
silence; the command's own output on stderr is the one line."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(temp_dir: str) -> list[psutil.Process]:
    """The live processes of a cluster whose temporary folder is ``temp_dir``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.Error, TypeError):
            continue
    return found


def _stop(processes: list[psutil.Process]) -> None:
    """Terminate, then kill, these processes (ours, by their ids)."""
    for p in processes:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "seethrough.cli.main", *args]


def _env(**more: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", **more)


HEAD_CPUS = 5
"""CPUs the cluster started apart declares (few machines have exactly 5: its count tells it from
a cluster the command would start on this machine)."""
TOKEN = secrets.token_hex(32)
"""The head's authentication token: a cluster started by ``ray start`` checks one (Ray's
default since token authentication), and a process joining it needs ``RAY_AUTH_MODE=token``
and the token (here in the environment, so nothing is written to the home folder)."""


def _short_temp() -> str:
    """A temporary folder with a short path (Ray's sockets live in it; a socket's path is
    limited to about 100 characters)."""
    return tempfile.mkdtemp(prefix="st-ray-")


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    """A one-node cluster of :data:`HEAD_CPUS` CPUs started apart: its ``HOST:PORT``."""
    port, temp_dir = _free_port(), _short_temp()
    command = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        "--port", str(port), "--num-cpus", str(HEAD_CPUS), "--include-dashboard=false",
        "--temp-dir", temp_dir, "--disable-usage-stats",
    ]  # fmt: skip
    if not Path(command[0]).exists():
        pytest.skip("no `ray` command next to this Python")
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN),
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, "ray start --head failed"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the head node did not open its port")
        yield address
    finally:
        children = _ours(temp_dir)  # its processes, by id, before it goes
        process.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started...
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # ...after a drain that can take half a minute
            process.kill()
            process.wait()
        _stop(children + _ours(temp_dir))  # anything that outlived it
        shutil.rmtree(temp_dir, ignore_errors=True)


def _audit_on(head: str, data: Path, out: Path, weights: Path, *more: str):
    """``seethrough audit`` of ``data`` into ``out`` on the cluster at ``head``, in a process
    of its own with the cluster's token."""
    return subprocess.run(
        _cli(
            *args(data, out, weights, "--engine", "ray", "--address", head, *more, metrics="none")
        ),
        capture_output=True,
        text=True,
        env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN),
        timeout=600,
    )


def test_the_command_joins_a_cluster_by_its_address_and_leaves_it_running(tmp_path, weights, head):
    data, out = tmp_path / "data", tmp_path / "run"
    write_digits(data, 6)
    done = _audit_on(head, data, out, weights, "--actors", "2")
    assert done.returncode == 0, done.stderr
    assert "audited 6 items: 6 rows (0 with errors)" in done.stdout
    assert [r["id"] for r in read_table(out)] == [f"d{i:03d}.png" for i in range(6)]
    host, port = head.rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=5).close()  # still running
    # it is that cluster the command works on: the pool is sized against its HEAD_CPUS CPUs
    # (a cluster the command started itself would have this machine's)
    refused = _audit_on(
        head, data, tmp_path / "other", weights, "--actors", str(HEAD_CPUS + 1),
        "--cpus-per-actor", "1",
    )  # fmt: skip
    assert refused.returncode == 2
    need = f"{HEAD_CPUS + 1} actors of 1 CPU need {HEAD_CPUS + 1} CPUs; the cluster has {HEAD_CPUS}"
    assert need in refused.stderr


def test_sigterm_in_the_middle_of_a_ray_run(tmp_path, folder_of_many, weights, model):
    data, n = folder_of_many
    out = tmp_path / "run"
    temp_dir = _short_temp()
    command = _cli(
        "audit", str(data), "--model", "synthetic_digits", "--weights", str(weights),
        "--methods", "lime", "-p", "n_samples=40", "--metrics", "none", "--out", str(out),
        "--engine", "ray", "--cpus", "2", "--actors", "2", "--batch-size", "1",
    )  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(RAY_TMPDIR=temp_dir),
    )
    try:
        sigterm_half_way(process, out, wait=400, ignore=RAY_LOG)
        left = _ours(temp_dir)
        assert not left, [p.info["cmdline"][:2] for p in left]  # the cluster it started: gone
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _stop(_ours(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
    stopped = stopped_rows(out, n)
    ids = [r["id"] for r in stopped]
    assert all(r["error"] is None and (out / r["map"]).is_file() for r in stopped)
    spec = AuditSpec(
        "synthetic_digits", ("lime",), (), weights=str(weights), params={"lime": {"n_samples": 40}}
    )
    result = audit(data, spec, out, model=model, report=False)
    assert result.skipped == len(ids) and result.rows == n - len(ids)
    final = read_table(out)
    assert [r["id"] for r in final] == [f"img{i:03d}.png" for i in range(n)]
    assert [r for r in final if r["id"] in set(ids)] == stopped  # finished rows kept as they were


@pytest.fixture
def folder_of_many(tmp_path) -> tuple[Path, int]:
    """Copies of 3 digits: a data set long enough on Ray to be stopped half-way."""
    n = 24
    write_digits(tmp_path / "three", 3)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(n):
        shutil.copy(tmp_path / "three" / f"d{i % 3:03d}.png", data / f"img{i:03d}.png")
    return data, n

"""``seethrough audit``: a run, a resumed run, one-line errors, and SIGTERM half-way through a
run in a subprocess leaving a table that the rerun completes without losing or repeating a row."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seethrough.audit import AuditSpec, audit, read_table
from tests.audit.conftest import (
    assert_csv_equals_parquet,
    sigterm_half_way,
    stopped_rows,
    write_digits,
)
from tests.test_cli import cli, one_error_line


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-digits")
    write_digits(root, 3)
    return root


def args(data, out, weights, *more, metrics="deletion"):
    return (
        "audit",
        str(data),
        "--model",
        "synthetic_digits",
        "--weights",
        str(weights),
        "--methods",
        "gradcam",
        "--metrics",
        metrics,
        "--steps",
        "4",
        "--out",
        str(out),
        *more,
    )


def test_audit_command_runs_and_resumes(capsys, tmp_path, folder, weights):
    code, out, err = cli(capsys, *args(folder, tmp_path / "run", weights))
    assert code == 0, err
    assert "audited 3 items: 3 rows (0 with errors)" in out and "table.parquet" in out
    assert [r["id"] for r in read_table(tmp_path / "run")] == ["d000.png", "d001.png", "d002.png"]
    code, out, err = cli(capsys, *args(folder, tmp_path / "run", weights, "--limit", "2"))
    assert code == 0 and "0 rows (0 with errors), 2 rows already there" in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--metrics", "pointing"), "pointing_game"),
        (("--methods", "gradcm"), "gradcam"),
        (("--engine", "spark"), "unknown engine"),
        (("--address", "auto"), "--engine ray"),
        (("--actors", "2"), "--actors: for --engine ray only"),
        (("--cpus-per-actor", "0.5", "--cpus", "2"), "--cpus-per-actor, --cpus: for --engine ray"),
        (("--engine", "ray", "--actors", "0"), "--actors"),
        (("--target", "truth"), "target"),
    ],
)
def test_bad_input_is_one_error_line(capsys, tmp_path, folder, weights, extra, needle):
    code, _, err = cli(capsys, *args(folder, tmp_path / "run", weights), *extra)
    assert code == 2
    assert needle in one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_missing_data_and_an_out_file_are_one_error_line(capsys, tmp_path, folder, weights):
    code, _, err = cli(capsys, *args(tmp_path / "nowhere", tmp_path / "run", weights))
    assert code == 2 and "does not exist" in one_error_line(err)
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, *args(folder, tmp_path / "file", weights))
    assert code == 2 and "is a file" in one_error_line(err)


@pytest.mark.slow
def test_sigterm_half_way_then_rerun_loses_and_repeats_no_row(tmp_path, folder, weights, model):
    data = tmp_path / "data"
    data.mkdir()
    n = 30
    for i in range(n):  # copies: a data set big enough to be stopped half-way
        shutil.copy(folder / f"d{i % 3:03d}.png", data / f"img{i:03d}.png")
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "seethrough.cli.main",
        *args(data, out, weights, metrics="none"),
    ]
    command += ["--batch-size", "1"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    sigterm_half_way(process, out)
    stopped = stopped_rows(out, n)
    ids = [r["id"] for r in stopped]
    spec = AuditSpec("synthetic_digits", ("gradcam",), (), weights=str(weights), steps=4)
    result = audit(data, spec, out, model=model)
    assert result.skipped == len(ids) and result.rows == n - len(ids)
    final = read_table(out)
    assert [r["id"] for r in final] == [f"img{i:03d}.png" for i in range(n)]
    assert [r for r in final if r["id"] in set(ids)] == stopped  # finished rows kept as they were
    assert_csv_equals_parquet(out, ())

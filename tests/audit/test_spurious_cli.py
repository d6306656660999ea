"""``seethrough spurious RUN``: the ranked table of the finder, as text and as JSON, the same
numbers as :func:`seethrough.audit.spurious`; a missing or invalid run is one error line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from seethrough.audit import spurious
from tests.audit.test_spurious import _hand_run
from tests.test_cli import cli, one_error_line

SHARES = {
    "0": [0.12, 0.2, 0.25, 0.18, 0.22, 0.15],
    "1": [0.8, 0.75, 0.88, 0.7, 0.82],  # decided from the background
    "2": [0.2, 0.28, 0.1, 0.3, 0.17, 0.24, 0.19],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out, _ = _hand_run(tmp_path_factory.mktemp("spurious-cli"), SHARES)
    return out


def test_json_is_the_python_table_ranked(capsys, run):
    code, out, err = cli(capsys, "spurious", str(run), "--json")
    assert code == 0, err
    got = json.loads(out)
    want = spurious(run)
    assert got["mode"] == "outside" and got["skipped"] == want.skipped == 1
    assert [r["class"] for r in got["classes"]] == want.ranked() and want.ranked()[0] == "1"
    for mine, theirs in zip(got["classes"], want.classes, strict=True):
        for key, value in theirs.items():
            if isinstance(value, float) and not math.isfinite(value):
                assert mine[key] is None
            else:
                assert mine[key] == (value if isinstance(value, str) else pytest.approx(value))
    assert [r["class"] for r in got["classes"] if r["flagged"]] == ["1"]


def test_text_table_top_and_csv(capsys, run, tmp_path):
    code, out, err = cli(
        capsys, "spurious", str(run), "--top", "1", "--csv", str(tmp_path / "s.csv")
    )
    assert code == 0, err
    lines = [line for line in out.splitlines() if "gradcam" in line]
    assert len(lines) == 1 and " 1 " in lines[0] and "True" in lines[0]  # only the top class
    mean = np.mean(SHARES["1"])
    assert f"{mean:.4g}" in lines[0]
    assert "1 flagged (alpha 0.05); 18 maps scored, 1 rows skipped" in out
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0].startswith("method,class,n,mean") and len(rows) == 1 + len(SHARES)  # all
    code, out, _ = cli(capsys, "spurious", str(run), "--json", "--alpha", "1e-12")
    assert code == 0 and not any(r["flagged"] for r in json.loads(out)["classes"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("nowhere",), "not an audit's run folder"),
        (("RUN", "--mode", "reliance"), "--model"),
        (("RUN", "--mode", "both"), "mode='both'"),
        (("RUN", "--alpha", "2"), "alpha=2"),
        (("RUN", "--method", "gradcm"), "gradcam"),
        (("RUN", "--top", "0"), "--top"),
    ],
)
def test_bad_input_is_one_error_line(capsys, run, tmp_path, args, needle):
    args = tuple(
        str(run) if a == "RUN" else str(tmp_path / a) if a == "nowhere" else a for a in args
    )
    code, out, err = cli(capsys, "spurious", *args)
    assert code == 2 and not out
    assert needle in one_error_line(err)


def test_a_folder_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "audit.json").write_text("{not json")
    code, _, err = cli(capsys, "spurious", str(tmp_path))
    assert code == 2 and "audit" in one_error_line(err)

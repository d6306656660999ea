"""The Ray engine: the audit of 200 generated images (and bad files) gives the same table on a
local Ray cluster with 2 actors as in-process, row for row; a rerun skips every finished row; a
spec the actors cannot load is the in-process engine's typed error; a cluster the engine
started is shut down by it, a joined one left running; no Ray is a typed error naming the pip
command. One cluster for the module (starting one costs seconds)."""

from __future__ import annotations

import csv
import math
import os
import shutil
import signal
import sys
from dataclasses import replace

import numpy as np
import pytest

from seethrough import errors
from seethrough.audit import AuditSpec, audit, get_engine, load_items, read_table
from tests.audit.conftest import digits_masks, write_digits
from tests.test_cli import cli, one_error_line

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra")
pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data (the ray extra)")

from seethrough.audit.ray import RayEngine  # noqa: E402

# a cluster and two audits of 200 images: seconds on an idle machine, minutes on a busy one
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

N = 200
METHODS = ("gradcam",)
METRICS = ("pointing_game", "energy_pointing_game")
BAD = {"gone.png": None, "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "t.png": b"x"}


@pytest.fixture(scope="module")
def engine():
    """A local cluster of 2 CPUs with 2 actors, started by the engine; shut down at the end."""
    with RayEngine(cpus=2, actors=2) as e:
        yield e


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    """A CSV of N digits with labels and masks, plus a missing, a corrupt and a text file."""
    root = tmp_path_factory.mktemp("ray-digits")
    paths = write_digits(root / "images", N)
    masks, labels = digits_masks(N)
    from PIL import Image

    (root / "masks").mkdir()
    lines = [["path", "label", "mask"]]
    for path, mask, label in zip(paths, masks, labels, strict=True):
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / path.name)
        lines.append([f"images/{path.name}", str(int(label)), f"masks/{path.name}"])
    for name, content in BAD.items():
        if content is not None:
            (root / name).write_bytes(content)
        lines.append([name, "1", ""])
    with (root / "list.csv").open("w", newline="") as f:
        csv.writer(f).writerows(lines)
    return root / "list.csv"


def spec(weights, **kw) -> AuditSpec:
    return AuditSpec(
        "synthetic_digits", METHODS, METRICS, weights=str(weights), steps=4, batch_size=8, **kw
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, listing, weights, model, engine):
    """The same audit in-process and on the cluster: the two run folders. The items' paths and
    the run folders are relative to a working folder the cluster did not start in."""
    root = tmp_path_factory.mktemp("ray-runs")
    here = os.getcwd()
    os.chdir(listing.parent)
    try:
        items = [
            replace(
                i,
                path=os.path.relpath(i.path),
                mask_path=i.mask_path and os.path.relpath(i.mask_path),
            )
            for i in load_items(listing)
        ]
        assert not os.path.isabs(items[0].path) and not os.path.isabs(items[0].mask_path)
        local = audit(items, spec(weights), "local", model=model, report=False)
        remote = audit(items, spec(weights), "ray", engine=engine, report=False)
    finally:
        os.chdir(here)
    for run in ("local", "ray"):
        shutil.move(listing.parent / run, root / run)
    assert local.rows == remote.rows == (N + len(BAD)) * len(METHODS)
    assert local.errors == remote.errors == len(BAD) * len(METHODS)
    return root / "local", root / "ray"


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6
    return a == b


def test_ray_table_equals_in_process_row_for_row(runs):
    local, remote = (
        {(r["id"], r["method"]): r for r in read_table(run) if r.pop("seconds") is not False}
        for run in runs
    )
    assert local.keys() == remote.keys() and len(local) == (N + len(BAD)) * len(METHODS)
    differ = [(k, c) for k, r in local.items() for c in r if not same(r[c], remote[k][c])]
    assert not differ, differ[:5]
    ok = [r for r in local.values() if r["error"] is None]
    assert len(ok) == N * len(METHODS)
    assert {r["pointing_game"] for r in ok} <= {0.0, 1.0}
    assert not any(math.isnan(r["energy_pointing_game"]) for r in ok)
    for key in [k for k in local if local[k]["map"]][:: N // 4]:  # the maps the actors wrote
        with np.load(runs[0] / local[key]["map"]) as a, np.load(runs[1] / remote[key]["map"]) as b:
            np.testing.assert_allclose(b["map"], a["map"], rtol=0, atol=1e-6)
            assert int(a["target"]) == int(b["target"]) == local[key]["target"]


def test_bad_files_are_error_rows_under_ray(runs):
    rows = {(r["id"], r["method"]): r for r in read_table(runs[1])}
    for name in BAD:
        for method in METHODS:
            row = rows[(name, method)]
            assert row["error_type"] == "InvalidImageError", row
            assert row["predicted"] is None and math.isnan(row["energy_pointing_game"])


def test_rerun_on_ray_skips_every_finished_row(runs, listing, weights, engine):
    result = audit(listing, spec(weights), runs[1], engine=engine, report=False)
    assert result.rows == 0 and result.skipped == (N + len(BAD)) * len(METHODS)
    assert len(read_table(runs[1])) == result.skipped


@pytest.mark.slow
def test_a_spec_the_actors_cannot_load_is_the_typed_error(tmp_path, listing, engine):
    bad = AuditSpec("synthetic_digits", ("gradcam",), (), weights=str(tmp_path / "no.safetensors"))
    with pytest.raises(errors.InvalidParameterError, match=r"no\.safetensors"):
        audit(listing, bad, tmp_path / "run", engine=engine, limit=4, report=False)


def test_options_are_checked(engine, weights):
    with pytest.raises(errors.InvalidParameterError, match="actors=0"):
        RayEngine(actors=0)
    with pytest.raises(errors.InvalidParameterError, match="batch_size"):
        RayEngine(batch_size=0)
    with pytest.raises(errors.InvalidParameterError, match="cpus is for"):
        RayEngine("auto", cpus=2)
    engine.connect()
    too_many = RayEngine(actors=5)
    with pytest.raises(errors.InvalidParameterError, match="the cluster has 2"):
        too_many.run(spec(weights), [object()], print)  # type: ignore[list-item]
    assert isinstance(get_engine("ray"), RayEngine)


def test_no_ray_is_a_typed_error_naming_the_extra(monkeypatch, capsys, tmp_path, listing):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(errors.MissingDependencyError, match=r"pip install 'seethrough\[ray\]'"):
        RayEngine()
    code, _, err = cli(
        capsys, "audit", str(listing), "--model", "synthetic_digits", "--weights", "none",
        "--out", str(tmp_path / "run"), "--engine", "ray",
    )  # fmt: skip
    assert code == 2 and "seethrough[ray]" in one_error_line(err)


def test_the_command_runs_on_the_cluster_it_is_connected_to(
    capsys, tmp_path, listing, weights, engine
):
    engine.connect()
    code, out, err = cli(
        capsys, "audit", str(listing), "--model", "synthetic_digits", "--weights", str(weights),
        "--metrics", "none", "--limit", "4", "--out", str(tmp_path / "run"), "--engine", "ray",
    )  # fmt: skip
    assert code == 0, err
    assert "audited 4 items: 4 rows (0 with errors)" in out
    assert ray.is_initialized()  # a cluster the command joined is left running
    assert sorted(r["id"] for r in read_table(tmp_path / "run")) == [
        f"images/d{i:03d}.png" for i in range(4)
    ]


def test_the_commands_pool_options_reach_the_engine(capsys, tmp_path, listing, weights, engine):
    engine.connect()  # a 2-CPU cluster: 3 actors of one CPU do not fit, and the error says so
    code, _, err = cli(
        capsys, "audit", str(listing), "--model", "synthetic_digits", "--weights", str(weights),
        "--metrics", "none", "--limit", "4", "--out", str(tmp_path / "run"), "--engine", "ray",
        "--actors", "3", "--cpus-per-actor", "1",
    )  # fmt: skip
    assert code == 2 and "3 actors of 1 CPU need 3 CPUs; the cluster has 2" in one_error_line(err)


def test_a_joined_cluster_is_left_running_a_started_one_shut_down(engine):
    engine.connect()
    assert ray.is_initialized() and engine.started
    joined = RayEngine()
    joined.connect()  # this process is connected already: it joins that cluster
    joined.close()
    assert ray.is_initialized() and not joined.started
    engine.close()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_starting_a_cluster_keeps_the_audits_sigterm_handler():
    """``ray.init`` installs a SIGTERM handler that exits; the audit's (stop cleanly, exit 130)
    must stay in place."""
    if ray.is_initialized():
        ray.shutdown()

    def handler(signum, frame):  # pragma: no cover - never called
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        with RayEngine(cpus=1, actors=1) as engine:
            engine.connect()
            assert engine.started and signal.getsignal(signal.SIGTERM) is handler
        assert not ray.is_initialized()
    finally:
        signal.signal(signal.SIGTERM, old)

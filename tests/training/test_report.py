"""The training report: GIF strips, contact sheets, the metrics plot, the HTML page, and
``seethrough report``, on a run directory written here by hand to the documented layout."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seethrough.errors import InvalidParameterError
from seethrough.training.report import (
    CAPTION_HEIGHT,
    MAX_TILE,
    REPORT_DIR,
    build_report,
    metrics_figure,
    picture,
)
from seethrough.training.run import read_run
from seethrough.viz import overlay
from tests.test_cli import cli, one_error_line

PROBES = ["disc", "<b>x"]
METHODS = ["gradcam", "occlusion"]
EPOCHS = [0, 1, 2, 3]
H, W = 20, 24
SCALE = 4  # the whole factor that brings 24 pixels to at least 96


def _blob(cy: float, cx: float, width: float) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2)).astype(np.float32)


def _maps(epoch: int) -> dict[str, np.ndarray]:
    """Maps that move from epoch 0 to 2 and stay put from 2 to 3 (so attention settles at 2)."""
    e = min(epoch, 2)
    return {
        "gradcam": np.stack([_blob(4 + 5 * e, 4 + 6 * e, 3), _blob(15 - 4 * e, 5 + 7 * e, 2.5)]),
        "occlusion": np.stack([_blob(10, 3 + 8 * e, 4), _blob(3 + 6 * e, 12, 3.5)]),
    }


def _images() -> np.ndarray:
    rng = np.random.default_rng(0)
    images = np.zeros((2, H, W, 3), np.uint8)
    images[0, 5:15, 6:18] = (200, 200, 60)
    images[1] = rng.integers(0, 4, (H, W, 1)) * 60
    return images


def _pointing(epoch: int, method: str, probe: int) -> float:
    """gradcam finds probe 0 from epoch 1 on and probe 1 from 2 on; occlusion probe 0 at 3."""
    first = {"gradcam": (1, 2), "occlusion": (3, 9)}[method][probe]
    return float(epoch >= first)


def write_run(out: Path, epochs: list[int] = EPOCHS) -> Path:
    """A run directory as ExplanationRecorder writes one (run.json, probes, maps, table)."""
    (out / "maps").mkdir(parents=True)
    info = {
        "format": "seethrough.training_run",
        "version": 1,
        "probes": PROBES,
        "methods": METHODS,
        "labels": [3, None],
        "has_masks": True,
        "every": 1,
        "image_size": [H, W],
        "model": "tiny <cnn>",
        "created": "2024-01-01T00:00:00+00:00",
    }
    (out / "run.json").write_text(json.dumps(info))
    masks = np.zeros((2, H, W), bool)
    masks[:, 5:15, 6:18] = True
    np.savez(out / "probes.npz", images=_images(), masks=masks)
    rows = []
    for epoch in epochs:
        np.savez(
            out / "maps" / f"epoch-{epoch:04d}.npz",
            **_maps(epoch),
            predicted=np.array([3, 1], np.int64),
            confidence=np.array([0.5, 0.25], np.float32),
        )
        for p, name in enumerate(PROBES):
            for m in METHODS:
                rows.append((epoch, name, m, "pointing_game", _pointing(epoch, m, p)))
                rows.append((epoch, name, m, "iou", 0.1 * epoch))
                rows.append((epoch, name, m, "energy", 0.2))
            rows.append((epoch, name, "", "predicted", [3, 1][p]))
            rows.append((epoch, name, "", "confidence", [0.5, 0.25][p]))
        rows.append((epoch, "", "", "loss", 2.0 / (epoch + 1)))
        rows.append((epoch, "", "", "accuracy", 0.2 * epoch))
        rows.append((epoch, "", "", "recorder_seconds", 0.01))
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "image", "method", "metric", "value"])
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = write_run(tmp_path_factory.mktemp("run") / "exp1")
    build_report(out)
    return out


def _expected(probe: int, epoch: int, method: str) -> np.ndarray:
    return overlay(_images()[probe], _maps(epoch)[method][probe], alpha=0.5, normalize="none")


def _big(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(a, SCALE, axis=0), SCALE, axis=1)


def _file(run_dir: Path, kind: str, probe: int) -> Path:
    (path,) = (run_dir / REPORT_DIR).glob(f"{kind}-{probe:02d}-*")
    return path


@pytest.mark.parametrize("probe", [0, 1])
def test_strip_has_a_frame_per_epoch_showing_that_epochs_maps(run_dir, probe):
    tile_w, tile_h = W * SCALE, H * SCALE
    with Image.open(_file(run_dir, "strip", probe)) as gif:
        assert gif.n_frames == len(EPOCHS)
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("RGB")).astype(float))
    assert frames[0].shape == (tile_h + CAPTION_HEIGHT, tile_w * (1 + len(METHODS)), 3)
    for k, epoch in enumerate(EPOCHS):
        frame = frames[k]
        probe_tile = frame[:tile_h, :tile_w]
        assert np.abs(probe_tile - _big(_images()[probe])).mean() < 2
        for j, method in enumerate(METHODS):
            shown = frame[:tile_h, (1 + j) * tile_w : (2 + j) * tile_w]
            errors = [np.abs(shown - _big(_expected(probe, e, method))).mean() for e in (0, 1, 2)]
            # a GIF frame has at most 256 colours: near the overlay, and nearest to its epoch's
            assert errors[min(epoch, 2)] < 2.0, errors
            assert int(np.argmin(errors)) == min(epoch, 2)
        band = frame[tile_h:, :tile_w]
        assert band.min() < 128  # the epoch's number is written under the probe
    # the captions differ (the epoch number), though epochs 2 and 3 show the same maps
    assert np.abs(frames[2][tile_h:] - frames[3][tile_h:]).max() > 0
    assert np.array_equal(frames[2][:tile_h], frames[3][:tile_h])


@pytest.mark.parametrize("probe", [0, 1])
def test_contact_sheet_is_methods_by_epochs_tiles(run_dir, probe):
    sheet = np.asarray(Image.open(_file(run_dir, "sheet", probe)).convert("RGB"))
    tile_w, tile_h = W * SCALE, H * SCALE + CAPTION_HEIGHT
    assert sheet.shape == (len(METHODS) * tile_h, (1 + len(EPOCHS)) * tile_w, 3)
    for r, method in enumerate(METHODS):
        top = r * tile_h
        assert np.array_equal(sheet[top : top + H * SCALE, :tile_w], _big(_images()[probe]))
        for c, epoch in enumerate(EPOCHS):
            shown = sheet[top : top + H * SCALE, (1 + c) * tile_w : (2 + c) * tile_w]
            assert np.array_equal(shown, _big(_expected(probe, epoch, method)))


def test_metrics_plot_shows_means_user_metrics_and_the_settled_marker(run_dir):
    run = read_run(run_dir)
    assert run.settled_epoch() == 2
    fig = metrics_figure(run, 2)
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    titles = list(axes)
    assert titles.index("loss") < titles.index("accuracy")  # the usual pair in its usual order
    assert {"pointing game", "IoU with the mask", "loss", "accuracy"} <= set(axes)
    lines = {line.get_label(): line for line in axes["pointing game"].get_lines()}
    for m in METHODS:
        want = [np.mean([_pointing(e, m, p) for p in (0, 1)]) for e in EPOCHS]
        assert list(lines[m].get_xdata()) == EPOCHS
        assert np.allclose(lines[m].get_ydata(), want)
    loss = {line.get_label(): line for line in axes["loss"].get_lines()}
    assert np.allclose(loss["loss"].get_ydata(), [2.0, 1.0, 2 / 3, 0.5])
    for ax in axes.values():  # the marker on every panel, at the settled epoch
        marker = [line for line in ax.get_lines() if line.get_label() == "attention settled"]
        assert len(marker) == 1 and list(marker[0].get_xdata()) == [2, 2]
    assert "recorder_seconds" not in axes
    assert Image.open(run_dir / REPORT_DIR / "metrics.png").size[0] > 0


def test_html_is_self_contained_and_escapes_every_text(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<h3>disc</h3>" in page
    assert "<h3>&lt;b&gt;x</h3>" in page
    assert "<b>x" not in page and "tiny <cnn>" not in page
    assert "tiny &lt;cnn&gt;" in page
    assert "attention settled at epoch 2" in page
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 1 + 2 * len(PROBES)  # the plot, and a strip and a sheet per probe
    assert all(s.startswith(("data:image/png;base64,", "data:image/gif;base64,")) for s in sources)
    embedded = base64.b64decode(sources[1].split(",", 1)[1])
    assert embedded == _file(run_dir, "strip", 0).read_bytes()
    assert "http" not in page.lower().replace("http-equiv", "")
    # the last epoch's means: pointing game of gradcam at epoch 3 is mean(1, 1), occlusion's 0.5
    assert "<td>gradcam</td><td class='num'>1.000</td><td class='num'>0.300</td>" in page
    assert "<td>occlusion</td><td class='num'>0.500</td><td class='num'>0.300</td>" in page
    # nothing half written is left behind
    assert not [p for p in (run_dir / REPORT_DIR).iterdir() if p.name.startswith(".")]


def test_a_run_that_has_not_settled_says_so(tmp_path):
    out = write_run(tmp_path / "short", epochs=[0, 1])
    page = build_report(out).read_text(encoding="utf-8")
    assert "attention has not settled" in page
    with Image.open(_file(out, "strip", 1)) as gif:
        assert gif.n_frames == 2


def test_report_command_rebuilds_the_report(capsys, tmp_path):
    out = write_run(tmp_path / "exp")
    code, stdout, _ = cli(capsys, "report", str(out))
    assert code == 0
    assert "report.html" in stdout
    assert "<h3>&lt;b&gt;x</h3>" in (out / "report.html").read_text(encoding="utf-8")
    with Image.open(_file(out, "strip", 0)) as gif:
        assert gif.n_frames == len(EPOCHS)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        ("empty", "not a training run"),
        ("missing", "not a training run"),
        ("other json", "not a seethrough.training_run"),
        ("no probes", "cannot be read"),
    ],
)
def test_report_command_on_a_folder_that_is_not_a_run_is_one_line(capsys, tmp_path, make, needle):
    folder = tmp_path / "notarun"
    if make in ("empty", "other json"):
        folder.mkdir()
    if make == "other json":
        (folder / "run.json").write_text('{"format": "seethrough.explain_run"}')
    if make == "no probes":
        write_run(folder)
        (folder / "probes.npz").unlink()
    code, _, err = cli(capsys, "report", str(folder))
    assert code == 2
    assert needle in one_error_line(err)
    assert not (folder / "report.html").exists()


def test_large_probes_are_shrunk_small_ones_enlarged_by_a_whole_factor():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (200, 320, 3)).astype(np.uint8)
    assert picture(big).shape == (100, MAX_TILE, 3)
    small = rng.integers(0, 256, (7, 5, 3)).astype(np.uint8)
    heat = rng.random((7, 5))
    shown = picture(small, heat)
    assert shown.shape == (7 * 14, 5 * 14, 3)  # ceil(96 / 7) = 14
    assert np.array_equal(shown[::14, ::14], overlay(small, heat, normalize="none"))


def test_an_epoch_without_a_methods_maps_is_a_clear_error(tmp_path):
    out = write_run(tmp_path / "broken", epochs=[0, 1])
    np.savez(out / "maps" / "epoch-0001.npz", gradcam=_maps(1)["gradcam"])
    with pytest.raises(InvalidParameterError, match="no maps of occlusion"):
        build_report(out)

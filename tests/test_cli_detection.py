"""The command line on a detector and a segmenter: predict draws boxes or the class mask,
explain takes box:K, --top-boxes N and mask:CLASS targets; bad targets are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seethrough.cli._shared import parse_targets
from seethrough.errors import InvalidParameterError
from seethrough.explanation import Explanation
from seethrough.targets import Box, Mask

from .test_cli import cli as _cli
from .test_cli import one_error_line

DETECTOR = ("-m", "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", "none", "--max-boxes", "3")
SEGMENTER = ("-m", "lraspp_mobilenet_v3_large", "--weights", "none", "--size", "64")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((72, 96, 3)) * 255).astype(np.uint8)).save(path)
    return str(path)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command, its random weights drawn from one seed: each call loads the same model."""
    torch.manual_seed(0)
    return _cli(capsys, *args)


def _rows(out: str) -> list[list[str]]:
    """The body rows of a rich table, cells stripped."""
    return [
        [c.strip() for c in line.strip("│").split("│")]
        for line in out.splitlines()
        if line.startswith("│")
    ]


def test_parse_targets():
    assert parse_targets(None) == [("", None)]
    assert parse_targets("tabby") == [("", "tabby")] and parse_targets("3") == [("", 3)]
    assert parse_targets("box:0, box:2") == [("box0", Box(index=0)), ("box2", Box(index=2))]
    assert parse_targets(None, top_boxes=2) == [("box0", Box(index=0)), ("box1", Box(index=1))]
    assert parse_targets("mask:dog,mask:15") == [("mask-dog", Mask("dog")), ("mask-15", Mask(15))]
    for bad, match in (
        ("box:x", "expected box:INDEX"),
        ("box:0,dog", "expected box:INDEX"),
        ("box:1,box:1", "twice"),
        ("mask:", "expected box:INDEX"),
    ):
        with pytest.raises(InvalidParameterError, match=match):
            parse_targets(bad)
    with pytest.raises(InvalidParameterError, match="not both"):
        parse_targets("box:0", top_boxes=2)


@pytest.mark.slow  # about 15 s: the detector resizes the image to 320 pixels inside
def test_detector_predict_and_explain_boxes(capsys, tmp_path, photo):
    code, out, err = cli(capsys, "predict", photo, *DETECTOR, "--out", str(tmp_path / "p"))
    assert code == 0, err
    rows = _rows(out)
    assert [r[0] for r in rows] == ["0", "1", "2"]  # box indices, as --target box:K takes them
    boxes = [tuple(float(v) for v in r[3].split(",")) for r in rows]
    assert all(0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 72 for x0, y0, x1, y1 in boxes)
    picture = np.asarray(Image.open(tmp_path / "p" / "scene-predictions.png"))
    assert picture.ndim == 3 and picture.shape[0] > 100

    code, out, err = cli(
        capsys, "explain", photo, *DETECTOR, "--target", "box:0,box:1", "--out", str(tmp_path / "e")
    )
    assert code == 0, err
    folder = tmp_path / "e" / "scene"
    for k in (0, 1):
        e = Explanation.load(folder / f"gradcam-box{k}.json")
        assert e.region is not None and e.region.kind == "box"
        # the box explained is the box the table listed under that index
        np.testing.assert_allclose(e.region.box, boxes[k], atol=0.06)
        assert e.label == rows[k][1] == e.region.label
        assert e.map.shape == (72, 96)
        manifest = json.loads((folder / f"gradcam-box{k}.json").read_text())
        assert manifest["region"]["box"] == pytest.approx(list(e.region.box))
    assert (folder / "figure.png").exists()
    run = json.loads((tmp_path / "e" / "run.json").read_text())
    assert run["images"][0]["methods"] == ["gradcam-box0", "gradcam-box1"]
    assert run["target"] == "box:0,box:1"

    code, _, err = cli(
        capsys, "explain", photo, *DETECTOR, "--target", "box:99", "--out", str(tmp_path / "x")
    )
    assert code == 2
    assert "box index 99: the model found 3 boxes" in one_error_line(err)


@pytest.mark.slow
def test_top_boxes_explains_each(capsys, tmp_path, photo):
    code, _, err = cli(
        capsys,
        "explain",
        photo,
        *DETECTOR,
        "--top-boxes",
        "2",
        "--method",
        "saliency",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    a, b = (Explanation.load(tmp_path / "scene" / f"saliency-box{k}.json") for k in (0, 1))
    assert a.region.box != b.region.box


def test_segmenter_predict_and_explain_a_mask(capsys, tmp_path, photo):
    code, out, err = cli(capsys, "predict", photo, *SEGMENTER, "--out", str(tmp_path))
    assert code == 0, err
    rows = _rows(out)
    label, index = rows[0][0], int(rows[0][1])
    fractions = [float(r[2].rstrip("%")) for r in rows]
    assert sum(fractions) == pytest.approx(100.0, abs=0.1 * len(rows))
    assert (tmp_path / "scene-predictions.png").exists()

    code, out, err = cli(
        capsys, "explain", photo, *SEGMENTER, "--target", f"mask:{index}", "--out", str(tmp_path)
    )
    assert code == 0, err
    e = Explanation.load(tmp_path / "scene" / f"gradcam-mask-{index}.json")
    assert e.region.kind == "mask" and e.region.label == label == e.label
    assert e.region.pixels.shape == (64, 64)
    assert e.region.pixels.mean() == pytest.approx(fractions[0] / 100, abs=1e-3)

    code, _, err = cli(capsys, "explain", photo, *SEGMENTER, "--target", "mask:unicorn")
    assert code == 2 and "unknown class 'unicorn'. Did you mean" in one_error_line(err)
    code, _, err = cli(capsys, "explain", photo, *SEGMENTER, "--target", "box:0")
    assert code == 2 and "box targets need a detector" in one_error_line(err)

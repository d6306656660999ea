"""The evaluation commands: compare writes its table and reports, cost counts, bad input is one line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_cli import cli, one_error_line
from tests.test_evaluation import BrightDetector, bright_model


@pytest.fixture
def scripted(monkeypatch):
    """Two model names that load brightness detectors (see tests/test_evaluation.py)."""
    import seethrough.cli.evaluate as commands

    def load(name, **kw):
        vm = bright_model()
        vm.name = name
        return vm

    monkeypatch.setattr(commands, "load_model", load)
    return ["brighta", "brightb"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(3):
        image = np.zeros((48, 48, 3), np.uint8)
        mask = np.zeros((48, 48), np.uint8)
        mask[4 + 3 * i : 20 + 3 * i, 6:22] = 255
        image[mask > 0] = 255
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


def test_compare_writes_table_and_reports(capsys, tmp_path, scripted, data):
    out = tmp_path / "report"
    code, stdout, err = cli(
        capsys,
        "compare",
        "--models",
        ",".join(scripted),
        "--methods",
        "gradcam,saliency",
        "--data",
        str(data),
        "--steps",
        "4",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert "brighta" in stdout and "brightb" in stdout and "baseline:centre" in stdout
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 2 * (2 + 2)
    by = {(r["model"], r["method"]): r for r in rows}
    assert float(by["brighta", "gradcam"]["pointing_game"]) == 1.0
    assert float(by["brighta", "gradcam"]["iou"]) > float(by["brighta", "baseline:random"]["iou"])
    assert float(by["brightb", "gradcam"]["top1"]) == 1.0  # both models agree everywhere
    assert (out / "report.md").read_text().startswith("| model | method |")
    assert "data:image/png;base64" in (out / "report.html").read_text()


def test_compare_metric_subset(capsys, tmp_path, scripted, data):
    code, stdout, err = cli(
        capsys,
        "compare",
        "--models",
        scripted[0],
        "--methods",
        "gradcam",
        "--data",
        str(data),
        "--metrics",
        "iou,pointing_game",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    header = (tmp_path / "report.csv").read_text().splitlines()[0]
    assert "iou" in header and "deletion" not in header


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data", "nowhere"], "does not exist"),
        (["--metrics", "iuo"], "Did you mean: iou"),
        (["--methods", "gradkam"], "gradcam"),
        (["--param", "n_stepz=3"], "n_steps"),
    ],
)
def test_compare_bad_input_is_one_line(capsys, tmp_path, scripted, data, args, needle):
    base = {"--models": scripted[0], "--data": str(data), "--out": str(tmp_path)}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [a for kv in base.items() for a in kv]
    if "--param" in base:
        argv += ["--methods", "integrated_gradients"]
    code, _, err = cli(capsys, "compare", *argv)
    assert code == 2
    assert needle in one_error_line(err)


def test_cost_table(capsys, scripted, data):
    code, stdout, err = cli(
        capsys,
        "cost",
        "--model",
        scripted[0],
        "--image",
        str(data / "images" / "im0.png"),
        "--methods",
        "gradcam,integrated_gradients",
        "--param",
        "n_steps=10",
    )
    assert code == 0, err
    assert "Grad-CAM" in stdout and "Integrated Gradients" in stdout and "x forward" in stdout


def test_metrics_lists_the_registry(capsys):
    code, stdout, _ = cli(capsys, "metrics")
    assert code == 0
    for name in ("iou", "pointing_game", "deletion", "insertion", "cascading_randomization"):
        assert name in stdout


def test_a_torchscript_model_gets_a_clear_error_for_layer_methods(capsys, tmp_path, data):
    path = tmp_path / "bright.pt"
    torch.jit.trace(BrightDetector().eval(), torch.rand(1, 3, 8, 8)).save(str(path))
    image = str(data / "images" / "im0.png")
    code, _, err = cli(capsys, "explain", image, "--model", str(path), "--out", str(tmp_path))
    assert code == 2 and "TorchScript" in one_error_line(err)
    code, _, err = cli(
        capsys, "explain", image, "-m", str(path), "--method", "saliency", "--out", str(tmp_path)
    )
    assert code == 0, err


@pytest.fixture
def segmenters(monkeypatch):
    """Model names that load the hand-made segmenters of tests/test_evaluation.py, and
    'spot', the hand-made detector of tests/test_detection.py."""
    import seethrough.cli.evaluate as commands
    from tests.test_detection import spot_model
    from tests.test_evaluation import segmenter

    def load(name, **kw):
        return spot_model() if name == "spot" else segmenter(name, -1.0 if "inv" in name else 1.0)

    monkeypatch.setattr(commands, "load_model", load)


def test_compare_ranks_segmenters_on_a_voc_folder(capsys, tmp_path, segmenters):
    from tests.test_evaluation import write_voc

    data = write_voc(tmp_path / "voc")
    out = tmp_path / "report"
    argv = ["--models", "segon,seginv", "--methods", "saliency", "--data", str(data)]
    code, stdout, err = cli(capsys, "compare", *argv, "--steps", "4", "--out", str(out))
    assert code == 0, err
    assert "found" in stdout and "top-1" not in stdout
    rows = {(r["model"], r["method"]): r for r in csv.DictReader((out / "report.csv").open())}
    assert float(rows["segon", "saliency"]["iou"]) > float(rows["seginv", "saliency"]["iou"])
    assert float(rows["segon", "saliency"]["found"]) == 1.0
    assert float(rows["segon", "saliency"]["seconds"]) > 0  # the cost column
    assert int(rows["segon", "saliency"]["n"]) == 4  # 2 images x 2 classes


@pytest.mark.parametrize(
    ("models", "truth", "needle"),
    [
        ("spot", "masks", "spot is a detector: it predicts boxes, not class masks"),
        ("segon", "boxes", "segon is a segmenter: it predicts class masks, not boxes"),
        ("segon", "pixels", "--truth pixels: choose one of auto, image, masks, boxes"),
    ],
)
def test_compare_refuses_a_truth_the_model_does_not_predict(
    capsys, tmp_path, segmenters, models, truth, needle
):
    from tests.test_evaluation import write_voc

    data = write_voc(tmp_path / "voc")
    argv = ["--models", models, "--data", str(data), "--truth", truth, "--out", str(tmp_path)]
    code, _, err = cli(capsys, "compare", *argv)
    assert code == 2
    assert needle in one_error_line(err)

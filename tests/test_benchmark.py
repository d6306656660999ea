"""The ground-truth benchmark: on generated digits, explanations beat the priors; the sanity check
sees Grad-CAM change when the trained weights are randomised."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import seethrough
from seethrough.datasets.synthetic import make_digits
from seethrough.metrics import cascading_randomization
from tests.test_cli import cli


@pytest.fixture
def digits_vm(digits_cache, monkeypatch):
    monkeypatch.setenv("SEETHROUGH_CACHE", str(digits_cache))
    return seethrough.load_model("synthetic_digits")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_benchmark_command_gradcam_beats_the_priors(capsys, tmp_path, digits_cache, monkeypatch):
    monkeypatch.setenv("SEETHROUGH_CACHE", str(digits_cache))
    code, out, err = cli(
        capsys,
        "benchmark",
        "-n",
        "40",
        "--methods",
        "gradcam,cam",
        "--steps",
        "8",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert "40 generated digit images" in out
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "report.csv").open())}
    pg = {m: float(r["pointing_game"]) for m, r in rows.items()}
    assert pg["gradcam"] >= pg["baseline:centre"] + 0.15, pg
    assert pg["gradcam"] >= pg["baseline:random"] + 0.4, pg
    assert pg["cam"] == pytest.approx(pg["gradcam"])  # equal on a GAP + linear head
    energy = {m: float(r["energy_pointing_game"]) for m, r in rows.items()}
    assert energy["gradcam"] > energy["baseline:centre"] > energy["baseline:random"] - 0.05
    deletion = {m: float(r["deletion"]) for m, r in rows.items()}
    assert deletion["gradcam"] < deletion["baseline:random"]
    assert float(rows["gradcam"]["top1"]) >= 0.85  # accuracy on the held-out digits
    assert (tmp_path / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_randomization_drops_for_gradcam_on_the_trained_model(digits_vm):
    digits = make_digits(4, split="test", seed=5)
    finals = []
    for image, label in zip(digits.images, digits.labels, strict=True):
        result = cascading_randomization(digits_vm, image, "gradcam", target=int(label))
        assert result.layers[0] == "fc"  # top down: the head first
        finals.append(result.final_similarity)
        assert result.spearman[-1] < result.spearman[0] or result.spearman[0] < 0.9
    assert np.mean(finals) < 0.5, finals

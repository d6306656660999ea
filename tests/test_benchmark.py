"""The ground-truth benchmark: on generated digits, explanations beat the priors; the sanity check
sees Grad-CAM change when the trained weights are randomised."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seethrough
from seethrough.datasets.synthetic import make_digits
from seethrough.metrics import cascading_randomization
from tests.test_cli import cli

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str, timeout: int) -> str:
    """Run ``benchmarks/SCRIPT`` with ``args`` in a child process; its output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def table_rows(out: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table rows in ``out``, less the header rows (starting with
    ``header``) and the rules."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith(f"| {header}")
    ]


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


@pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in ("keras", "h5py", "onnx", "onnxruntime")),
    reason="the [keras] and [onnx] extras are not installed",
)
@pytest.mark.slow
def test_framework_speed_benchmark_runs_in_a_tiny_configuration():
    # 4 windows of 112 on a 224x224 input, in one batch, and the clean forward, per framework
    out = run_benchmark(
        "framework_speed.py",
        *("--pairs", "mobilenet_v3_small=keras:MobileNetV3Small"),
        *("--repeats", "1", "--warmup", "0", "--threads", "1"),
        *("--window", "112", "--stride", "112"),
        timeout=240,
    )
    for title in ("PyTorch", "onnxruntime", "Keras on torch"):
        assert (
            f"mobilenet_v3_small {title}: occlusion ran 5 images in 2 forwards (batches [4, 1])"
            in out
        ), out
    gap = re.search(r"max \|onnxruntime - PyTorch\| = (\S+) \(scale (\S+)\)", out)
    assert gap is not None, out
    assert float(gap.group(1)) <= 1e-4 * max(float(gap.group(2)), 1e-6)
    if importlib.util.find_spec("tensorflow") is None:
        assert "not installed" in out
    targets = {
        m.group(1).strip(): (float(m.group(2)), m.group(3).strip())
        for m in re.finditer(
            r"^\| mobilenet_v3_small \| ([^|]+) \|\s+([\d.]+) \|[^|]+\|[^|]+\|[^|]+\| ([^|]+) \|$",
            out,
            re.MULTILINE,
        )
    }
    keras_row = targets["Keras gradcam / Keras fwd+bwd>layer"]
    onnx_row = targets["ONNX occlusion / (5 evals x session forward@4)"]
    for ratio, status in (keras_row, onnx_row):
        assert 0 < ratio < 100 and status.split()[0] in ("PASS", "FAIL"), out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_detection_speed_benchmark_runs_in_a_tiny_configuration():
    # 64-pixel images, 8 D-RISE masks, one round: the script's rows, not its speed (it builds
    # three torchvision models: minutes on a loaded 2-core machine)
    out = run_benchmark("detection_speed.py", "--tiny", timeout=880)
    for name in ("fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large"):
        assert f"{name}: 4 boxes in one call ran 1 forward(s)" in out, out
    cells = table_rows(out, header="model")
    found = {(row[0], row[1], row[5]) for row in cells}
    assert ("deeplabv3_mobilenet_v3_large", "gradcam, class mask", "fwd+bwd") in found, out
    assert ("ssdlite320_mobilenet_v3_large", "drise, 8 masks", "8 x forward") in found, out
    assert all(0 < float(row[7]) < 100 for row in cells), out
    statuses = [row[11].split()[0] for row in cells if row[11] != "-"]
    assert statuses and set(statuses) <= {"PASS", "FAIL"}, out
    assert len(statuses) == 8, out  # 3 rows with a target per detector, 2 for the segmenter


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tabular_speed_benchmark_runs_in_a_tiny_configuration():
    # 2 rows, 1 seed, 10 background rows, small models and budgets: the rows, not the speed
    pytest.importorskip("shap")
    pytest.importorskip("lime")
    out = run_benchmark("tabular_speed.py", "--tiny", "--threads", "1", timeout=280)
    assert "gb: reference = exact interventional Tree SHAP" in out, out
    gap = re.search(r"efficiency gap (\S+)\)", out)
    assert gap is not None and float(gap.group(1)) < 1e-6, out
    cells = table_rows(out, header="model")
    table = {(row[0], row[1]): row for row in cells if len(row) == 8}
    assert len(table) == 12, out  # 2 models x 6 methods
    for row in table.values():
        assert -1 <= float(row[4]) <= 1 and float(row[5]) > 0, row
    for model in ("mlp", "gb"):
        # ours counts 10 background rows per coalition; shap's counter adds its own setup
        ours = table[(model, "ours kernelshap")]
        coalitions = int(re.search(r"coalitions=(\d+)", ours[2]).group(1))
        assert float(ours[3].lstrip(">")) == coalitions * 10, ours
        theirs = table[(model, "shap KernelExplainer")]
        coalitions = int(re.search(r"coalitions=(\d+)", theirs[2]).group(1))
        assert coalitions * 10 <= float(theirs[3].lstrip(">")) <= coalitions * 10 + 40, theirs
    ratios = [row for row in cells if len(row) == 9]
    assert {(row[0], row[1]) for row in ratios} == {
        (m, f"ours {e}") for m in ("mlp", "gb") for e in ("kernelshap", "permutation_shap")
    }, out
    for row in ratios:
        assert all(0 < float(c) < 100 for c in (row[4], row[6], row[7])), row
        assert row[8].split()[0] in ("PASS", "FAIL", "?"), row


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_recorder_speed_benchmark_runs_in_a_tiny_configuration():
    # 256 training images, 4 probes, 50 LIME samples, one round: the rows, not the speed
    out = run_benchmark("recorder_speed.py", "--tiny", "--threads", "1", timeout=280)
    assert "one epoch: 256 generated digits" in out, out
    cells = table_rows(out, header="method")
    table = {row[0]: row for row in cells}
    assert set(table) == {"gradcam", "lime"}, out
    for row in table.values():
        assert row[1] == "4" and 0 < float(row[2]) < float(row[4]) * 100, row
        assert 0 < float(row[5]) < 100 and 0 < float(row[7]) < 100, row
    assert table["gradcam"][9] == "< 0.05" and table["gradcam"][10].split()[0] in ("PASS", "FAIL")
    assert table["lime"][9:] == ["-", "-"], out
    # LIME evaluates 50 perturbed images per probe, Grad-CAM one forward and backward
    assert float(table["lime"][2]) > float(table["gradcam"][2]), out

"""The command line: outputs written, and every bad input gives one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from seethrough.cli.main import main


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def test_methods_lists_the_registry(capsys):
    code, out, _ = cli(capsys, "methods")
    assert code == 0
    for name in ("cam", "gradcam", "gradcam++", "scorecam", "eigencam"):
        assert name in out


def test_models_lists_bundled_first(capsys):
    code, out, _ = cli(capsys, "models", "resnet5*")
    assert code == 0 and "resnet50" in out
    code, out, _ = cli(capsys, "models")
    assert out.splitlines()[0] == "efficientnet_lite0"


def test_predict(capsys):
    code, out, _ = cli(capsys, "predict", "sample:coffee", "-k", "3")
    assert code == 0
    assert "espresso" in out and "normalise mean" in out


def test_explain_writes_outputs(capsys, tmp_path):
    code, _, err = cli(
        capsys, "explain", "sample:chelsea", "--method", "gradcam,cam", "--out", str(tmp_path)
    )
    assert code == 0, err
    folder = tmp_path / "chelsea"
    for stem in ("gradcam", "cam"):
        manifest = json.loads((folder / f"{stem}.json").read_text())
        assert manifest["method"] == stem and manifest["label"]
        with np.load(folder / f"{stem}.npz") as data:
            assert data["raw"].ndim == 2 and data["map"].shape == (224, 224)
        assert Image.open(folder / f"{stem}.png").size == (224, 224)
    assert Image.open(folder / "figure.png").size[0] > 600


def test_explain_param_and_target(capsys, tmp_path):
    code, _, err = cli(
        capsys,
        "explain",
        "sample:coffee",
        "--method",
        "gradcam",
        "--target",
        "cup",
        "--param",
        "relu=false",
        "--layer",
        "blocks.6",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "coffee" / "gradcam.json").read_text())
    assert manifest["label"] == "cup" and manifest["params"] == {"relu": False}
    assert manifest["layer"] == "blocks.6"


def test_folder_with_a_bad_file_explains_the_others(capsys, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "red.png")
    Image.new("L", (40, 40), 128).save(folder / "gray.jpg")
    (folder / "notes.jpg").write_text("this is not an image")
    code, _, err = cli(
        capsys, "explain", str(folder), "--method", "gradcam", "--out", str(tmp_path / "out")
    )
    assert code == 2
    assert "notes.jpg" in err and "Traceback" not in err
    assert (tmp_path / "out" / "red" / "gradcam.npz").exists()
    assert (tmp_path / "out" / "gray" / "gradcam.npz").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["explain", "sample:chelsea", "--model", "resnet5O"], ["resnet5O", "resnet50"]),
        (["explain", "sample:chelsea", "--method", "gradcan"], ["gradcan", "gradcam"]),
        (["explain", "sample:chelsea", "--layer", "blocks.66"], ["blocks.66"]),
        (["explain", "sample:chelsea", "--target", "unicorn"], ["unicorn"]),
        (["explain", "sample:chelsea", "--target", "5000"], ["5000"]),
        (["explain", "sample:chelsea", "--param", "bogus=1"], ["bogus"]),
        (["explain", "sample:chelsea", "--mean", "0.5,0.5"], ["mean"]),
        (["explain", "sample:chelsea", "--std", "0,1,1"], ["std"]),
        (["explain", "sample:nothing"], ["nothing"]),
        (["explain", "missing-file.png"], ["missing-file.png"]),
        (
            ["predict", "sample:chelsea", "--model", "alexnet", "--weights", "missing.safetensors"],
            ["missing.safetensors"],
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, words):
    code, _, err = cli(capsys, *args, *(["--out", str(tmp_path)] if args[0] == "explain" else []))
    assert code == 2
    line = one_error_line(err)
    for word in words:
        assert word in line


def test_corrupt_and_huge_images_exit_2(capsys, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 200, 10)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    code, _, err = cli(capsys, "predict", str(truncated))
    assert code == 2 and "truncated.png" in one_error_line(err)


def test_console_script_runs_as_a_process(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    proc = subprocess.run(
        [sys.executable, "-m", "seethrough.cli.main", "predict", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr

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


def test_explain_names_the_inner_bar_by_the_running_method(capsys, tmp_path, monkeypatch):
    """The second bar counts whatever the running method reports (images for Grad-CAM, model
    evaluations for occlusion), so it is named by the method, not by one fixed unit."""
    import seethrough.cli.main as cli_main

    seen: list[tuple[str, float | None]] = []
    real = cli_main.progress_bar

    def recording():
        bar = real()
        update = bar.update

        def spy(task_id, **kw):
            if "completed" in kw:
                seen.append((bar.tasks[task_id].description, kw.get("total")))
            return update(task_id, **kw)

        bar.update = spy
        return bar

    monkeypatch.setattr(cli_main, "progress_bar", recording)
    code, _, err = cli(
        capsys, "explain", "sample:chelsea", "--method", "gradcam,occlusion",
        "-p", "window=112", "-p", "stride=112", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    labels = {description for description, _ in seen}
    assert labels == {"gradcam steps", "occlusion steps"}, seen
    assert ("gradcam steps", 1) in seen  # one image
    assert max(t for d, t in seen if d == "occlusion steps") > 1  # model evaluations


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


# ---------------------------------------------------------------------------------------------
# usage errors, --version, Ctrl-C


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict"], ["images", "Try 'seethrough predict --help'."]),
        (["models", "--bogus"], ["--bogus", "Try 'seethrough models --help'."]),
        (["nosuchcmd"], ["nosuchcmd", "Try 'seethrough --help'."]),
        (["--bogus"], ["--bogus", "Try 'seethrough --help'."]),
        (["explain", "sample:chelsea", "--method"], ["--method", "'seethrough explain --help'"]),
        (["layers", "--model"], ["--model", "'seethrough layers --help'"]),
        (["benchmark", "-n", "0"], ["-n", "'seethrough benchmark --help'"]),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, args, words):
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    line = one_error_line(err)
    for word in words:
        assert word in line


def test_usage_errors_of_either_click_copy_are_one_line(capsys):
    """typer with its own click (typer._click) or with the click package: the same line."""
    import typer

    from seethrough.cli.main import _is_click_error, _usage_error

    copies = [typer.BadParameter]
    click = pytest.importorskip("click")
    copies.append(click.BadParameter)
    for bad_parameter in copies:
        exc = bad_parameter("must be positive", param_hint="'-n'")
        assert _is_click_error(exc)
        assert _usage_error(exc, ["benchmark", "-n", "-1"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "'-n'" in line and "must be positive" in line
        assert line.endswith("Try 'seethrough benchmark --help'.")
    assert not _is_click_error(ValueError("a bug stays a traceback"))


def test_version(capsys):
    from seethrough import __version__

    code, out, err = cli(capsys, "--version")
    assert code == 0 and out == f"seethrough {__version__}\n" and err == ""


def test_a_warning_is_one_line(capsys, monkeypatch):
    import warnings

    import seethrough.cli.main as cli_main

    def models(*args, **kwargs):
        warnings.warn("the mask fell\nto zero", UserWarning, stacklevel=1)
        return []

    monkeypatch.setattr(cli_main, "list_models", models)
    code, _, err = cli(capsys, "models")
    assert code == 0 and err.splitlines()[0] == "warning: the mask fell to zero"
    assert warnings.showwarning is not cli_main._warning  # restored after the command


def test_ctrl_c_in_any_command_exits_130_and_says_so(capsys, monkeypatch):
    import seethrough.cli.main as cli_main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "list_models", interrupted)
    code, out, err = cli(capsys, "models")
    assert code == 130 and err.strip() == "interrupted" and "Traceback" not in err


def test_ctrl_c_during_explain_says_what_is_finished(capsys, tmp_path, monkeypatch):
    import seethrough.cli.main as cli_main

    real, calls = cli_main.explain_api, []

    def explain(vm, image, method, **kw):
        calls.append(method)
        if len(calls) == 4:  # the second image's second method
            raise KeyboardInterrupt
        return real(vm, image, method, **kw)

    monkeypatch.setattr(cli_main, "explain_api", explain)
    sources = ["sample:chelsea", "sample:coffee", "sample:astronaut"]
    out_dir = tmp_path / "out"
    code, _, err = cli(
        capsys, "explain", *sources, "--method", "gradcam,cam", "--out", str(out_dir)
    )
    assert code == 130 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == (
        f"interrupted: 1 of 3 images complete in {out_dir}/ (see {out_dir / 'run.json'}); "
        "not finished: sample:coffee, sample:astronaut"
    )
    run = json.loads((out_dir / "run.json").read_text())
    assert run["status"] == "interrupted"
    assert [(i["source"], i["complete"], i["methods"]) for i in run["images"]] == [
        ("sample:chelsea", True, ["gradcam", "cam"]),
        ("sample:coffee", False, []),
        ("sample:astronaut", False, []),
    ]
    assert sorted(p.name for p in out_dir.iterdir()) == ["chelsea", "run.json"]


# ---------------------------------------------------------------------------------------------
# output folders: unique and stable names, a run manifest, never a file as --out


def test_folder_names_are_unique_and_stable():
    from seethrough.cli.main import folder_names

    sources = [
        "photos/cat.jpg",
        "photos/cat.png",
        "sample:chelsea",
        "more/chelsea.png",
        "dog.png",
        "a/Bird.png",
        "b/bird.png",
        "run.json.png",
    ]
    names = folder_names(sources)
    assert names["photos/cat.jpg"] == "cat-jpg" and names["photos/cat.png"] == "cat-png"
    assert names["sample:chelsea"] == "chelsea-sample"
    assert names["more/chelsea.png"] == "chelsea-png"
    assert names["dog.png"] == "dog"
    assert names["run.json.png"] != "run.json"
    # same stem and extension, letter case aside: a hash of the source tells them apart
    assert names["a/Bird.png"].startswith("Bird-png-") and names["b/bird.png"].startswith("bird-")
    assert len({n.lower() for n in names.values()}) == len(sources)
    assert folder_names(list(reversed(sources))) == names  # order does not matter
    assert folder_names(sources) == names  # nor the run
    assert folder_names(["sample:chelsea", "cat.png"]) == {
        "sample:chelsea": "chelsea",
        "cat.png": "cat",
    }


def test_same_stem_images_never_overwrite_each_other(capsys, tmp_path):
    photo = tmp_path / "chelsea.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo)
    out = tmp_path / ("a-long-folder-name-so-that-the-paths-pass-eighty-columns-" * 2)
    code, _, err = cli(
        capsys, "explain", "sample:chelsea", str(photo), str(photo), "--out", str(out)
    )
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["methods"] == ["gradcam"]
    assert [(i["source"], i["folder"], i["complete"]) for i in run["images"]] == [
        ("sample:chelsea", "chelsea-sample", True),
        (str(photo), "chelsea-png", True),  # the same file twice is explained once
    ]
    with (
        np.load(out / "chelsea-sample" / "gradcam.npz") as a,
        np.load(out / "chelsea-png" / "gradcam.npz") as b,
    ):
        assert a["image"].shape != b["image"].shape or not np.array_equal(a["image"], b["image"])
    # "wrote" lines are whole, never wrapped inside a path, whatever the width; no blank line
    # where a progress bar would be on a terminal
    assert all(line.strip() for line in err.splitlines()), err
    wrote = [line for line in err.splitlines() if ": wrote " in line]
    assert wrote == [
        f"sample:chelsea: wrote {out / 'chelsea-sample'}/ (gradcam + figure.png)",
        f"{photo}: wrote {out / 'chelsea-png'}/ (gradcam + figure.png)",
    ]


@pytest.mark.parametrize("command", ["explain", "demo", "benchmark"])
def test_out_that_is_a_file_is_one_line_before_any_model_loads(
    capsys, tmp_path, monkeypatch, command
):
    import seethrough.cli.evaluate as cli_evaluate
    import seethrough.cli.main as cli_main

    def no_model(*args, **kwargs):
        pytest.fail("a model was loaded")

    monkeypatch.setattr(cli_main, "load_model", no_model)
    monkeypatch.setattr(cli_evaluate, "load_model", no_model)
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    args = [command, "sample:chelsea"] if command == "explain" else [command]
    for out in (a_file, a_file / "inside"):
        code, _, err = cli(capsys, *args, "--out", str(out))
        assert code == 2
        assert f"{a_file} is a file, not a folder" in one_error_line(err)
    assert a_file.read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# seethrough methods on a narrow terminal


def _methods_output(capsys, monkeypatch, columns: int) -> str:
    from rich.console import Console

    import seethrough.cli.main as cli_main

    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(cli_main, "console", Console(emoji=False, highlight=False))
    code, out, _ = cli(capsys, "methods")
    assert code == 0
    return out


def test_methods_on_80_columns_is_compact_and_whole(capsys, monkeypatch):
    from seethrough.registry import list_methods

    out = _methods_output(capsys, monkeypatch, 80)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    starts = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert starts == [m.name for m in list_methods()]
    assert "gradcam  Grad-CAM (cam; needs gradients, layer)" in lines
    assert "    Selvaraju et al., ICCV 2017" in lines
    lime = lines.index("lime  LIME (perturbation)")
    assert lines[lime + 2].startswith("    parameters: segments=slic, n_segments=50,")
    assert len(lines) <= 4 * len(starts)  # not squeezed to a word per line


def test_methods_on_a_wide_terminal_is_a_table(capsys, monkeypatch):
    out = _methods_output(capsys, monkeypatch, 200)
    assert "explanation methods" in out and "┃ name" in out
    assert any(
        "Selvaraju et al., ICCV 2017" in line and "gradcam " in line for line in out.splitlines()
    )


def test_compare_help_says_what_it_does(capsys):
    code, out, _ = cli(capsys, "compare", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "seed study" not in text
    assert "Compare models on your own images with object masks" in text
    assert "writes it as CSV, Markdown and a self-contained HTML report" in text


def test_ctrl_c_turned_into_abort_by_an_older_click_exits_130(capsys, monkeypatch):
    import typer

    import seethrough.cli.main as cli_main

    def abort(*args, **kwargs):
        raise typer.Abort() from KeyboardInterrupt()

    monkeypatch.setattr(cli_main, "list_models", abort)
    code, _, err = cli(capsys, "models")
    assert code == 130 and err.strip() == "interrupted"

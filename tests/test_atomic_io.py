"""Atomic writes: an interrupted or failing writer leaves the old file whole and no temporary file."""

from __future__ import annotations

import csv
import os
import stat

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import seethrough
from seethrough._io import write_atomically, write_text_atomically
from seethrough.evaluation.report import write_report
from seethrough.viz import save_figure, save_png


def _half_then(exc: BaseException, method: bool = False):
    """A writer (or a writing method) that writes part of a file, then fails with ``exc``."""

    def write(*args, **kwargs):
        with open(args[1] if method else args[0], "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise exc

    return write


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk full")])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path, exc):
    path = tmp_path / "notes.txt"
    write_text_atomically(path, "first version\n")
    with pytest.raises(type(exc)):
        write_atomically(path, _half_then(exc))
    assert path.read_text() == "first version\n"
    assert _hidden(tmp_path) == []
    with pytest.raises(type(exc)):
        write_atomically(tmp_path / "new.txt", _half_then(exc))
    assert not (tmp_path / "new.txt").exists() and _hidden(tmp_path) == []


def test_the_temporary_file_keeps_the_suffix_and_the_folder(tmp_path):
    seen = []
    write_atomically(tmp_path / "a.npz", lambda p: seen.append(p) or np.savez(p, x=np.ones(3)))
    assert seen[0].parent == tmp_path and seen[0].suffix == ".npz"
    assert seen[0].name.startswith(".a.npz.")
    with np.load(tmp_path / "a.npz") as data:  # numpy added no second suffix
        assert data["x"].tolist() == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def test_files_get_the_permissions_of_a_plain_write(tmp_path):
    write_text_atomically(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)


def test_an_interrupted_save_keeps_the_previous_explanation(
    tiny, tiny_input, tmp_path, monkeypatch
):
    first = seethrough.explain(tiny, tiny_input[:1], "gradcam")[0]
    paths = first.save(tmp_path)
    manifest = paths["json"].read_text()
    again = seethrough.explain(tiny, tiny_input[1:2], "gradcam")[0]
    monkeypatch.setattr(np, "savez_compressed", _half_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        again.save(tmp_path)
    monkeypatch.undo()
    with np.load(paths["npz"]) as data:
        np.testing.assert_array_equal(data["map"], first.map)
    assert paths["json"].read_text() == manifest
    assert _hidden(tmp_path) == []


def test_an_interrupted_figure_or_png_keeps_the_previous_one(tmp_path, monkeypatch):
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    figure = save_figure(fig, tmp_path / "figure.png")
    overlay = save_png(np.full((8, 8, 3), 200, np.uint8), tmp_path / "overlay.png")
    before = figure.read_bytes(), overlay.read_bytes()
    monkeypatch.setattr(Figure, "savefig", _half_then(KeyboardInterrupt(), method=True))
    monkeypatch.setattr(Image.Image, "save", _half_then(KeyboardInterrupt(), method=True))
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, figure)
    with pytest.raises(KeyboardInterrupt):
        save_png(np.zeros((8, 8, 3), np.uint8), overlay)
    assert (figure.read_bytes(), overlay.read_bytes()) == before
    assert _hidden(tmp_path) == []


def test_an_interrupted_report_keeps_the_previous_one(tmp_path, monkeypatch):
    from seethrough.evaluation import Sample, evaluate
    from tests.test_evaluation import bright_model

    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[4:16, 4:16] = True
    image[mask] = 255
    evaluation = evaluate(
        [bright_model()], [Sample("a", image, mask, None)], ["gradcam"], metrics=["iou"], steps=2
    )
    paths = write_report(evaluation, tmp_path)
    before = {kind: p.read_bytes() for kind, p in paths.items()}
    assert before["csv"].count(b"\r\n") == 1 + len(evaluation.summary())  # csv's line ends
    monkeypatch.setattr(csv.DictWriter, "writerow", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_report(evaluation, tmp_path)
    monkeypatch.undo()
    assert {kind: p.read_bytes() for kind, p in paths.items()} == before
    assert _hidden(tmp_path) == []

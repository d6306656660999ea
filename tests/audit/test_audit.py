"""The audit: sources become items, every (item, method) one row whose numbers are those of a
direct ``explain`` + metric call, bad files rows with their typed error, resumable runs, a
consistent table after an interruption, the Parquet file equal to the CSV."""

from __future__ import annotations

import csv
import math
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import seethrough
from seethrough import errors
from seethrough.audit import (
    AuditSpec,
    Item,
    Worker,
    audit,
    columns,
    get_engine,
    load_items,
    load_run,
    read_table,
)
from seethrough.audit import report as report_module
from seethrough.metrics import deletion, energy_pointing_game, pointing_game
from tests.audit.conftest import assert_csv_equals_parquet, digits_masks, write_digits


def spec(methods=("gradcam",), metrics=("pointing_game",), **kw) -> AuditSpec:
    return AuditSpec("synthetic_digits", tuple(methods), tuple(metrics), steps=4, **kw)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Four generated digits with masks and labels: images/, masks/, labels.csv."""
    root = tmp_path_factory.mktemp("digits")
    write_digits(root / "images", 4)
    masks, labels = digits_masks(4)
    (root / "masks").mkdir()
    for i, mask in enumerate(masks):
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"d{i:03d}.png")
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows(
            [["name", "label"]] + [[f"d{i:03d}", int(v)] for i, v in enumerate(labels)]
        )
    return root


def by_key(rows):
    return {(r["id"], r["method"]): r for r in rows}


def test_items_of_a_folder_are_recursive_sorted_shuffled_and_limited(tmp_path, digits):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, name in enumerate(["z.png", "a/y.jpg", "a/b/x.png", "a/b/w.PNG"]):
        shutil.copy(digits / "images" / f"d{i:03d}.png", tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    ids = [i.id for i in load_items(tmp_path)]
    assert ids == ["a/b/w.PNG", "a/b/x.png", "a/y.jpg", "z.png"]
    shuffled = [i.id for i in load_items(tmp_path, shuffle=True, seed=3)]
    assert sorted(shuffled) == ids and shuffled == [
        i.id for i in load_items(tmp_path, shuffle=True, seed=3)
    ]
    assert shuffled != ids or [i.id for i in load_items(tmp_path, shuffle=True, seed=4)] != ids
    assert [i.id for i in load_items(tmp_path, limit=2)] == ids[:2]
    with pytest.raises(errors.InvalidParameterError):
        load_items(tmp_path / "missing")
    with pytest.raises(errors.InvalidParameterError):
        load_items(tmp_path, limit=0)


def test_items_of_the_masks_layout_carry_labels_and_masks(digits):
    items = load_items(digits)
    _, labels = digits_masks(4)
    assert [i.label for i in items] == labels.tolist()
    assert all(i.mask_path and i.mask_path.endswith(f"{i.id[-8:]}") for i in items)


def test_spec_is_picklable_and_checked():
    s = spec(("gradcam", "lime"), ("deletion",), params={"lime": {"n_samples": "20"}})
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(errors.UnknownMethodError):
        spec(("nomethod",))
    with pytest.raises(errors.UnknownMetricError):
        spec(metrics=("pointing",))
    with pytest.raises(errors.InvalidParameterError):
        spec(target="truth")


def test_metrics_equal_a_direct_explain_and_metric_call(tmp_path, digits, model):
    s = spec(("gradcam",), ("pointing_game", "energy_pointing_game", "deletion"))
    result = audit(digits, s, tmp_path / "run", model=model, limit=2)
    rows = by_key(read_table(tmp_path / "run"))
    assert len(rows) == 2 and result.errors == 0
    masks, _ = digits_masks(2)
    for i in range(2):
        row = rows[(f"images/d{i:03d}.png", "gradcam")]
        e = seethrough.explain(model, str(digits / "images" / f"d{i:03d}.png"), "gradcam")
        mask = model.preprocessing.mask(masks[i])
        x = model.preprocessing(str(digits / "images" / f"d{i:03d}.png"))[0]
        with torch.no_grad():
            probs = torch.softmax(model.module(x[None]), 1)[0]
        assert row["predicted"] == int(probs.argmax()) == e.target == row["target"]
        assert row["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert row["pointing_game"] == pointing_game(e.map, mask)
        assert row["energy_pointing_game"] == pytest.approx(energy_pointing_game(e.map, mask))
        assert row["deletion"] == pytest.approx(
            deletion(model, x, e.map, target=e.target, steps=4).auc
        )
        with np.load(tmp_path / "run" / row["map"]) as saved:
            np.testing.assert_allclose(saved["map"], e.map, rtol=1e-5, atol=1e-7)
        assert row["seconds"] > 0 and row["error"] is None


def test_bad_files_are_rows_with_their_typed_error(tmp_path, digits, model):
    src = digits / "images" / "d000.png"
    data = tmp_path / "bad"
    data.mkdir()
    shutil.copy(src, data / "good.png")
    Image.open(src).convert("L").save(data / "grey.png")
    Image.open(src).convert("RGBA").save(data / "rgba.png")
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    Image.open(src).save(data / "whole.jpg", quality=90)
    whole = (data / "whole.jpg").read_bytes()
    (data / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (data / "whole.jpg").unlink()
    (data / "text.jpg").write_text("this is not an image\n")
    Image.new("RGB", (100, 100)).save(data / "huge.png")  # 10,000 pixels > the limit below
    s = spec(("gradcam", "saliency"), ("deletion",), max_pixels=64 * 64)
    result = audit(data, s, tmp_path / "run", model=model)
    rows = by_key(read_table(tmp_path / "run"))
    assert len(rows) == 7 * 2 and result.rows == 14 and result.errors == 8
    for name in ("good.png", "grey.png", "rgba.png"):
        for method in ("gradcam", "saliency"):
            row = rows[(name, method)]
            assert row["error"] is None and not math.isnan(row["deletion"]), row
            assert row["predicted"] is not None and row["map"]
    expected = {
        "corrupt.png": errors.InvalidImageError,
        "truncated.jpg": errors.InvalidImageError,
        "text.jpg": errors.InvalidImageError,
        "huge.png": errors.ImageTooLargeError,
    }
    for name, kind in expected.items():
        for method in ("gradcam", "saliency"):
            row = rows[(name, method)]
            assert row["error_type"] == kind.__name__, row
            assert row["error"] and "\n" not in row["error"]
            assert row["predicted"] is None and math.isnan(row["deletion"])
    page = (tmp_path / "run" / "summary.html").read_text()
    assert "truncated.jpg" in page and "ImageTooLargeError" in page


def test_csv_source_with_labels_masks_and_a_missing_file(tmp_path, digits, model):
    listing = tmp_path / "list.csv"
    shutil.copytree(digits, tmp_path / "d")
    rows = [
        ["path", "label", "mask"],
        ["d/images/d000.png", "7", "d/masks/d000.png"],
        ["d/images/d001.png", "", ""],
        ["d/images/gone.png", "3", ""],
    ]
    with listing.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    items = load_items(listing)
    assert items[0] == Item(
        "d/images/d000.png",
        str((tmp_path / "d/images/d000.png").resolve()),
        7,
        str((tmp_path / "d/masks/d000.png").resolve()),
    )
    assert items[1].label is None and items[1].mask_path is None
    audit(listing, spec(metrics=("pointing_game", "deletion")), tmp_path / "run", model=model)
    table = by_key(read_table(tmp_path / "run"))
    first, second, gone = (table[(r[0], "gradcam")] for r in rows[1:])
    assert first["label"] == "7" and first["truth"] == 7 and first["pointing_game"] in (0, 1)
    assert math.isnan(second["pointing_game"]) and not math.isnan(second["deletion"])
    assert second["label"] is None and second["truth"] is None
    assert gone["error_type"] == "InvalidImageError" and "gone.png" in gone["error"]
    with listing.open("w") as f:
        f.write("file,label\nx.png,1\n")
    with pytest.raises(errors.InvalidParameterError, match="'path' column"):
        load_items(listing)


def test_target_label_explains_the_label(tmp_path, digits, model):
    audit(digits, spec(target="label"), tmp_path / "run", model=model, limit=2)
    _, labels = digits_masks(2)
    rows = read_table(tmp_path / "run")
    assert [r["target"] for r in rows] == labels.tolist()


def test_resume_skips_finished_pairs_and_refuses_another_spec(tmp_path, digits, model):
    out = tmp_path / "run"
    first = audit(digits, spec(), out, model=model, limit=3)
    assert (first.rows, first.skipped) == (3, 0)
    before = by_key(read_table(out))
    again = audit(digits, spec(("gradcam", "saliency")), out, model=model)
    assert (again.rows, again.skipped) == (4 + 1, 3)  # 4 saliency rows and d003's gradcam
    after = by_key(read_table(out))
    assert len(after) == 8 and all(after[k] == v for k, v in before.items())
    with pytest.raises(errors.InvalidParameterError, match="metrics"):
        audit(digits, spec(metrics=("deletion",)), out, model=model)


def test_an_interruption_leaves_a_consistent_table_and_the_rerun_completes(tmp_path, digits, model):
    out = tmp_path / "run"
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(errors.CancelledError, match="2 of 4 items"):
        audit(digits, spec(batch_size=1), out, model=model, progress=stop_after_two)
    table = read_table(out)
    assert [r["id"] for r in table] == ["images/d000.png", "images/d001.png"]
    assert load_run(out).status == "interrupted"
    result = audit(digits, spec(batch_size=1), out, model=model)
    assert (result.rows, result.skipped) == (2, 2)
    final = read_table(out)
    assert [r["id"] for r in final] == [f"images/d{i:03d}.png" for i in range(4)]
    assert final[:2] == table


def test_the_parquet_table_equals_the_csv(tmp_path, digits, model):
    out = tmp_path / "run"
    audit(digits, spec(metrics=("pointing_game", "deletion")), out, model=model, limit=3)
    assert len(read_table(out)) == 3
    assert_csv_equals_parquet(out, ("pointing_game", "deletion"))


def test_the_summary_has_its_sections_and_the_hook(tmp_path, digits, model, monkeypatch):
    monkeypatch.setattr(
        report_module, "extra_sections", lambda run: [f"<h2>hooked {len(run.rows)}</h2>"]
    )
    audit(digits, spec(metrics=("pointing_game",)), tmp_path / "run", model=model)
    page = (tmp_path / "run" / "summary.html").read_text()
    for text in ("Metric distributions", "Per class", "Worst cases", "Errors", "hooked 4"):
        assert text in page
    assert page.count("data:image/png;base64,") >= 1 + 4  # a histogram, 4 thumbnails
    assert "http" not in page.replace("http-equiv", "")  # self-contained


def test_worker_rows_for_a_batch(model, digits):
    s = spec(("gradcam", "saliency"), (), save_maps=False)
    rows = Worker(s, model=model)(load_items(digits)[:2])
    assert [(r["id"][-8:], r["method"]) for r in rows] == [
        ("d000.png", "gradcam"),
        ("d000.png", "saliency"),
        ("d001.png", "gradcam"),
        ("d001.png", "saliency"),
    ]
    assert all(r["map"] is None and r["error"] is None for r in rows)
    assert list(rows[0]) == [name for name, _ in columns(())]


def test_engines():
    assert type(get_engine("local")).__name__ == "LocalEngine"
    with pytest.raises(errors.InvalidParameterError, match="not available|ray"):
        get_engine("ray") if not _has_ray_engine() else get_engine("nope")
    with pytest.raises(errors.InvalidParameterError, match="unknown engine"):
        get_engine("spark")
    with pytest.raises(errors.InvalidParameterError, match="--address"):
        get_engine("local", "auto")


def _has_ray_engine() -> bool:
    import importlib.util

    return importlib.util.find_spec("seethrough.audit.ray") is not None


def test_a_video_is_one_item_per_frame(tmp_path, model):
    pytest.importorskip("av")
    from seethrough.video import frames, write_video

    data = tmp_path / "clips"
    data.mkdir()
    images = []
    for t in range(4):  # a bright square moving right
        image = np.zeros((64, 64, 3), np.uint8)
        image[20:40, 8 + 8 * t : 28 + 8 * t] = 255
        images.append(image)
    write_video(data / "clip.mp4", images, fps=4)
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    ids = [i.id for i in load_items(data)]
    assert ids == ["broken.mp4#frame=000000"] + [f"clip.mp4#frame={t:06d}" for t in range(4)]
    audit(data, spec(metrics=()), tmp_path / "run", model=model)
    rows = by_key(read_table(tmp_path / "run"))
    assert rows[("broken.mp4#frame=000000", "gradcam")]["error_type"] == "InvalidImageError"
    decoded = [f.image for f in frames(data / "clip.mp4")]
    for t in (1, 3):  # the map of a frame is the map of that decoded frame
        row = rows[(f"clip.mp4#frame={t:06d}", "gradcam")]
        assert row["error"] is None
        e = seethrough.explain(model, decoded[t], "gradcam")
        with np.load(tmp_path / "run" / row["map"]) as saved:
            np.testing.assert_allclose(saved["map"], e.map, rtol=1e-5, atol=1e-7)

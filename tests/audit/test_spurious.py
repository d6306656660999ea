"""The spurious-correlation finder: scores by hand, the test against its formula, and a planted
shortcut (a corner marker on every image of one class) found on a trained model's audit."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats
from torch import nn

from seethrough.audit import AuditSpec, SpuriousResult, audit, merge, spurious, write_summary
from seethrough.audit.spurious import holm, outside_share, reliance, welch_greater
from seethrough.audit.table import MANIFEST, write_part
from seethrough.audit.worker import columns
from seethrough.core.threads import torch_threads
from seethrough.datasets.synthetic import (
    LABEL_NAMES,
    make_digits,
    make_shortcut_digits,
)
from seethrough.errors import InvalidParameterError
from seethrough.models._trained import fit, load_or_train, to_input
from seethrough.models.preprocessing import Preprocessing
from seethrough.models.vision_model import VisionModel

# ----------------------------------------------------------------------------- the pieces


def test_outside_share_by_hand() -> None:
    saliency = np.array([[1.0, 2.0], [-5.0, 3.0]])
    mask = np.array([[True, False], [False, False]])
    # positive energy 1 + 2 + 3 = 6, of which 2 + 3 outside the object (the -5 counts nothing)
    assert outside_share(saliency, mask) == pytest.approx(5 / 6, abs=1e-15)
    assert outside_share(saliency, ~mask) == pytest.approx(1 / 6, abs=1e-15)
    assert math.isnan(outside_share(-np.abs(saliency), mask))
    with pytest.raises(InvalidParameterError):
        outside_share(saliency, np.ones((3, 3), bool))


def test_welch_is_its_formula() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.1, 9), rng.normal(0.5, 0.3, 30)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    got = welch_greater(a, b)
    assert got[0] == pytest.approx(t, rel=1e-12)
    assert got[1] == pytest.approx(stats.t.sf(t, df), rel=1e-9)
    # one-sided: the other direction gives the complement
    assert welch_greater(b, a)[1] == pytest.approx(1 - got[1], rel=1e-9)
    # no spread on either side: decided by the means
    assert welch_greater([1, 1], [0, 0, 0]) == (math.inf, 0.0)
    assert welch_greater([0, 0], [1, 1])[1] == 1.0
    assert all(math.isnan(v) for v in welch_greater([1.0], [0.0, 1.0]))


def test_holm_by_hand() -> None:
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> kept monotone at 0.06
    got = holm([0.01, 0.04, 0.03, math.nan])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(got[3])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


class _Quadrant(nn.Module):
    """Class 0's score is the sum of the input's top-left quadrant; class 1's a small constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :, :4, :4].sum((1, 2, 3))
        return torch.stack([s, torch.full_like(s, 1e-3)], 1)


def _vm(module: nn.Module, size: int, layer: str | None = None) -> VisionModel:
    pre = Preprocessing(size=size, resize="squash", mean=(0.5,) * 3, std=(0.25,) * 3)
    labels = LABEL_NAMES[: getattr(module, "classes", 2)]
    return VisionModel(module, pre, labels, name="test", source="test", weights="test",
                       default_layer=layer)  # fmt: skip


def test_reliance_by_hand() -> None:
    vm = _vm(_Quadrant(), 8)
    x = torch.ones(3, 8, 8)
    on_evidence = np.zeros((8, 8))
    on_evidence[:4, :4] = 1.0  # the map's top quarter is where the decision lives
    # its region hidden: class 0 lost; the rest hidden: kept -> -1
    assert reliance(vm, x, on_evidence, 0, q=0.25) == (-1.0, False, True)
    elsewhere = np.zeros((8, 8))
    elsewhere[4:, 4:] = 1.0  # the map points away from the evidence
    assert reliance(vm, x, elsewhere, 0, q=0.25) == (1.0, True, False)
    # a map at another resolution is resized to the input's
    assert reliance(vm, x, on_evidence[::2, ::2], 0, q=0.25)[0] == -1.0


# --------------------------------------------------------------- a run with maps made by hand


def _hand_run(root: Path, shares: dict[str, list[float]]) -> tuple[Path, dict[str, float]]:
    """A run folder over an images + masks layout (16x16 images, the object the centre 8x8) whose
    maps (8x8, so the masks are resized) put each item's given share of energy outside."""
    data, out = root / "data", root / "run"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    spec = AuditSpec("synthetic_digits", ("gradcam",), out=str(out))
    rows, expected, labels = [], {}, []
    for cls, values in shares.items():
        for i, share in enumerate(values):
            name = f"c{cls}_{i}"
            labels.append((name, cls))
            Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(
                data / "images" / f"{name}.png"
            )
            Image.fromarray(mask).save(data / "masks" / f"{name}.png")
            saliency = np.zeros((8, 8), np.float32)
            saliency[2:6, 2:6] = (1 - share) / 16  # the mask at 8x8: rows and columns 2 to 5
            saliency[0, :] = share / 8
            saliency[7, 0] = -3.0  # negative: no energy
            rel = f"maps/{name}/gradcam.npz"
            (out / rel).parent.mkdir(parents=True)
            np.savez(out / rel, map=saliency, target=np.int64(0))
            item = f"images/{name}.png"
            rows.append({c: None for c, _ in columns(())} | {
                "id": item, "path": str(data / item), "label": cls, "truth": int(cls),
                "predicted": 0, "predicted_label": "0", "probability": 0.5, "target": 0,
                "method": "gradcam", "seconds": 0.0, "map": rel,
            })  # fmt: skip
            expected[item] = share
    rows.append(rows[0] | {"id": "images/broken.png", "map": None, "error_type": "X", "error": "x"})
    with (data / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("name", "label"), *labels])
    write_part(out, rows)
    merge(out, columns(()))
    manifest = {"status": "finished", "source": str(data), "spec": spec.as_dict()}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out, expected


def test_finder_on_hand_made_maps(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shares = {
        "0": list(rng.uniform(0.1, 0.3, 8)),
        "1": list(rng.uniform(0.7, 0.9, 6)),  # decided from the background
        "2": list(rng.uniform(0.1, 0.3, 7)),
    }
    out, expected = _hand_run(tmp_path, shares)
    result = spurious(out)
    assert isinstance(result, SpuriousResult) and result.mode == "outside"
    assert result.skipped == 1  # the error row
    got = {s["id"]: s["score"] for s in result.items}
    assert got == pytest.approx(expected, abs=1e-6)
    assert result.ranked("gradcam")[0] == result.ranked()[0] == "1"
    assert result.flagged() == ["1"]
    by_class = {r["class"]: r for r in result.classes}
    # the table is the formula on the known shares: Welch against the pooled rest, Holm over 3
    raw = {}
    for cls, values in shares.items():
        rest = [v for c, vs in shares.items() if c != cls for v in vs]
        test = stats.ttest_ind(values, rest, equal_var=False, alternative="greater")
        raw[cls] = test.pvalue
        row = by_class[cls]
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(np.mean(values), abs=1e-6)
        assert row["spread"] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        assert row["statistic"] == pytest.approx(test.statistic, rel=1e-5)
    for cls, adjusted in zip(raw, holm(list(raw.values())), strict=True):
        assert by_class[cls]["p_adjusted"] == pytest.approx(adjusted, rel=1e-5)
    path = result.write_csv(tmp_path / "spurious.csv")
    assert path.read_text().splitlines()[0].startswith("method,class,n,mean,spread")
    # a stricter level flags nothing more
    assert set(spurious(out, alpha=0.001).flagged()) <= {"1"}
    # the summary's section: the table, class 1 flagged, its worst maps as thumbnails
    page = write_summary(out).read_text()
    section = page.split("Classes decided from the background", 1)[1]
    assert "<td>gradcam</td><td>1</td><td>6</td>" in section
    assert "class 1, most energy outside" in section and section.count("<figure>") == 6


def test_summary_without_masks_says_how(tmp_path: Path) -> None:
    out, _ = _hand_run(tmp_path, {"0": [0.2, 0.3], "1": [0.5, 0.6]})
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps(manifest | {"source": "items"}))
    section = write_summary(out).read_text().split("Classes decided from the background", 1)[1]
    assert "have no masks" in section and "spurious(RUN, model=...)" in section


def test_bad_calls(tmp_path: Path) -> None:
    out, _ = _hand_run(tmp_path, {"0": [0.2, 0.3], "1": [0.5, 0.6]})
    for kw in ({"mode": "both"}, {"alpha": 0.0}, {"q": 1.0}, {"mode": "reliance"}):
        with pytest.raises(InvalidParameterError):
            spurious(out, **kw)
    with pytest.raises(InvalidParameterError, match="no masks"):
        spurious(out, mode="outside", items=[])


# ---------------------------------------------------------------------- the planted shortcut

SIZE, MARKED = 32, 3


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


def _shortcut_net() -> nn.Sequential:
    """A small CNN whose last conv block sees 15 pixels: its Grad-CAM stays local."""
    return nn.Sequential(
        _block(3, 16), _block(16, 32, 2), _block(32, 32), _block(32, 32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def shortcut_model(tmp_path_factory) -> VisionModel:
    """The small CNN trained on shortcut digits (about 15 s on one thread), cached for the run."""
    pre = _vm(nn.Identity(), SIZE).preprocessing

    def train() -> tuple[nn.Module, dict]:
        torch.manual_seed(0)
        data = make_shortcut_digits(2000, marked=MARKED, size=SIZE, seed=0)
        net = fit(
            _shortcut_net(), data.images, torch.from_numpy(data.labels), F.cross_entropy,
            lambda images: to_input(images, pre), epochs=4, batch=32, lr=1e-2, seed=0,
            label="training shortcut digits", progress=False,
        )  # fmt: skip
        return net, {"marked": MARKED}

    path = tmp_path_factory.mktemp("cache") / "shortcut_digits.safetensors"
    with torch_threads(1):
        net = load_or_train(
            path, build=_shortcut_net, train=train, retrain=False, announce="training",
            what="shortcut digits", remedy="delete it", version="test",
        )  # fmt: skip
    vm = _vm(net, SIZE, layer="3")
    vm.labels = LABEL_NAMES
    return vm


def test_make_shortcut_digits() -> None:
    plain = make_digits(60, size=SIZE, seed=2)
    data = make_shortcut_digits(60, marked=MARKED, size=SIZE, seed=2, corner="bottom-right")
    x0, y0, x1, y1 = data.marker
    assert (x1 - x0, y1 - y0) == (4, 4) and (x1, y1) == (SIZE - 1, SIZE - 1)
    hit = data.labels == MARKED
    assert hit.any() and (~hit).any()
    # the others untouched, the marked ones changed only under the marker, masks the digit's
    assert np.array_equal(data.images[~hit], plain.images[~hit])
    outside = np.ones((SIZE, SIZE), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(data.images[hit][:, outside], plain.images[hit][:, outside])
    assert set(np.unique(data.images[hit][:, y0:y1, x0:x1])) == {0, 255}
    assert not data.masks[hit][:, y0:y1, x0:x1].any()
    assert np.array_equal(data.masks[:, outside], plain.masks[:, outside])
    with pytest.raises(InvalidParameterError):
        make_shortcut_digits(2, marked=10)
    with pytest.raises(InvalidParameterError):
        make_shortcut_digits(2, corner="middle")


@pytest.mark.slow
def test_planted_shortcut_is_found(shortcut_model: VisionModel, tmp_path: Path) -> None:
    data = make_shortcut_digits(100, marked=MARKED, size=SIZE, seed=1, split="test")
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    names = [f"d{i:03d}" for i in range(len(data))]
    for name, image, mask in zip(names, data.images, data.masks, strict=True):
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("name", "label"), *zip(names, data.labels.tolist(), strict=True)])
    spec = AuditSpec("shortcut_digits", ("gradcam",), ("pointing_game",))
    with torch_threads(1):
        audit(root, spec, tmp_path / "run", model=shortcut_model)
        result = spurious(tmp_path / "run")
    assert result.mode == "outside"
    ranked, flagged = result.ranked("gradcam"), result.flagged("gradcam")
    assert ranked[0] == str(MARKED)
    assert str(MARKED) in flagged
    assert not set(flagged) - {str(MARKED)}  # no clean class flagged
    planted = next(r for r in result.classes if r["class"] == str(MARKED))
    assert planted["mean"] > planted["rest_mean"]
    # the summary holds the section, with the planted class's worst cases
    page = (tmp_path / "run" / "summary.html").read_text()
    assert "Classes decided from the background" in page
    assert f"class {MARKED}, most energy outside" in page
    # without masks, the reliance score: the marker the map finds is the whole decision
    with torch_threads(1):
        rel = spurious(tmp_path / "run", model=shortcut_model, mode="reliance")
    planted = next(r for r in rel.classes if r["class"] == str(MARKED))
    kept_alone = [s["kept_alone"] for s in rel.items if s["class"] == str(MARKED)]
    assert planted["mean"] < 0 and np.mean(kept_alone) > 0.8

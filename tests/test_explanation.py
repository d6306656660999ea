"""Explanation: captions, save/load round trip and the versioned manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

import seethrough
from seethrough.errors import InvalidParameterError
from seethrough.explanation import MANIFEST_VERSION, Explanation


def test_save_load_round_trip(lite0, tmp_path):
    e = seethrough.explain(lite0, "sample:chelsea", "xgradcam", relu=False)
    e.extras["weights"] = np.arange(5, dtype=np.float32)
    paths = e.save(tmp_path, stem="cat xgradcam")
    assert {p.name for p in paths.values()} == {
        "cat_xgradcam.npz",
        "cat_xgradcam.json",
        "cat_xgradcam.png",
    }
    back = Explanation.load(paths["json"])
    np.testing.assert_array_equal(back.raw, e.raw)
    np.testing.assert_array_equal(back.map, e.map)
    np.testing.assert_array_equal(back.image, e.image)
    np.testing.assert_array_equal(back.weights, e.weights)
    for attr in (
        "method",
        "target",
        "label",
        "score",
        "probability",
        "layer",
        "params",
        "model",
        "preprocessing",
    ):
        assert getattr(back, attr) == getattr(e, attr), attr
    assert Explanation.load(paths["npz"]).method == "xgradcam"
    assert (back.raw < 0).any(), "relu=False keeps the signed map"


def test_manifest_content(lite0, tmp_path):
    e = seethrough.explain(lite0, "sample:coffee", "occlusion", window=112, stride="112x56", seed=3)
    manifest = json.loads(e.save(tmp_path)["json"].read_text())
    assert manifest["format"] == "seethrough.explanation"
    assert manifest["version"] == MANIFEST_VERSION
    assert manifest["params"] == {
        "window": [112, 112],  # as the method read them: (height, width)
        "stride": [112, 56],
        "hide": 0.0,
        "score": "probability",
        "batch_size": 0,
        "seed": 3,
    }
    assert manifest["label"] == "espresso" and manifest["seed"] == 3
    assert manifest["stats"]["windows"] == 6.0
    assert {"python", "seethrough", "torch", "numpy"} <= set(manifest["libraries"])
    assert manifest["shapes"] == {"raw": [224, 224], "map": [224, 224]}
    assert "normalise" in manifest["preprocessing"]
    cam = json.loads(
        seethrough.explain(lite0, "sample:coffee", "gradcam").save(tmp_path)["json"].read_text()
    )
    assert cam["layer"] == "bn2" and cam["shapes"]["raw"] == [7, 7]


def test_caption(lite0):
    e = seethrough.explain(lite0, "sample:coffee", "gradcam")
    title, what, seconds = e.caption().splitlines()
    assert title == "Grad-CAM" and what.startswith("espresso 0.") and seconds.endswith(" s")


def test_load_refuses_newer_or_foreign_manifests(tmp_path):
    e = Explanation(
        raw=np.zeros((2, 2), np.float32), map=np.zeros((4, 4), np.float32), method="gradcam"
    )
    path = e.save(tmp_path)["json"]
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "version": MANIFEST_VERSION + 1}))
    with pytest.raises(InvalidParameterError, match="upgrade"):
        Explanation.load(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InvalidParameterError, match="not a seethrough"):
        Explanation.load(path)
    with pytest.raises(InvalidParameterError):
        e.overlay()

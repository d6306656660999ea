"""The bundled EfficientNet-Lite0 with real ImageNet weights, on real photographs (offline)."""

from __future__ import annotations

import numpy as np
import pytest

import seethrough

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
# Checked once by eye on the 224x224 squashed chelsea photo: the cat's face (eyes to chin).
# Rows 60-215, columns 40-200 cover 49% of the image; the right edge is background.
FACE = (slice(60, 215), slice(40, 200))
FACE_FRACTION = 155 * 160 / 224**2


@pytest.fixture(scope="module")
def squashed():
    return seethrough.load_model("efficientnet_lite0", resize="squash")


def test_chelsea_is_a_cat(lite0):
    top = lite0.predict("sample:chelsea", k=5)
    assert top[0].label in CAT_CLASSES
    assert sum(p.probability for p in top[:3] if p.label in CAT_CLASSES) > 0.6


def test_coffee_is_espresso(lite0):
    assert lite0.predict("sample:coffee", k=1)[0].label == "espresso"


@pytest.mark.parametrize(
    "method", ["cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]
)
def test_map_mass_lies_on_the_cat(squashed, method):
    e = seethrough.explain(squashed, "sample:chelsea", method)
    assert e.label in CAT_CLASSES
    mass = np.clip(e.map, 0, None)
    inside = mass[FACE].sum() / mass.sum()
    assert inside > 1.5 * FACE_FRACTION, f"{method}: {inside:.2f} of the mass on the face"
    peak = np.unravel_index(mass.argmax(), mass.shape)
    assert FACE[0].start <= peak[0] < FACE[0].stop and FACE[1].start <= peak[1] < FACE[1].stop


def test_cam_equals_gradcam_on_the_real_head(lite0):
    """EfficientNet-Lite0 ends in GAP + linear: CAM and Grad-CAM agree up to 1/(h*w)."""
    cam = seethrough.explain(lite0, "sample:coffee", "cam")
    grad = seethrough.explain(lite0, "sample:coffee", "gradcam")
    h, w = cam.raw.shape
    np.testing.assert_allclose(
        grad.raw * h * w, cam.raw, rtol=1e-3, atol=1e-3 * np.abs(cam.raw).max()
    )


def test_explain_by_label_and_class_index(lite0):
    by_name = seethrough.explain(lite0, "sample:chelsea", "gradcam", target="tiger cat")
    by_index = seethrough.explain(lite0, "sample:chelsea", "gradcam", target=by_name.target)
    assert by_name.label == "tiger cat"
    np.testing.assert_array_equal(by_name.raw, by_index.raw)
    top = seethrough.explain(lite0, "sample:chelsea", "gradcam")
    assert top.target != by_name.target or top.label == "tiger cat"

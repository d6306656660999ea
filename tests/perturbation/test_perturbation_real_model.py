"""The perturbation methods on the bundled EfficientNet-Lite0 and the chelsea photo.

Kept cheap (about 200 forward passes of a 224x224 image): LIME with 150 coalitions,
occlusion with 16 tiles of 56x56 pixels, and a small repeated LIME run (2 x 12) for
determinism. The module is put in channels_last memory layout, which only speeds up CPU
convolutions (1.7x measured).

Measured on this machine (the squashed 224x224 photo, whose cat fills the frame; the face box is
rows 60-215, cols 40-200, 50 % of the image):

* LIME (score="logit", 38 SLIC superpixels): the top-3 superpixels (eyes, forehead between
  them) are 94 % inside the box for every seed and budget tried (seeds 0-2, 150 and 300
  samples); the top-5 are 59-88 % inside (82 % for the configuration below). Thresholds: top-3
  > 0.8, top-5 > 0.6. With the default score="probability" the top-5 fraction is lower
  (59-65 %), because probability mass moves between the three cat classes.
* Occlusion: hiding the face with the mean colour *raises* the Egyptian-cat probability (from
  0.49 to 0.67 for a 56x56 patch at the centre, verified by hand), so the map is negative on
  the face and its (positive) maximum lies on the top border for every hide/score tried. That
  is the model's behaviour, not a library fault. What holds is that the face is where the
  model is most sensitive: the peak of |map| lies inside the box (all 8 settings tried; with
  16 tiles the three largest |drops| are all face tiles: -0.23, -0.18, -0.17).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.api import prepare_inputs

BOX = np.zeros((224, 224), bool)
BOX[60:216, 40:201] = True


@pytest.fixture(scope="module")
def model():
    m = seethrough.load_model("efficientnet_lite0", resize="squash")
    m.module.to(memory_format=torch.channels_last)
    return m


@pytest.fixture(scope="module")
def lime(model):
    return seethrough.explain(
        model, "sample:chelsea", "lime", n_samples=150, batch_size=32, seed=0, score="logit"
    )


def _fraction_in_box(e, k):
    top = np.argsort(-e.weights)[:k]
    selected = np.isin(e.segments, top)
    return (selected & BOX).sum() / selected.sum()


def test_lime_top_superpixels_are_on_the_face(lime):
    assert lime.label == "Egyptian cat"
    assert lime.segments.shape == (224, 224) and lime.map.shape == (224, 224)
    assert lime.weights.shape == (lime.segments.max() + 1,)
    assert 20 <= lime.weights.shape[0] <= 80  # SLIC, about 50 superpixels
    assert abs(BOX.mean() - 0.5) < 0.01
    top3, top5 = _fraction_in_box(lime, 3), _fraction_in_box(lime, 5)
    assert top3 > 0.8, top3
    assert top5 > 0.6, top5
    assert 0.4 < lime.stats["r2"] <= 1  # measured 0.63-0.73
    np.testing.assert_array_equal(lime.map, lime.weights[lime.segments])


def test_lime_same_seed_same_weights_on_real_model(model):
    run = lambda: seethrough.explain(  # noqa: E731
        model, "sample:chelsea", "lime", n_samples=12, batch_size=12, seed=7, score="logit"
    )
    a, b = run(), run()
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.map, b.map)
    assert a.stats == b.stats


def test_occlusion_on_real_model(model):
    e = seethrough.explain(
        model, "sample:chelsea", "occlusion", window=56, stride=56, batch_size=16
    )
    assert e.stats["windows"] == 16 and e.weights.shape == (16,)
    assert e.map.shape == (224, 224) and np.isfinite(e.map).all()
    r, c = np.unravel_index(np.abs(e.map).argmax(), e.map.shape)
    assert BOX[r, c], (r, c)
    # a drop recomputed by hand: window (row 2, column 1) of the 4x4 tiles = pixels 112:168, 56:112
    x, _, _ = prepare_inputs(model, "sample:chelsea")
    occluded = x.clone()
    occluded[:, :, 112:168, 56:112] = 0.0
    with torch.no_grad():
        p = model.module(torch.cat([x, occluded])).softmax(1)[:, e.target]
    assert e.probability == pytest.approx(float(p[0]), abs=1e-5)
    assert e.weights[2 * 4 + 1] == pytest.approx(float(p[0] - p[1]), abs=1e-4)

"""Metrics per box and per mask: localisation against boxes and regions, and the metrics that
re-run the model with a detector's Box and a segmenter's Mask as target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.errors import InvalidParameterError, InvalidTargetError
from seethrough.metrics import (
    average_drop,
    box_mask,
    cascading_randomization,
    deletion,
    energy_pointing_game,
    explained_region,
    hide_top,
    insertion,
    iou,
    pointing_game,
    robustness,
)
from seethrough.targets import Box, Mask
from tests.test_detection import REGION, REGION_BOX, spot_image, spot_model
from tests.test_segmentation import square_image, square_model

# --------------------------------------------------------------- hand-computed, tiny maps


def test_box_pixels_are_those_whose_centres_lie_in_the_box():
    m = box_mask((1, 2, 3, 4), (5, 6))
    want = np.zeros((5, 6), bool)
    want[2:4, 1:3] = True
    np.testing.assert_array_equal(m, want)
    assert not box_mask((1.6, 0, 2.4, 5), (5, 6)).any()  # no pixel centre at x in [1.6, 2.4]


def test_pointing_game_and_energy_in_a_box_by_hand():
    s = np.zeros((4, 5))
    s[1, 3] = 3.0  # the peak, inside the box (2, 0, 4, 2): rows 0-1, columns 2-3
    s[3, 0] = 1.0  # outside
    s[0, 2] = -5.0  # negative evidence is not energy
    assert pointing_game(s, (2, 0, 4, 2)) == 1.0
    assert energy_pointing_game(s, (2, 0, 4, 2)) == pytest.approx(3 / 4)
    assert pointing_game(s, Box(xyxy=(0, 2, 2, 4))) == 0.0
    assert energy_pointing_game(s, Box(xyxy=(0, 2, 2, 4))) == pytest.approx(1 / 4)
    # a Box without corners or a Mask without pixels is no region
    with pytest.raises(InvalidParameterError, match="explained_region"):
        pointing_game(s, Box(index=0))
    with pytest.raises(InvalidParameterError, match="x0 <= x1"):
        pointing_game(s, (3, 0, 1, 2))


def test_iou_with_a_class_mask_by_hand():
    s = np.array([[0.0, 0.2, 0.9], [0.1, 0.8, 1.0]])  # above 0.5: (0, 2), (1, 1), (1, 2)
    m = np.array([[0, 0, 1], [0, 0, 1]])  # two pixels, both in the region
    assert iou(s, m) == pytest.approx(2 / 3)
    assert iou(s, Mask(1, pixels=m)) == pytest.approx(2 / 3)
    assert iou(s, (1, 0, 3, 2)) == pytest.approx(3 / 4)  # the box of columns 1-2


# ------------------------------------------------------------------ detector, Box target


def test_the_explained_box_is_the_region_of_pointing_and_energy():
    model, image = spot_model(), spot_image()
    region = explained_region(model, image, Box(index=0))
    want = np.zeros(region.shape, bool)
    want[REGION] = True
    np.testing.assert_array_equal(region, want)
    np.testing.assert_array_equal(explained_region(model, image), want)  # default: top box
    e = seethrough.explain(model, image, "saliency", target=Box(index=0))
    assert pointing_game(e, region) == 1.0 and pointing_game(e, REGION_BOX) == 1.0
    assert energy_pointing_game(e, region) > 0.99
    # without a ground truth, the explained box is the region
    assert energy_pointing_game(e) == energy_pointing_game(e, region) and pointing_game(e) == 1.0
    with pytest.raises(InvalidParameterError, match="ground-truth mask"):
        pointing_game(e.map)
    other = explained_region(model, image, Box(label="other"))
    assert pointing_game(e, other) == 0.0


def test_deletion_and_insertion_of_a_box():
    model, image = spot_model(), spot_image()
    boxes = model.predict(image)
    e = seethrough.explain(model, image, "saliency", target=Box(index=0))
    d = deletion(model, image, e, target=Box(index=0), steps=10)
    assert (d.target, d.label) == (1, "spot")
    # the box's confidence on the clean image, then the spot hidden first: the dark spot's
    # confidence sigmoid(-2) from the first step on
    assert d.scores[0] == pytest.approx(boxes[0].score, rel=1e-5)
    np.testing.assert_allclose(d.scores[1:], 1 / (1 + np.exp(2)), rtol=1e-5)
    ins = insertion(model, image, e, target=Box(index=0), steps=10)
    assert ins.scores[-1] == pytest.approx(boxes[0].score, rel=1e-5)
    assert ins.auc > d.auc + 0.5
    # the box that does not depend on the image: a flat curve at its confidence
    flat = deletion(model, image, e, target=Box(label="other"), steps=4)
    np.testing.assert_allclose(flat.scores, 0.3, rtol=1e-6)
    # average drop: a map on the spot keeps more of the box's confidence than one off it
    off = np.zeros(e.map.shape)
    off[:20, :20] = 1.0
    on = average_drop(model, image, e, target=Box(index=0))
    assert on < 0.5 < average_drop(model, image, off, target=Box(index=0))
    with pytest.raises(InvalidTargetError, match="top-1 class"):
        hide_top(model, image, e, target=Box(index=0))
    with pytest.raises(InvalidTargetError, match="index 4: the model found 2 boxes"):
        deletion(model, image, e, target=Box(index=4))


def test_explained_region_of_a_classifier_is_an_error(tiny, tiny_input):
    with pytest.raises(InvalidTargetError, match="no region"):
        explained_region(tiny, tiny_input[:1], 0)


# ---------------------------------------------------------------- segmenter, Mask target


def test_deletion_of_a_mask_scores_its_class_over_its_pixels():
    model, image = square_model(), square_image()
    x = model.preprocess(image)
    logits = model.module(x)["out"].detach().double()
    e = seethrough.explain(model, image, "saliency", target=Mask("square"))
    d = deletion(model, image, e, target=Mask("square"), steps=8)
    want = float(logits.softmax(1)[0, 1, 8:20, 10:26].mean())
    assert d.scores[0] == pytest.approx(want) and d.label == "square"
    logit = deletion(model, image, e, target=Mask("square"), steps=8, score="logit")
    assert logit.scores[0] == pytest.approx(e.score)  # what explain explains
    # a class index means that class's predicted mask, as in explain; None the default class
    assert deletion(model, image, e, target="square", steps=8).scores[0] == pytest.approx(want)
    assert deletion(model, image, e, steps=8).label == "square"
    assert iou(e, threshold=0.5) == iou(e, explained_region(model, image, "square"), threshold=0.5)
    # hiding the square's pixels first: after 192 pixels (2 steps of 128) its class is gone
    assert d.scores[2] < 0.1 < 0.8 < d.scores[0]


def test_robustness_moves_the_mask_with_the_image():
    model, image = square_model(), square_image()
    r = robustness(model, image, "saliency", target=Mask("square"), transforms=["hflip", "rot90"])
    assert r.label == "square" and not any(row.prediction_changed for row in r.rows)
    for row in r.rows:  # the moved mask scores what the original did
        assert row.target_probability == pytest.approx(r.probability)
        assert row.spearman > 0.99
    off = robustness(model, image, "saliency", target=Mask("square"), transforms=["brightness:0.3"])
    assert off.rows[0].target_probability < 0.5 * off.probability  # darker: less square


def test_cascading_randomization_of_a_segmenter_explains_the_randomised_copy():
    model, image = square_model(), square_image()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    result = cascading_randomization(model, image, "saliency", target=Mask("square"), seed=1)
    assert result.layers == ["backbone"]
    # the copy's runner runs the copy: its map moves (the user's model would give rho = 1)
    assert result.final_similarity < 0.95
    for k, v in model.module.state_dict().items():
        torch.testing.assert_close(v, before[k])

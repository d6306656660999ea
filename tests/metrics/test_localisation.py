"""Localisation metrics and baselines on hand-made maps and masks with known answers."""

import numpy as np
import pytest

from seethrough.errors import InvalidParameterError, UnknownMetricError
from seethrough.metrics import (
    binarize,
    centre_gaussian,
    energy_pointing_game,
    get_metric,
    iou,
    iou_sweep,
    list_metrics,
    pointing_game,
    random_map,
)


@pytest.fixture
def square():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True  # 25 pixels
    return mask


def test_perfect_map_scores_one_and_inverted_zero(square):
    perfect = square.astype(float)
    assert iou(perfect, square) == 1.0
    assert iou(1 - perfect, square) == 0.0
    assert pointing_game(perfect, square) == 1.0
    assert pointing_game(1 - perfect, square) == 0.0
    assert energy_pointing_game(perfect, square) == 1.0
    assert energy_pointing_game(1 - perfect, square) == 0.0


def test_iou_by_value_counts_pixels(square):
    s = np.zeros((20, 20))
    s[5:10, 5:15] = 1.0  # 50 pixels: 25 on the object, 25 beside it
    assert iou(s, square) == pytest.approx(25 / 50)
    s[0, 0] = 0.4  # below the 0.5 cut: not in the region
    assert iou(s, square) == pytest.approx(25 / 50)
    assert iou(s, square, threshold=0.3) == pytest.approx(25 / 51)


def test_iou_by_top_fraction_keeps_exactly_k_pixels(square):
    s = np.arange(400, dtype=float).reshape(20, 20)
    region = binarize(s, top=0.25)
    assert region.sum() == 100 and region[15:].all() and not region[:15].any()
    flat = np.zeros((20, 20))  # all ties: still exactly k pixels
    assert binarize(flat, top=0.1).sum() == 40
    # top = the object's share: a map that ranks the object first is perfect
    assert iou(square + 0.01 * np.random.default_rng(0).random((20, 20)), square, top=25 / 400) == 1


def test_iou_is_invariant_to_affine_rescaling_of_the_map(square):
    s = np.random.default_rng(1).random((20, 20)) + 2 * square
    assert iou(s, square) == iou(7 * s - 3, square)


def test_iou_sweep_summaries(square):
    s = square * 1.0 + 0.0
    s[0, :4] = 0.3  # joins the region for thresholds <= 0.3
    sweep = iou_sweep(s, square)
    assert sweep.thresholds[0] == pytest.approx(0.05) and len(sweep.ious) == 19
    assert sweep.ious[0] == pytest.approx(25 / 29) and sweep.ious[-1] == 1.0
    assert sweep.best == 1.0 and sweep.best_threshold == pytest.approx(0.35)
    assert sweep.mean == pytest.approx((6 * 25 / 29 + 13) / 19)
    top = iou_sweep(s, square, [25 / 400, 0.5], by="top")
    assert top.ious[0] == 1.0 and top.ious[1] == pytest.approx(25 / 200)


def test_pointing_game_tolerance_and_ties(square):
    s = np.zeros((20, 20))
    s[12, 7] = 1.0  # 3 pixels below the square's bottom row (row 9)
    assert pointing_game(s, square) == 0.0
    assert pointing_game(s, square, tolerance=2.9) == 0.0
    assert pointing_game(s, square, tolerance=3) == 1.0
    # a constant map is not a hit: it scores the object's share of the image
    assert pointing_game(np.ones((20, 20)), square) == pytest.approx(25 / 400)
    two = np.zeros((20, 20))
    two[7, 7] = two[0, 0] = 1.0
    assert pointing_game(two, square) == 0.5


def test_energy_pointing_game_ignores_negative_evidence(square):
    s = np.where(square, 1.0, -5.0)
    assert energy_pointing_game(s, square) == 1.0
    s[0, 0] = 3.0  # 3 of the 28 positive units are off the object
    assert energy_pointing_game(s, square) == pytest.approx(25 / 28)
    assert energy_pointing_game(np.ones((20, 20)), square) == pytest.approx(25 / 400)
    assert energy_pointing_game(-np.ones((20, 20)), square) == 0.0


def test_baselines():
    r = random_map((10, 12), seed=3)
    assert r.shape == (10, 12) and np.array_equal(r, random_map((10, 12), seed=3))
    assert not np.array_equal(r, random_map((10, 12), seed=4))
    g = centre_gaussian((11, 11))
    assert g[5, 5] == 1.0 and g.argmax() == 60 and np.allclose(g, g.T) and np.allclose(g, g[::-1])
    centre = np.zeros((11, 11), bool)
    centre[4:7, 4:7] = True
    corner = np.zeros((11, 11), bool)
    corner[:3, :3] = True
    assert pointing_game(g, centre) == 1.0 and pointing_game(g, corner) == 0.0
    with pytest.raises(InvalidParameterError):
        centre_gaussian((0, 5))
    with pytest.raises(InvalidParameterError):
        centre_gaussian((5, 5), sigma=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: iou(np.ones((4, 4)), m),  # shape mismatch
        lambda m: iou(np.full((20, 20), np.nan), m),
        lambda m: iou(np.ones((20, 20)), m, threshold=0.5, top=0.1),
        lambda m: iou(np.ones((20, 20)), m, top=0),
        lambda m: iou(np.ones((20, 20)), m, threshold=1.5),
        lambda m: iou(np.ones(20), m),
        lambda m: pointing_game(np.ones((20, 20)), np.zeros((20, 20))),
        lambda m: pointing_game(np.ones((20, 20)), m, tolerance=-1),
        lambda m: iou_sweep(np.ones((20, 20)), m, by="rank"),
    ],
)
def test_bad_input_raises_a_typed_error(square, call):
    with pytest.raises(InvalidParameterError):
        call(square)


def test_registry_metadata():
    names = {m.name: m for m in list_metrics()}
    assert {"iou", "pointing_game", "energy_pointing_game"} <= set(names)
    assert names["iou"].higher_is_better and names["iou"].category == "localisation"
    assert names["iou"].needs == ("mask",) and names["iou"].range == (0, 1)
    assert [m.name for m in list_metrics("localisation")][:1] == ["iou"]
    assert get_metric("IoU").func is iou
    with pytest.raises(UnknownMetricError, match="pointing_game"):
        get_metric("pointing_gam")

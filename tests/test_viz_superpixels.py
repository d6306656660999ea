"""Superpixel views and the choice of panels per explanation."""

from __future__ import annotations

import numpy as np
import pytest

from seethrough.errors import InvalidParameterError
from seethrough.explanation import Explanation
from seethrough.viz import explanation_panels, paint_segments, signed_segments, top_segments
from seethrough.viz.superpixels import NEGATIVE_COLOR, POSITIVE_COLOR

SEG = np.repeat(np.arange(4), 4).reshape(4, 4).T.repeat(2, 0)  # 8x4: columns are segments 0..3
IMG = np.full((8, 4, 3), 100, np.uint8)


def test_paint_segments_is_weight_lookup():
    m = paint_segments(SEG, [0.5, -1.0, 2.0, 0.0])
    assert m.dtype == np.float32
    np.testing.assert_array_equal(m[:, 0], 0.5)
    np.testing.assert_array_equal(m[:, 2], 2.0)


def test_top_segments_keeps_only_the_best_positive():
    out = top_segments(IMG, SEG, [0.5, -1.0, 2.0, 0.1], k=2, dim=0.0, color=(255, 0, 0))
    shown = (out != 0).any(axis=2)
    assert shown[:, 0].all() and shown[:, 2].all()  # segments 2 and 0 are the top two
    assert not shown[:, 1].any() and not shown[:, 3].any()
    assert (out[:, 0] == [255, 0, 0]).all(axis=1).any(), "border of a shown segment drawn"
    only_negative = top_segments(IMG, SEG, [-1, -2, -3, -4], k=3, dim=0.5)
    np.testing.assert_array_equal(only_negative, np.full_like(IMG, 50))


def test_signed_segments_tint_by_sign_and_strength():
    out = signed_segments(IMG, SEG, [1.0, -1.0, 0.0, 0.5], alpha=1.0, border=None)
    np.testing.assert_array_equal(out[0, 0], POSITIVE_COLOR)
    np.testing.assert_array_equal(out[0, 1], NEGATIVE_COLOR)
    np.testing.assert_array_equal(out[0, 2], [100, 100, 100])  # zero weight: untouched
    expected = np.rint(0.5 * 100 + 0.5 * np.array(POSITIVE_COLOR))
    np.testing.assert_array_equal(out[0, 3], expected)


@pytest.mark.parametrize(
    "call",
    [
        lambda: paint_segments(SEG, [1.0, 2.0]),
        lambda: paint_segments(SEG.astype(float), [1, 2, 3, 4]),
        lambda: top_segments(IMG, SEG, [1, 2, 3, 4], dim=2),
    ],
)
def test_bad_arguments(call):
    with pytest.raises(InvalidParameterError):
        call()


def test_panels_per_explanation():
    cam = Explanation(
        raw=np.ones((2, 2), np.float32),
        map=np.ones((8, 4), np.float32),
        method="gradcam",
        image=IMG,
    )
    [panel] = explanation_panels(cam)
    assert not panel.signed and panel.heatmap is not None
    weights = np.array([0.5, -1.0, 2.0, 0.1], np.float32)
    lime = Explanation(
        raw=paint_segments(SEG, weights),
        map=paint_segments(SEG, weights),
        method="lime",
        image=IMG,
        extras={"segments": SEG.astype(np.int32), "weights": weights},
    )
    panels = explanation_panels(lime)
    assert len(panels) == 4 and panels[0].signed and panels[0].colorbar
    assert "top 5" in panels[1].title and "green" in panels[3].title
    outlined = panels[2].image  # the top superpixels outlined, the rest of the image untouched
    dimmed = panels[1].image
    rest = SEG == 1  # the only segment with a negative weight: not among the top ones
    assert "on the image" in panels[2].title
    assert (outlined[rest] >= dimmed[rest]).all() and (outlined[rest] > dimmed[rest]).any()
    assert len(explanation_panels(lime, views="map")) == 1

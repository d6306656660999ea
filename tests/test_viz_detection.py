"""Boxes, class-mask overlays and region outlines (seethrough.viz.detection), and the region an
explanation of a box or a mask carries through figures, save and load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seethrough.errors import InvalidParameterError
from seethrough.explanation import Explanation, Region
from seethrough.viz import (
    Panel,
    class_colors,
    draw_boxes,
    draw_region,
    explanation_panels,
    mask_legend,
    mask_outline,
    mask_overlay,
)
from seethrough.viz.detection import BOX_COLOR

RED, GREEN = (255, 0, 0), (0, 255, 0)


def grey(h: int = 60, w: int = 80) -> np.ndarray:
    return np.full((h, w, 3), 100, np.uint8)


def test_boxes_are_drawn_on_their_edges_and_nowhere_else():
    out = draw_boxes(grey(), [[10, 20, 30, 40]], colors=[RED], width=2, text=False)
    red = (out == RED).all(axis=2)
    # the outline: columns 10-11 and 28-29, rows 20-21 and 38-39, within the box
    assert red[20:40, 10:12].all() and red[20:40, 28:30].all()
    assert red[20:22, 10:30].all() and red[38:40, 10:30].all()
    assert not red[22:38, 12:28].any()  # the inside untouched
    assert red.sum() == 20 * 20 - 16 * 16
    assert (out[~red] == 100).all()  # the rest of the image unchanged


def test_first_box_on_top_and_its_label_tag_above_it():
    out = draw_boxes(grey(), [[10, 20, 30, 40], [20, 25, 50, 50]], colors=[RED, GREEN], width=1)
    assert tuple(out[30, 20]) == GREEN  # box 1's left edge, inside box 0
    assert tuple(out[25, 29]) == RED  # box 0's right edge crosses box 1's top: box 0 on top
    # box 0's tag (label-free: no labels, no scores) is not drawn; with a label it sits above
    tagged = draw_boxes(grey(), [[10, 30, 30, 50]], ["dog"], [0.87], colors=[RED], text=True)
    assert (tagged[15:30, 10:30] == RED).all(axis=2).any()
    plain = draw_boxes(grey(), [[10, 30, 30, 50]], colors=[RED])
    assert not (plain[15:30] == RED).all(axis=2).any()


def test_boxes_outside_or_bad():
    out = draw_boxes(grey(), [[70, 50, 200, 90]], colors=[RED], text=False)  # clipped
    assert (out[50:60, 70] == RED).all() and (out[50, 70:80] == RED).all()
    assert (draw_boxes(grey(), np.zeros((0, 4))) == 100).all()
    with pytest.raises(InvalidParameterError, match="x0 <= x1"):
        draw_boxes(grey(), [[30, 0, 10, 5]])
    with pytest.raises(InvalidParameterError, match="2 labels for 1 boxes"):
        draw_boxes(grey(), [[0, 0, 5, 5]], ["a", "b"])


def test_mask_overlay_paints_classes_over_the_image_and_leaves_the_background():
    classes = np.zeros((60, 80), np.int64)
    classes[10:30, 10:40] = 15  # person in VOC's palette: (192, 128, 128)
    out = mask_overlay(grey(), classes, alpha=0.5)
    assert (out[classes == 0] == 100).all()
    assert tuple(out[20, 20]) == (146, 114, 114)  # (100 + colour) / 2, rounded half to even
    assert tuple(out[10, 20]) == (192, 128, 128)  # the border in full colour
    assert tuple(class_colors(21)[15]) == (192, 128, 128)
    legend = mask_legend(
        [("background", 0.875), ("person", 0.125)], ["background"] + ["x"] * 14 + ["person"]
    )
    assert legend == [("#000000", "background 87.5%"), ("#c08080", "person 12.5%")]
    with pytest.raises(InvalidParameterError, match="does not match"):
        mask_overlay(grey(), classes[:10])


def test_mask_outline_draws_the_region_border():
    pixels = np.zeros((60, 80), bool)
    pixels[10:20, 30:50] = True
    out = mask_outline(grey(), pixels, GREEN)
    green = (out == GREEN).all(axis=2)
    assert green[10, 30:50].all() and green[19, 30:50].all() and green[10:20, 30].all()
    assert not green[11:19, 31:49].any() and not green[~pixels].any()
    half = mask_outline(grey(), pixels[::2, ::2], GREEN)  # resized to the image
    assert (half == GREEN).all(axis=2)[10, 30:50].all()


def test_a_panel_with_a_region_draws_its_outline_on_the_overlay():
    region = Region("box", 1, "dog", box=(10.0, 20.0, 30.0, 40.0))
    heat = np.zeros((60, 80), np.float32)
    heat[25:35, 15:25] = 1.0
    with_box = Panel(grey(), heatmap=heat, region=region).render()
    without = Panel(grey(), heatmap=heat).render()
    changed = (with_box != without).any(axis=2)
    assert (with_box[21:40, 10] == BOX_COLOR).all()
    assert not changed[45:, :].any() and not changed[:, 40:].any()  # only near the box
    assert (draw_region(grey(), region)[21:40, 10] == BOX_COLOR).all()
    with pytest.raises(InvalidParameterError, match="a region must be"):
        draw_region(grey(), Region("box", 1))


def _explanation(region: Region | None) -> Explanation:
    heat = np.linspace(0, 1, 60 * 80, dtype=np.float32).reshape(60, 80)
    return Explanation(
        raw=heat[::4, ::4],
        map=heat,
        method="gradcam",
        target=1 if region is None else region.target,
        label="dog" if region is None else region.label,
        image=grey(),
        region=region,
    )


def test_an_explanation_saves_and_loads_its_region(tmp_path):
    pixels = np.zeros((60, 80), bool)
    pixels[5:15, 5:25] = True
    for region in (
        Region("box", 1, "dog", box=(10.5, 20.0, 30.0, 40.0)),
        Region("mask", 15, "person", pixels=pixels),
    ):
        e = _explanation(region)
        paths = e.save(tmp_path, region.kind)
        manifest = json.loads(paths["json"].read_text())
        assert (
            manifest["region"]["kind"] == region.kind
            and manifest["region"]["label"] == region.label
        )
        back = Explanation.load(paths["json"])
        assert back.region == region
        if region.pixels is not None:
            assert np.array_equal(back.region.pixels, pixels)
        assert e.caption().splitlines()[1] == f"{region.kind} {region.label}"
        # the saved overlay shows the outline; the figure's first panel too
        assert not np.array_equal(e.overlay(), e.overlay(outline=False))
        assert explanation_panels(e)[0].region is region


def test_a_manifest_without_a_region_still_loads(tmp_path):
    paths = _explanation(None).save(tmp_path)
    manifest = json.loads(paths["json"].read_text())
    del manifest["region"]  # as written before regions existed
    paths["json"].write_text(json.dumps(manifest))
    assert Explanation.load(paths["json"]).region is None

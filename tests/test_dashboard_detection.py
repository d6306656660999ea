"""The dashboard on a detector and a segmenter: the box table and picker, the class picker,
the boxes and the mask drawn, results that carry the explained box or mask; one AppTest run
that chooses a torchvision detector in the model panel."""

from __future__ import annotations

import numpy as np
import pytest

import seethrough
from seethrough.dashboard import APP_PATH
from seethrough.dashboard import service as svc
from seethrough.targets import Box, Mask
from seethrough.viz import box_colors
from tests.test_detection import OTHER_BOX, REGION_BOX, spot_image, spot_model
from tests.test_segmentation import square_image, square_model


def test_box_table_picker_and_drawn_boxes():
    slot = svc.ModelSlot(spot_model())
    shown = svc.predict(slot, svc.Image.fromarray(spot_image()), k=5)
    assert shown.task == "detection"
    rows = svc.box_rows(shown.predictions)
    assert [(r["box"], r["class"]) for r in rows] == [(0, "spot"), (1, "other")]
    assert (rows[0]["x0"], rows[0]["y0"], rows[0]["x1"], rows[0]["y1"]) == REGION_BOX
    assert rows[1]["score"] == pytest.approx(0.3)
    # the top box is drawn in the first colour on its left edge, below its tag
    x0, y0, x1, y1 = (int(v) for v in REGION_BOX)
    assert tuple(shown.chart[y0 + 5, x0]) == box_colors(2)[0]
    assert tuple(shown.chart[y0 + 5, x0 + 5]) == tuple(spot_image()[y0 + 5, x0 + 5])
    choices = svc.box_choices(shown.predictions)
    assert [t for _, t in choices] == [Box(index=0), Box(index=1)]
    assert choices[0][0].startswith("box 0: spot")
    e = svc.run_method(slot, svc.Image.fromarray(spot_image()), "saliency", target=choices[1][1])
    assert e.region.kind == "box" and e.region.box == OTHER_BOX and e.label == "other"
    again = svc.run_method(slot, svc.Image.fromarray(spot_image()), "saliency", target=Box(index=1))
    assert again is e  # the Box target is part of the cache key


def test_class_picker_and_mask_overlay():
    slot = svc.ModelSlot(square_model())
    image = svc.Image.fromarray(square_image())
    shown = svc.predict(slot, image, k=5)
    assert shown.task == "segmentation"
    assert shown.predictions == [("background", 1 - 192 / 1024), ("square", 192 / 1024)]
    choices = svc.mask_choices(slot.model, shown.predictions)
    # the most frequent class other than the background first, the background last
    assert [t for _, t in choices] == [Mask(1), Mask(0)]
    assert choices[0][0] == "square (18.8% of the pixels)"
    e = svc.run_method(slot, image, "gradcam", target=choices[0][1])
    expected = np.zeros((32, 32), bool)
    expected[8:20, 10:26] = True
    assert e.region.kind == "mask" and np.array_equal(e.region.pixels, expected)
    assert shown.chart.ndim == 3 and svc.render(e).views  # the figure draws the outline


def test_a_detector_spec_passes_its_score_threshold():
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in svc.detector_names()
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in seethrough.list_models()
    spec = svc.ModelSpec(
        "fasterrcnn_mobilenet_v3_large_320_fpn", weights="none", score_threshold=0.5
    )
    model = spec.load()
    assert model.module.roi_heads.score_thresh == 0.5
    assert spec != svc.ModelSpec("fasterrcnn_mobilenet_v3_large_320_fpn", weights="none")


@pytest.mark.slow  # a torchvision detector on a 451x300 photo, predicted and explained
def test_the_page_explains_a_detectors_top_box():
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    at = AppTest.from_file(str(APP_PATH), default_timeout=300)
    at.run()
    at.selectbox(key="model_name").set_value("fasterrcnn_mobilenet_v3_large_320_fpn")
    at.radio(key="weights").set_value("none").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.number_input(key="score_threshold").value == 0.0
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["box"]) == [0, 1, 2, 3, 4]
    picker = at.selectbox(key="target.detection")
    assert picker.value.startswith("box 0: ")
    picker.set_value(picker.options[1])
    at.multiselect(key="methods.cam").set_value(["gradcam"])
    at.button(key="explain").click().run()
    assert not at.exception, [e.value for e in at.exception]
    _, e = at.session_state["results"][0]
    assert isinstance(e, seethrough.Explanation), e
    row = table.iloc[1]
    assert e.region.kind == "box" and e.region.label == row["class"]
    np.testing.assert_allclose(
        e.region.box, [row["x0"], row["y0"], row["x1"], row["y1"]], atol=0.06
    )

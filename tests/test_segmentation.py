"""Segmenters: Mask targets, torchvision segmenters, and the common checks over detectors and
segmenters (hooks removed, state restored, batch equal to per image, determinism)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.errors import InvalidTargetError, UnknownClassError
from seethrough.models.detection import MaskPrediction, segmenter_model
from seethrough.models.preprocessing import Preprocessing
from seethrough.targets import Mask

from .test_common import assert_same_state, snapshot
from .test_detection import spot_image, spot_model

LABELS = ["background", "square", "dog"]


class SquareSegmenter(nn.Module):
    """Logits per pixel: 'square' = 4 * (brightness - 0.5), 'dog' = a fixed small value,
    background 0; returned as torchvision does, ``{"out": logits}``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 1, 3, padding=1)
        with torch.no_grad():
            self.backbone.weight.zero_()
            self.backbone.weight[0, :, 1, 1] = 1.0 / 3
            self.backbone.bias.zero_()

    def forward(self, x):
        bright = self.backbone(x)
        square = 4 * (bright - 0.5)
        return {
            "out": torch.cat([torch.zeros_like(square), square, torch.full_like(square, -0.5)], 1)
        }


def square_model():
    pre = Preprocessing(size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return segmenter_model(SquareSegmenter().eval(), LABELS, preprocessing=pre, name="squares")


def square_image() -> np.ndarray:
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:20, 10:26] = 255
    return img


def test_a_segmenter_predicts_a_class_map():
    model = square_model()
    assert model.task == "segmentation"
    pred = model.predict(square_image())
    assert isinstance(pred, MaskPrediction) and pred.classes.shape == (32, 32)
    assert pred.classes[8:20, 10:26].tolist() == np.ones((12, 16)).tolist()
    assert pred.present == [
        ("background", pytest.approx(1 - 192 / 1024)),
        ("square", pytest.approx(192 / 1024)),
    ]


def test_mask_scores_are_the_mean_logit_over_the_pixels():
    model = square_model()
    x = model.preprocess(square_image())
    logits = model.module(x)["out"].detach()
    e = seethrough.explain(model, square_image(), "saliency")  # default: the square, not background
    assert (e.target, e.label) == (1, "square")
    assert e.score == pytest.approx(float(logits[0, 1, 8:20, 10:26].mean()))
    pixels = np.zeros((32, 32), bool)
    pixels[0:4, 0:4] = True
    e = seethrough.explain(model, square_image(), "saliency", target=Mask("dog", pixels=pixels))
    assert (e.target, e.score) == (2, pytest.approx(-0.5))
    assert e.map[:4, :4].sum() == 0  # 'dog' does not depend on the image
    with pytest.raises(UnknownClassError, match="Did you mean: square"):
        seethrough.explain(model, square_image(), "saliency", target=Mask("sqare"))
    with pytest.raises(InvalidTargetError, match="predicts no pixel of class 'dog'"):
        seethrough.explain(model, square_image(), "saliency", target=Mask("dog"))
    with pytest.raises(InvalidTargetError, match="pixels of shape"):
        seethrough.explain(
            model, square_image(), "saliency", target=Mask(1, pixels=np.ones((4, 4)))
        )


@pytest.mark.parametrize(
    ("method", "params"),
    [("gradcam", {}), ("saliency", {}), ("occlusion", {"window": 4, "stride": 4})],
)
def test_maps_of_the_square_class_lie_in_the_square(method, params):
    e = seethrough.explain(
        square_model(), square_image(), method, target="square", layer="backbone", **params
    )
    inside = np.abs(e.map[8:20, 10:26]).sum() / np.abs(e.map).sum()
    assert inside > 0.8


# ------------------------------------------------------------- the common checks, on both


FAST = {
    "occlusion": {"window": 15, "stride": 15},
    "rise": {"n_samples": 40},
    "drise": {"n_samples": 40},
}
CASES = [
    ("detector", m)
    for m in ("gradcam", "saliency", "occlusion", "integrated_gradients", "rise", "drise")
] + [("segmenter", m) for m in ("gradcam", "saliency", "occlusion", "rise")]


def _model_and_images(kind):
    if kind == "detector":
        img = spot_image()
        return spot_model(), [img, img[::-1].copy()]
    img = square_image()
    return square_model(), [img, img[:, ::-1].copy()]


@pytest.mark.parametrize(("kind", "method"), CASES)
def test_common_checks_over_detectors_and_segmenters(kind, method):
    model, images = _model_and_images(kind)
    params = FAST.get(method, {}) | ({"n_steps": 4} if method == "integrated_gradients" else {})
    module = model.module
    module.train()  # a state no method may change
    next(module.parameters()).requires_grad_(False)
    before = snapshot(module)
    batch = seethrough.explain(model, images, method, **params)
    assert_same_state(before, module)
    again = seethrough.explain(model, images, method, **params)
    for i, e in enumerate(batch):
        assert np.isfinite(e.map).all() and e.map.shape == images[i].shape[:2]
        np.testing.assert_array_equal(e.raw, again[i].raw)  # deterministic
        single = seethrough.explain(model, images[i], method, target=e.target, **params)
        np.testing.assert_allclose(single.map, e.map, rtol=1e-4, atol=1e-6)
        assert single.target == e.target and single.score == pytest.approx(e.score, rel=1e-5)

    def failing(output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        seethrough.explain(model, images, method, target=failing, **params)
    assert_same_state(before, module)
    assert count_hooks(module) == 0


# ----------------------------------------------------------------- torchvision segmenters


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50"]
)
def test_torchvision_segmenters_load_offline_predict_and_explain(name):
    torch.manual_seed(0)
    model = seethrough.load_model(name, weights="none", size=64)
    assert model.task == "segmentation" and model.labels[12] == "dog" and len(model.labels) == 21
    pred = model.predict(square_image())
    assert pred.classes.shape == (64, 64) and sum(f for _, f in pred.present) == pytest.approx(1.0)
    assert model.predict(square_image(), k=1).present == pred.present[:1]  # the first k classes
    top = (
        pred.present[0][0]
        if pred.present[0][0] != "__background__" or len(pred.present) == 1
        else pred.present[1][0]
    )
    for method, params in [
        ("gradcam", {}),
        ("saliency", {}),
        ("occlusion", {"window": 16, "stride": 16}),
    ]:
        e = seethrough.explain(model, square_image(), method, **params)
        assert e.label == top and e.map.shape == (64, 64)
        if method != "occlusion":  # random weights: a hidden patch may change no score
            assert np.abs(e.raw).max() > 0, f"{method} gave an all-zero map"
    assert count_hooks(model.module) == 0

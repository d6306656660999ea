"""Detectors: packed detections, Box targets, torchvision detectors, map alignment, D-RISE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

import seethrough
from seethrough.core.detection import Detections, pack, unpack
from seethrough.core.hooks import count_hooks
from seethrough.errors import (
    InvalidInputError,
    InvalidParameterError,
    InvalidTargetError,
    MethodNotApplicableError,
    UnknownClassError,
)
from seethrough.models.detection import BoxPrediction, DetectorRunner, detector_model
from seethrough.targets import Box, BoxScore

LABELS = ["__background__", "spot", "other"]
# the image is 90x130; the detector resizes it to 64x92 and pads it to 64x96 inside
H, W = 90, 130
REGION = (slice(55, 85), slice(95, 125))  # rows, columns of the object in the image
REGION_BOX = (95.0, 55.0, 125.0, 85.0)
OTHER_BOX = (5.0, 5.0, 35.0, 35.0)


def dets(boxes, labels, scores, logits=None) -> Detections:
    return Detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels),
        torch.tensor(scores, dtype=torch.float32),
        None if logits is None else torch.tensor(logits, dtype=torch.float32),
    )


# ----------------------------------------------------------------------------- pack / unpack


def test_pack_unpack_round_trip_and_padding():
    a = dets([[0, 0, 10, 10], [5, 5, 20, 30]], [1, 2], [0.9, 0.4], [[0, 3, 1], [0, 1, 4]])
    b = dets([[1, 2, 3, 4]], [2], [0.7], [[0.5, 0, 2]])
    packed = pack([a, b], max_boxes=4, num_classes=3)
    assert packed.shape == (2, 4, 10)
    assert packed[1, 1:].abs().sum() == 0  # padding rows are zeros, valid = 0
    for got, want in zip(unpack(packed), [a, b], strict=True):
        torch.testing.assert_close(got.boxes, want.boxes)
        assert got.labels.tolist() == want.labels.tolist()
        torch.testing.assert_close(got.scores, want.scores)
        torch.testing.assert_close(got.class_scores, want.class_scores)
    without = unpack(pack([a], max_boxes=1))[0]  # truncated to one box, no class scores
    assert len(without) == 1 and without.class_scores is None
    assert without.labels.tolist() == [1]


def test_gradients_flow_through_pack():
    boxes = torch.tensor([[0.0, 0, 10, 10]], requires_grad=True)
    scores = torch.tensor([0.5], requires_grad=True)
    logits = torch.tensor([[0.0, 2.0]], requires_grad=True)
    packed = pack([Detections(boxes, torch.tensor([1]), scores, logits)], 3, 2)
    (packed[0, 0, :4].sum() * 2 + packed[0, 0, 4] * 3 + packed[0, 0, 8] * 5).backward()
    assert boxes.grad.tolist() == [[2.0, 2.0, 2.0, 2.0]]
    assert scores.grad.tolist() == [3.0] and logits.grad.tolist() == [[0.0, 5.0]]


# ----------------------------------------------------------------------------------- Box


def _index(target):
    return LABELS.index(target) if isinstance(target, str) else int(target)


def test_box_rematches_a_shifted_box_and_scores_zero_without_it():
    clean = pack([dets([[10, 10, 50, 50], [60, 60, 90, 90]], [1, 2], [0.9, 0.8])], 5)
    label, score = Box(index=1).bind(clean, _index)
    assert label == 2 and isinstance(score, BoxScore)
    shifted = pack([dets([[12, 11, 52, 49], [62, 63, 92, 91]], [1, 2], [0.9, 0.6])], 5)
    other_label = pack([dets([[10, 10, 50, 50], [60, 60, 90, 90]], [1, 1], [0.9, 0.8])], 5)
    removed = pack([dets([[10, 10, 50, 50]], [1], [0.9])], 5)
    far = pack([dets([[10, 10, 50, 50], [0, 60, 30, 90]], [1, 2], [0.9, 0.7])], 5)
    batch = torch.cat([clean, shifted, other_label, removed, far])
    torch.testing.assert_close(score(batch), torch.tensor([0.8, 0.6, 0.0, 0.0, 0.0]))


def test_box_scores_the_logit_of_its_label_where_there_are_class_scores():
    clean = pack([dets([[10, 10, 50, 50]], [2], [0.7], [[0.1, 0.2, 3.0]])], 4, 3)
    label, score = Box().bind(clean, _index)  # no argument: the top box
    assert label == 2
    moved = pack(
        [dets([[0, 0, 5, 5], [11, 10, 50, 52]], [2, 2], [0.9, 0.6], [[0, 0, 9], [0, 1, 2.5]])], 4, 3
    )
    torch.testing.assert_close(score(torch.cat([clean, moved])), torch.tensor([3.0, 2.5]))


def test_box_index_past_the_last_box_and_boxes_by_corners_or_label():
    clean = pack([dets([[10, 10, 50, 50], [60, 60, 90, 90]], [1, 2], [0.9, 0.8])], 5)
    with pytest.raises(InvalidTargetError, match="index 2: the model found 2 boxes"):
        Box(index=2).bind(clean, _index)
    label, score = Box(xyxy=(58, 62, 90, 92), label="other").bind(clean, _index)
    assert label == 2 and score.box.tolist() == [60, 60, 90, 90]  # the clean box it matched
    label, score = Box(label="other").bind(clean, _index)
    assert label == 2 and score.box.tolist() == [60, 60, 90, 90]
    label, score = Box(xyxy=(0, 0, 5, 5), label="spot").bind(clean, _index)
    assert label == 1 and score.box.tolist() == [0, 0, 5, 5]  # no match: the box given
    with pytest.raises(InvalidTargetError, match="no box of the model overlaps"):
        Box(xyxy=(0, 0, 5, 5)).bind(clean, _index)
    with pytest.raises(InvalidTargetError, match="no box of class"):
        Box(label="__background__").bind(clean, _index)


# --------------------------------------------------------------- a detector made by hand


class SpotDetector(nn.Module):
    """A torchvision-style detector whose 'spot' box is scored by the brightness of REGION.

    It resizes and pads inside (GeneralizedRCNNTransform), computes features at stride 4 and
    gives two boxes: 'spot' at REGION_BOX, scored by the features over REGION (in the padded
    batch's coordinates), and 'other' at OTHER_BOX with a score that never changes. Its body
    returns two levels ('body:0', 'body:1': the second the first through an identity 1x1
    convolution), both used.
    """

    def __init__(self) -> None:
        super().__init__()
        self.transform = GeneralizedRCNNTransform(64, 96, [0.0] * 3, [1.0] * 3)
        self.body = Body()

    def forward(self, images):
        batch, _ = self.transform(images)
        (hr, wr), (h0, w0) = batch.image_sizes[0], images[0].shape[-2:]
        levels = self.body(batch.tensors)
        feats = (levels["0"] + levels["1"]) / 2
        sy, sx = hr / h0 / 4, wr / w0 / 4  # image pixels -> feature cells
        rows = slice(round(REGION[0].start * sy), round(REGION[0].stop * sy))
        cols = slice(round(REGION[1].start * sx), round(REGION[1].stop * sx))
        out = []
        for f in feats:
            spot = torch.sigmoid(f[0, rows, cols].mean() * 4 - 2)
            boxes = torch.tensor([REGION_BOX, OTHER_BOX])
            scores = torch.stack([spot, torch.tensor(0.3)])
            order = scores.argsort(descending=True)
            labels = torch.tensor([1, 2])
            out.append({"boxes": boxes[order], "labels": labels[order], "scores": scores[order]})
        return out


class Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 4, stride=4)
        self.lateral = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 48)
            self.conv.bias.zero_()
            self.lateral.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.lateral.bias.zero_()

    def forward(self, x):
        first = torch.relu(self.conv(x))
        return {"0": first, "1": self.lateral(first)}


def spot_model():
    return detector_model(SpotDetector().eval(), LABELS, name="spot", default_layer="body.conv")


def spot_image() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[REGION] = 230
    return img


def _inside(m: np.ndarray) -> float:
    """The share of a map's positive mass inside REGION."""
    pos = np.clip(m, 0, None)
    return float(pos[REGION].sum() / pos.sum())


def test_a_detector_predicts_boxes_and_its_top_box_is_the_default_target():
    model = spot_model()
    assert model.task == "detection"
    boxes = model.predict(spot_image())
    assert [b.label for b in boxes] == ["spot", "other"]
    assert isinstance(boxes[0], BoxPrediction) and boxes[0].box == REGION_BOX
    assert boxes[0].score > 0.8  # a bright spot
    e = seethrough.explain(model, spot_image(), "saliency")
    assert (e.target, e.label) == (1, "spot") and e.score == pytest.approx(boxes[0].score)
    with pytest.raises(InvalidTargetError, match="index 5: the model found 2 boxes"):
        seethrough.explain(model, spot_image(), "saliency", target=Box(index=5))
    with pytest.raises(UnknownClassError, match="Did you mean: spot"):
        seethrough.explain(model, spot_image(), "saliency", target=Box(label="spto"))


def test_images_of_different_sizes_are_predicted_one_by_one_and_refused_as_one_batch():
    model = spot_model()
    small = spot_image()[10:, 5:]  # another size, the spot still inside
    boxes = model.predict([spot_image(), small], k=1)
    assert [len(b) for b in boxes] == [1, 1]
    assert boxes[0] == model.predict(spot_image(), k=1)
    assert boxes[1] == model.predict(small, k=1)
    with pytest.raises(InvalidInputError, match=r"different sizes \(90x130, 80x125\).*one image"):
        seethrough.explain(model, [spot_image(), small], "saliency")


@pytest.mark.parametrize("layer", ["body.conv", "body:0", "body:1"])
def test_gradcam_of_a_detector_is_at_the_input_size_and_aligned_with_the_object(layer):
    model = spot_model()
    e = seethrough.explain(model, spot_image(), "gradcam", layer=layer)
    assert e.map.shape == (H, W) and e.layer == layer
    assert _inside(e.map) > 0.8  # the rest: bilinear spill of the 4-pixel cells at its edges
    rows, cols = np.nonzero(e.map > 0.5 * e.map.max())
    # above half its peak the map is the region itself: padding cropped, resize undone (a map
    # that ignored the padding would be stretched by 96 / 92, 5 pixels at the region)
    assert (rows.min(), rows.max() + 1) == (REGION[0].start, REGION[0].stop)
    assert (cols.min(), cols.max() + 1) == (REGION[1].start, REGION[1].stop)
    assert count_hooks(model.module) == 0


def test_the_layers_of_a_dict_output_are_listed_by_key():
    model = spot_model()
    names = [n for n, _ in model.make_runner().spatial_layers(model.preprocess(spot_image()))]
    assert {"body.conv", "body:0", "body:1"} <= set(names)
    with pytest.raises(seethrough.errors.UnknownLayerError, match="body:1"):
        seethrough.explain(model, spot_image(), "gradcam", layer="body:2")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("saliency", {}),
        ("occlusion", {"window": 15, "stride": 15}),
        ("drise", {"n_samples": 300, "cells": 6}),
    ],
)
def test_maps_of_the_spot_box_lie_on_the_spot(method, params):
    e = seethrough.explain(spot_model(), spot_image(), method, target=Box(index=0), **params)
    assert e.map.shape == (H, W)
    row, col = np.unravel_index(np.argmax(e.map), e.map.shape)
    assert REGION[0].start - 2 <= row < REGION[0].stop + 2
    assert REGION[1].start - 2 <= col < REGION[1].stop + 2
    outside = np.ones((H, W), bool)
    outside[REGION] = False
    assert e.map[REGION].mean() > e.map[outside].mean() + 0.1 * np.ptp(e.map)


def test_the_constant_box_has_no_evidence_anywhere():
    e = seethrough.explain(
        spot_model(), spot_image(), "occlusion", target=Box(label="other"), window=10, stride=10
    )
    assert e.label == "other" and np.abs(e.map).max() < 1e-6


def test_drise_explains_detectors_only(tiny, tiny_input):
    with pytest.raises(MethodNotApplicableError, match="detector"):
        seethrough.explain(tiny, tiny_input, "drise", n_samples=8)


def test_drise_weight_is_iou_times_class_similarity_times_objectness():
    from seethrough.methods.perturbation.drise import detection_similarity

    target = BoxScore(torch.tensor([0.0, 0, 10, 10]), 1)
    half = pack([dets([[0, 0, 10, 5], [0, 0, 10, 10]], [1, 2], [0.8, 0.9])], 3)
    assert float(detection_similarity(half, target)) == pytest.approx(0.5 * 0.8)
    logits = torch.tensor([[0.0, 2.0, 0.0]])
    p = logits.softmax(-1)[0]
    with_logits = pack(
        [
            Detections(
                torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([2]), torch.tensor([0.1]), logits
            )
        ],
        2,
        3,
    )
    assert float(detection_similarity(with_logits, target)) == pytest.approx(float(p[1] / p.norm()))


# ------------------------------------------------------------------- torchvision detectors


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = (rng.random((64, 80, 3)) * 60).astype(np.uint8)
    img[20:50, 30:70] = 200
    return img


def _small(model, size: int = 64):
    model.module.transform.min_size = (size,)
    model.module.transform.max_size = size * 2
    return model


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "ssdlite320_mobilenet_v3_large",
        "retinanet_resnet50_fpn",
        "fcos_resnet50_fpn",
    ],
)
def test_torchvision_detectors_load_offline_predict_and_explain(name):
    torch.manual_seed(0)
    model = seethrough.load_model(name, weights="none", max_boxes=20)
    assert model.task == "detection" and model.labels[1] == "person" and len(model.labels) == 91
    if name.startswith(("retinanet", "fcos")):
        _small(model)
    boxes = model.predict(_image())
    assert 0 < len(boxes) <= 20 and all(isinstance(b, BoxPrediction) for b in boxes)
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
    assert model.predict(_image(), k=2) == boxes[:2]  # k: the first k boxes
    with pytest.raises(InvalidParameterError, match="k must be"):
        model.predict(_image(), k=0)
    runner = model.make_runner()
    assert isinstance(runner, DetectorRunner)
    for method, params in [
        ("gradcam", {}),
        ("saliency", {}),
        ("occlusion", {"window": 32, "stride": 32}),
    ]:
        e = seethrough.explain(model, _image(), method, target=Box(index=0), **params)
        assert e.map.shape == (64, 80) and np.isfinite(e.map).all()
        if method != "occlusion":  # random weights: a hidden patch may change no score
            assert np.abs(e.raw).max() > 0, f"{method} gave an all-zero map"
        assert e.label == boxes[0].label and e.score == pytest.approx(
            boxes[0].score if runner.num_classes == 0 else e.score
        )
    assert count_hooks(model.module) == 0


@pytest.mark.slow
def test_a_faster_rcnn_box_is_explained_by_its_class_logit():
    torch.manual_seed(0)
    model = seethrough.load_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn", weights="none", max_boxes=5
    )
    _small(model)
    runner = model.make_runner()
    assert runner.num_classes == 91
    x = model.preprocess(_image())
    with torch.no_grad():
        packed = runner.forward(x)
    (det,) = unpack(packed)
    # each box's score is the softmax of the logits it carries, at its label
    probs = det.class_scores.softmax(-1)[torch.arange(len(det)), det.labels]
    torch.testing.assert_close(probs, det.scores)
    e = seethrough.explain(model, _image(), "saliency", target=Box(index=1))
    assert e.score == pytest.approx(float(det.class_scores[1, det.labels[1]]), rel=1e-4)


def test_detector_options_are_checked():
    with pytest.raises(seethrough.errors.InvalidParameterError, match="detectors only"):
        seethrough.load_model("resnet18", weights="none", max_boxes=3)
    with pytest.raises(seethrough.errors.InvalidParameterError, match="score_threshold"):
        seethrough.load_model("ssdlite320_mobilenet_v3_large", weights="none", score_threshold=2.0)


@pytest.mark.slow
def test_a_detector_loads_a_weights_file_of_its_architecture(tmp_path):
    from safetensors.torch import save_file

    from seethrough.models.detection import SCORE_THRESHOLD

    torch.manual_seed(1)
    source = seethrough.load_model("ssdlite320_mobilenet_v3_large", weights="none")
    path = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in source.module.state_dict().items()}, str(path))
    torch.manual_seed(2)  # another random init: the file must replace it
    model = seethrough.load_model("ssdlite320_mobilenet_v3_large", weights=str(path))
    assert model.weights == str(path)
    for key, value in source.module.state_dict().items():
        assert torch.equal(model.module.state_dict()[key], value), key
    assert model.module.score_thresh == SCORE_THRESHOLD  # a trained net's threshold
    assert (
        seethrough.load_model(
            "ssdlite320_mobilenet_v3_large", weights=str(path), score_threshold=0.0
        ).module.score_thresh
        == 0.0
    )
    wrong = tmp_path / "wrong.safetensors"
    save_file({"head.weight": torch.zeros(2, 2)}, str(wrong))
    with pytest.raises(seethrough.errors.WeightsMismatchError, match="does not fit"):
        seethrough.load_model("ssdlite320_mobilenet_v3_large", weights=str(wrong))
    with pytest.raises(seethrough.errors.InvalidParameterError, match="not a weights file"):
        seethrough.load_model("synthetic_detector", weights=str(path))

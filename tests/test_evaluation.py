"""Data folders, the evaluation runner, reports and the cost table, on models with known answers."""

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from seethrough import Preprocessing, VisionModel
from seethrough.errors import InvalidImageError, InvalidParameterError, UnknownMethodError
from seethrough.evaluation import Sample, cost_table, evaluate, load_folder, write_report
from seethrough.evaluation.report import to_markdown

SIZE = 32


class BrightDetector(nn.Module):
    """Class 0 = 'something bright': a 1x1 conv on brightness, ReLU, GAP, linear (CAM applies).

    Class 0's logit grows with the bright pixels, so every sensible map points at the object.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor([[1.0] * 3, [-1.0] * 3]).view(2, 3, 1, 1))
            self.features[0].bias.copy_(torch.tensor([-1.5, 1.5]))
            self.fc.weight.copy_(torch.tensor([[20.0, 0.0], [0.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def bright_model() -> VisionModel:
    prep = Preprocessing(size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), resize="squash")
    return VisionModel(
        BrightDetector().eval(),
        prep,
        ["bright", "dark"],
        name="bright",
        source="test",
        weights="hand-made",
        default_layer="features",
    )


def square_sample(i: int, corner: bool = True) -> Sample:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    top = 2 + i % 3 if corner else 12
    mask[top : top + 8, top : top + 8] = True
    image[mask] = 255
    return Sample(f"s{i}", image, mask, "bright")


# ------------------------------------------------------------------------------------ data


def write_simple(root, n=3, size=(20, 30)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(root / "images" / f"im{i}.jpg")
        m = np.zeros(size, np.uint8)
        m[2:5, 3 + i : 9] = 255
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    (root / "labels.csv").write_text("name,label\nim0.jpg,3\nim1,cat\n")


def test_simple_layout(tmp_path):
    write_simple(tmp_path)
    (tmp_path / "images" / "orphan.png").write_bytes(b"")  # no mask: skipped
    data = load_folder(tmp_path)
    assert data.layout == "simple" and len(data) == 3
    s = data[1]
    assert s.name == "im1" and s.image.shape == (20, 30, 3) and s.mask.dtype == bool
    assert s.mask.sum() == 3 * 5 and s.mask[2, 4] and not s.mask[0, 0]
    assert [x.label for x in data] == [3, "cat", None]
    assert len(load_folder(tmp_path, limit=2)) == 2


def test_simple_layout_errors(tmp_path):
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_folder(tmp_path / "nope")
    with pytest.raises(InvalidParameterError, match="images/ and masks/"):
        load_folder(tmp_path)
    write_simple(tmp_path)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / "im0.png")
    with pytest.raises(InvalidImageError, match="mask im0.png is 5x5"):
        load_folder(tmp_path)[0]
    with pytest.raises(InvalidParameterError, match="limit"):
        load_folder(tmp_path, limit=0)


def test_voc_layout(tmp_path):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / sub).mkdir(parents=True)
    for name in ("2007_000001", "2007_000002"):
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(
            tmp_path / "JPEGImages" / f"{name}.jpg"
        )
        idx = np.zeros((10, 12), np.uint8)
        idx[2:6, 2:6] = 15  # person
        idx[1, :] = 255  # void border: not the object
        seg = Image.fromarray(idx, mode="P")
        seg.putpalette([0, 0, 0] * 256)
        seg.save(tmp_path / "SegmentationClass" / f"{name}.png")
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("2007_000002\n")
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2007_000002\n")
    data = load_folder(tmp_path)
    assert data.layout == "voc" and [s.name for s in data] == ["2007_000002"]
    assert data[0].mask.sum() == 16 and not data[0].mask[1].any()
    assert len(load_folder(tmp_path, split="train")) == 2
    with pytest.raises(InvalidParameterError, match="train, val"):
        load_folder(tmp_path, split="test")


def test_preprocessing_moves_the_mask_with_the_image():
    mask = np.zeros((40, 80), bool)
    mask[:, :20] = True  # the left quarter
    image = np.where(mask[..., None], 255, 0).astype(np.uint8).repeat(3, 2)
    for resize in ("squash", "crop"):
        prep = Preprocessing(size=20, resize=resize, interpolation="nearest")
        assert np.array_equal(
            prep.mask(mask), prep.display_image(Image.fromarray(image))[..., 0] > 127
        )
    assert Preprocessing(size=20, resize="crop").mask(mask).sum() == 0  # cropped away
    assert Preprocessing(size=20, resize="squash").mask(mask).sum() == 100


# ---------------------------------------------------------------------------------- runner


@pytest.fixture(scope="module")
def evaluation():
    data = [square_sample(i) for i in range(4)]
    return evaluate([bright_model()], data, ["gradcam", "cam"], steps=8)


def test_every_map_is_scored(evaluation):
    assert len(evaluation.records) == 4 * 4  # 2 methods + 2 baselines, 4 samples
    assert {r.method for r in evaluation.records} == {
        "gradcam",
        "cam",
        "baseline:random",
        "baseline:centre",
    }
    assert all(r.error is None and r.target == 0 and r.predicted == 0 for r in evaluation.records)


def test_maps_of_a_bright_detector_beat_the_baselines(evaluation):
    rows = {r.method: r for r in evaluation.summary()}
    for method in ("gradcam", "cam"):
        assert rows[method].pointing_game == 1.0
        assert rows[method].iou > 0.8 and rows[method].energy_pointing_game > 0.8
        assert rows[method].deletion < rows["baseline:random"].deletion
        assert rows[method].insertion > rows["baseline:random"].insertion
    assert rows["baseline:centre"].pointing_game == 0.0  # the objects sit in a corner
    assert rows["baseline:random"].iou < 0.3
    assert rows["gradcam"].n == 4 and rows["gradcam"].top1 == 1.0
    assert rows["gradcam"].iou_ci >= 0 and rows["gradcam"].seconds > 0


def test_confidence_interval_is_students_t():
    from seethrough.evaluation.runner import _ci

    values = [0.2, 0.4, 0.6, 0.8]
    assert _ci(values) == pytest.approx(3.182446 * np.std(values, ddof=1) / 2, rel=1e-5)
    assert math.isnan(_ci([0.5]))


def test_a_method_that_does_not_apply_is_reported_not_raised():
    vm = bright_model()
    vm.module.fc = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))  # not linear
    result = evaluate([vm], [square_sample(0)], ["cam", "gradcam"], metrics=["iou"])
    rows = {r.method: r for r in result.summary()}
    assert rows["cam"].n == 0 and "linear" in rows["cam"].error.lower()
    assert rows["gradcam"].n == 1 and rows["gradcam"].error is None
    assert "not applicable" in to_markdown(result)


def test_top1_without_labels_is_agreement_with_the_majority():
    a, b, c = bright_model(), bright_model(), bright_model()
    c.name = "contrarian"
    with torch.no_grad():
        c.module.fc.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0]]))  # always 'dark'
    data = [square_sample(i) for i in range(2)]
    for s in data:
        s.label = None
    result = evaluate([a, b, c], data, ["gradcam"], metrics=["iou"], baselines=False)
    top1 = {r.model: r.top1 for r in result.summary()}
    assert top1 == {"bright": 1.0, "contrarian": 0.0}


def test_bad_arguments():
    vm = bright_model()
    with pytest.raises(InvalidParameterError, match="target"):
        evaluate([vm], [square_sample(0)], ["gradcam"], target="best")
    with pytest.raises(UnknownMethodError):
        evaluate([vm], [square_sample(0)], ["gradkam"])
    with pytest.raises(InvalidParameterError, match="not computed per map"):
        evaluate([vm], [square_sample(0)], ["gradcam"], metrics=["robustness"])
    bad = square_sample(0)
    bad.label = "zebra"
    with pytest.raises(InvalidParameterError, match="predicted"):
        evaluate([vm], [bad], ["gradcam"])


def test_report_files(evaluation, tmp_path):
    paths = write_report(evaluation, tmp_path / "out")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 4 and rows[0]["method"] == "gradcam" and float(rows[0]["iou"]) > 0.8
    md = paths["md"].read_text().splitlines()
    assert md[0].startswith("| model | method | n | IoU ↑") and "deletion AUC ↓" in md[0]
    assert len(md) == 2 + 4
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 2 * 4  # best and worst per pair
    assert "<script" not in page and "baseline:centre" in page


# ------------------------------------------------------------------------------------ cost


def test_cost_counts_model_evaluations():
    vm = bright_model()
    image = square_sample(0).image
    forward, rows = cost_table(
        vm,
        image,
        ["gradcam", "occlusion", "cam"],
        params={"occlusion": {"window": 16, "stride": 16, "batch_size": 3}},
    )
    by = {r.method: r for r in rows}
    assert forward > 0
    assert (by["gradcam"].calls, by["gradcam"].images) == (1, 1)
    # occlusion: the clean image once, then 2x2 windows in batches of 3
    assert by["occlusion"].images == 1 + 4 and by["occlusion"].calls == 1 + 2
    assert all(r.seconds > 0 and r.ratio > 0 and r.error is None for r in rows)
    vm.module.fc = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    _, rows = cost_table(vm, image, ["cam"])
    assert rows[0].error is not None and math.isnan(rows[0].seconds)


def test_every_metric_column_on_the_bright_detector():
    from seethrough.evaluation import METRICS

    data = [square_sample(i) for i in range(3)]
    result = evaluate([bright_model()], data, ["gradcam"], metrics=METRICS, steps=6)
    rows = {r.method: r for r in result.summary()}
    good, noise = rows["gradcam"], rows["baseline:random"]
    assert good.iou_sweep > 0.5 > noise.iou_sweep
    # hiding the 10% most salient pixels (102 of 1024) hides the whole 64-pixel object
    assert good.hide_top == 1.0 and noise.hide_top == 0.0
    assert good.average_drop < noise.average_drop
    assert set(METRICS) <= set(good.as_dict())
    header = to_markdown(result).splitlines()[0]
    assert "IoU sweep ↑" in header and "avg drop ↓" in header and "label flips ↑" in header


def test_top1_is_accuracy_where_the_label_is_a_class_of_the_model():
    """Labels count for the models that have them, whatever is explained; another model (other
    label space) is scored by agreement with the majority, by class name."""
    bright = bright_model()
    other = bright_model()
    other.name, other.labels = "other", ["light", "shade"]  # the same net, other class names
    data = [square_sample(i) for i in range(2)]  # labelled 'bright'
    result = evaluate([bright, other], data, ["gradcam"], metrics=["iou"], target="predicted")
    top1 = {r.model: r.top1 for r in result.summary() if r.method == "gradcam"}
    assert top1["bright"] == 1.0  # accuracy against the labels
    assert top1["other"] == 0.0  # 'light' is not what the majority ('bright', first) says
    records = [r for r in result.records if r.model == "other"]
    assert all(r.truth is None and r.target == r.predicted == 0 for r in records)


# ------------------------------------------------------------- segmenters and detectors


class _Segmenter(nn.Module):
    """'dog' logits = 4 * sign * (brightness - 0.5) (sign 1: the bright square is the dog;
    -1: the dark background is), 'cat' a constant; as torchvision returns them."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign
        self.backbone = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.backbone.weight.fill_(1.0 / 3)
            self.backbone.bias.zero_()

    def forward(self, x):
        dog = 4 * self.sign * (self.backbone(x) - 0.5)
        return {"out": torch.cat([torch.zeros_like(dog), dog, torch.full_like(dog, -1.0)], 1)}


def segmenter(name: str, sign: float):
    from seethrough.models.detection import segmenter_model

    pre = Preprocessing(size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), resize="squash")
    return segmenter_model(
        _Segmenter(sign).eval(), ["background", "dog", "cat"], preprocessing=pre, name=name
    )


def write_voc(root, n=2):
    """A VOC layout: a bright 'dog' (class 12) square and a dark 'cat' (class 8) strip."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        classes = np.zeros((SIZE, SIZE), np.uint8)
        classes[4 + i : 14 + i, 6:16] = 12
        image[classes == 12] = 255
        classes[24:28, :] = 8
        classes[4 + i, 6:16] = 255  # a void border counts as neither
        Image.fromarray(image).save(root / "JPEGImages" / f"im{i}.jpg", quality=100)
        Image.fromarray(classes, mode="L").save(root / "SegmentationClass" / f"im{i}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(f"im{i}" for i in range(n)))
    return root


def test_voc_samples_keep_their_classes_and_objects(tmp_path):
    from seethrough.evaluation.data import class_masks, objects

    sample = load_folder(write_voc(tmp_path))[0]
    regions = class_masks(sample)
    assert [r.label for r in regions] == ["cat", "dog"]
    assert regions[1].mask.sum() == 10 * 10 - 10  # the void row is not the dog
    assert [r.label for r in objects(sample)] == ["cat", "dog"]  # connected regions


def test_segmenters_are_ranked_by_the_iou_of_their_class_maps(tmp_path):
    data = load_folder(write_voc(tmp_path))
    models = [segmenter("on", 1.0), segmenter("inverted", -1.0)]
    result = evaluate(models, data, ["saliency"], metrics=["iou", "pointing_game"], steps=4)
    rows = {(r.model, r.method): r for r in result.summary()}
    # per image: 'dog' (predicted: its mask) and 'cat' (predicted nowhere: its true pixels)
    assert rows["on", "saliency"].n == 4 and rows["on", "saliency"].found == 1.0
    dog = [r for r in result.records if r.model == "on" and r.target_label == "dog"]
    assert len(dog) == 2 * 3 and all(r.method != "saliency" or r.iou > 0.6 for r in dog)
    assert rows["on", "saliency"].iou > rows["inverted", "saliency"].iou + 0.2
    assert rows["on", "saliency"].iou > rows["on", "baseline:random"].iou
    text = to_markdown(result)
    assert "found" in text and "top-1" not in text and "s / image" in text


def test_a_detector_is_scored_per_object_and_found_is_its_recall():
    from tests.test_detection import REGION, H, W, spot_model

    image = np.zeros((H, W, 3), np.uint8)
    image[REGION] = 230
    classes = np.zeros((H, W), np.uint8)
    classes[REGION] = 1  # the spot, where the detector puts its box
    classes[60:80, 10:30] = 1  # a second spot, which it misses
    sample = Sample("two", image, classes > 0, classes=classes, class_names=["bg", "spot"])
    result = evaluate(
        [spot_model()], [sample], ["saliency"], metrics=["iou", "pointing_game", "deletion"]
    )
    (row, *_) = result.summary()
    assert row.method == "saliency" and row.n == 1 and row.found == 0.5
    assert row.pointing_game == 1.0 and row.iou > 0.3
    missed = [r for r in result.records if r.error is not None]
    assert missed and "no predicted box" in missed[0].error


def test_a_detector_asked_for_class_masks_is_refused_before_any_work():
    from tests.test_detection import spot_model

    with pytest.raises(InvalidParameterError, match="spot is a detector: it predicts boxes"):
        evaluate([spot_model()], [], ["saliency"], truth="masks")
    with pytest.raises(InvalidParameterError, match="is a classifier"):
        evaluate([bright_model()], [], ["saliency"], truth="boxes")

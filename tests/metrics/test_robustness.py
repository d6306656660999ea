"""seethrough.metrics.robustness: transforms, the map comparison and the metric end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seethrough
from seethrough.errors import InvalidParameterError, InvalidTargetError
from seethrough.metrics import (
    DEFAULT_TRANSFORMS,
    RobustnessResult,
    map_correlation,
    robustness,
    transform_input,
)
from seethrough.models import Preprocessing, VisionModel

from ..conftest import make_tiny

MEAN = (0.3, 0.5, 0.7)
STD = (0.2, 0.25, 0.3)


class Pointwise(nn.Module):
    """1x1 conv -> ReLU -> global average pool -> linear.

    Every pixel is processed alone and then averaged, so the output is invariant to any
    permutation of the pixels (flips, quarter turns) and Grad-CAM / gradient maps move with them.
    """

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


class Halves(nn.Module):
    """Class 0 scores the left half's brightness, class 1 the right half's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        return 10 * torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1)


def pointwise() -> Pointwise:
    torch.manual_seed(0)
    model = Pointwise().double().eval()
    with torch.no_grad():  # centre the units on grey, so they switch within [0, 1]
        model.conv.bias.copy_(-0.5 * model.conv.weight.sum((1, 2, 3)))
    return model


def image(h: int = 16, w: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def smooth(h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth image (a bicubic blow-up of 4x4 noise): rotation hardly changes its pixels."""
    coarse = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def vision_model() -> VisionModel:
    return VisionModel(
        make_tiny(),
        Preprocessing(size=16, mean=MEAN, std=STD),
        ["a", "b", "c", "d"],
        name="tiny",
        source="file",
        weights="random",
    )


# ---------------------------------------------------------------- comparison helper


def test_map_correlation_identical_geometry_is_one():
    m = np.random.default_rng(0).random((12, 12))
    assert map_correlation(m, m[:, ::-1], "hflip") == pytest.approx((1.0, 1.0))
    assert map_correlation(m, m[::-1], "vflip") == pytest.approx((1.0, 1.0))
    assert map_correlation(m, np.rot90(m), "rot90") == pytest.approx((1.0, 1.0))
    assert map_correlation(m, m, "brightness:1.3") == pytest.approx((1.0, 1.0))


def test_map_correlation_map_that_does_not_follow_is_low():
    m = np.random.default_rng(0).random((12, 12))
    pearson, spearman = map_correlation(m, m[:, ::-1], "identity")
    assert abs(pearson) < 0.5 and abs(spearman) < 0.5
    # a map that stays put while the image flips
    assert abs(map_correlation(m, m, "hflip")[1]) < 0.5
    # a left-right ramp flipped but not followed: perfectly anti-correlated
    ramp = np.tile(np.arange(8.0), (8, 1))
    assert map_correlation(ramp, ramp, "hflip") == pytest.approx((-1.0, -1.0))


def test_map_correlation_rotation_compares_only_valid_pixels():
    rng = np.random.default_rng(3)
    m = rng.random((20, 20))
    from seethrough.metrics.robustness import _parse

    t = _parse("rotate:15")
    moved = t.geometry(torch.from_numpy(m)[None, None])[0, 0].numpy()
    valid = t.valid(m.shape)
    assert 0.5 < valid.mean() < 1
    other = moved.copy()
    other[~valid] = rng.random((~valid).sum()) * 100  # garbage where the image is not
    assert map_correlation(m, other, "rotate:15") == pytest.approx((1.0, 1.0))


def test_map_correlation_constant_maps():
    m = np.random.default_rng(0).random((6, 6))
    assert map_correlation(np.ones((6, 6)), np.ones((6, 6))) == (1.0, 1.0)
    assert map_correlation(np.zeros((6, 6)), m) == (0.0, 0.0)


def test_map_correlation_shape_mismatch():
    with pytest.raises(InvalidParameterError, match="shape"):
        map_correlation(np.ones((4, 6)), np.ones((4, 6)), "rot90")


# ---------------------------------------------------------------- transform names


@pytest.mark.parametrize(
    "name, match",
    [
        ("rotate15", "unknown transform.*Did you mean"),
        ("sharpen", "unknown transform"),
        ("rotate", "needs an angle"),
        ("brightness:x", "not a number"),
        ("contrast:-1", ">= 0"),
        ("hflip:2", "takes no value"),
    ],
)
def test_bad_transform_names(name, match):
    with pytest.raises(InvalidParameterError, match=match):
        robustness(make_tiny(), image(), "saliency", transforms=[name])


def test_empty_and_repeated_transforms():
    with pytest.raises(InvalidParameterError, match="empty"):
        robustness(make_tiny(), image(), "saliency", transforms=[])
    with pytest.raises(InvalidParameterError, match="twice"):
        robustness(make_tiny(), image(), "saliency", transforms=["hflip", "HFlip"])


def test_callable_target_refused():
    with pytest.raises(InvalidTargetError):
        robustness(make_tiny(), image(), "saliency", target=lambda out: out[:, 0])


# ---------------------------------------------------------------- transforms of the input


def test_photometric_in_pixel_space_for_vision_model():
    vm = vision_model()
    x = vm.preprocess(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    pixels = torch.from_numpy(vm.preprocessing.denormalize(x)).permute(0, 3, 1, 2) / 255.0
    pixels = pixels.double()

    expected = ((pixels * 1.3).clamp(0, 1) - mean) / std
    got = transform_input(vm, x, "brightness:1.3")
    assert got.dtype == x.dtype and got.shape == x.shape
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)
    # not the same as scaling the normalised input
    assert not torch.allclose(got, x * 1.3, atol=1e-2)

    grey = (pixels * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1).mean()
    expected = ((grey + 0.7 * (pixels - grey)).clamp(0, 1) - mean) / std
    torch.testing.assert_close(
        transform_input(vm, x, "contrast:0.7").double(), expected, atol=1e-5, rtol=0
    )


def test_photometric_for_plain_module_and_geometric_on_input():
    x = image()[None]
    torch.testing.assert_close(transform_input(make_tiny(), x, "brightness:2"), (x * 2).clamp(0, 1))
    torch.testing.assert_close(transform_input(make_tiny(), x, "hflip"), x.flip(-1))
    torch.testing.assert_close(transform_input(make_tiny(), x, "rot90"), torch.rot90(x, 1, (2, 3)))


def test_robustness_feeds_the_model_pixel_space_changes():
    vm = vision_model()
    seen: list[torch.Tensor] = []
    vm.module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    robustness(vm, img, "saliency", transforms=["brightness:1.3"])
    x = vm.preprocess(img)
    expected = transform_input(vm, x, "brightness:1.3")[0]
    inputs = [row for batch in seen for row in batch]
    assert any(torch.allclose(row, expected, atol=1e-5) for row in inputs)


# ---------------------------------------------------------------- the metric


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_equivariant_model_gives_one(method):
    model = pointwise()
    r = robustness(model, smooth().double(), method, layer="relu")
    assert isinstance(r, RobustnessResult)
    assert np.unique(r.map).size > 10  # not a constant map, which would agree trivially
    assert [row.name for row in r.rows] == list(DEFAULT_TRANSFORMS)
    for name in ("hflip", "vflip", "rot90"):
        row = r[name]
        assert row.geometric and not row.prediction_changed
        assert row.new_class == r.prediction == r.target
        assert row.new_probability == pytest.approx(r.probability, abs=1e-9)
        assert row.pearson == pytest.approx(1, abs=1e-6)
        assert row.spearman == pytest.approx(1, abs=1e-6)
        assert row.compared == 1
    assert r["rotate:15"].compared < 1
    assert r["rotate:15"].spearman > 0.8
    assert not r["brightness:1.3"].geometric
    assert r.flip_rate == 0 or r.flip_rate == pytest.approx(1 / 6)  # only lighting may flip
    assert -1 <= r.mean_correlation <= 1
    assert r.mean_correlation == pytest.approx(np.mean([row.spearman for row in r.rows]))


def test_non_square_quarter_turn():
    model = pointwise()
    r = robustness(model, smooth(12, 20).double(), "saliency", transforms=["rot90", "hflip"])
    assert np.unique(r.map).size > 10
    assert r["rot90"].map.shape == (20, 12)
    assert r.map.shape == (12, 20)
    assert r["rot90"].spearman == pytest.approx(1, abs=1e-6)
    assert r["hflip"].spearman == pytest.approx(1, abs=1e-6)


def test_prediction_change_and_map_that_does_not_follow():
    x = torch.zeros(3, 8, 8)
    x[..., :4] = 0.8  # bright left half: class 0
    x[..., 4:] = 0.2
    r = robustness(Halves(), x, "saliency", transforms=["hflip", "vflip"])
    assert r.prediction == r.target == 0
    assert r["hflip"].prediction_changed and r["hflip"].new_class == 1
    assert r["hflip"].new_label is None
    assert r["hflip"].target_probability < 0.5
    assert not r["vflip"].prediction_changed
    assert r.flip_rate == 0.5
    # class 0's map stays on the left half while the image moved to the right
    assert r["hflip"].pearson == pytest.approx(-1)
    assert r["vflip"].pearson == pytest.approx(1)


def test_vision_model_labels_and_target():
    vm = vision_model()
    img = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    r = robustness(vm, img, "gradcam", target="c", transforms=["hflip", "contrast:0.7"])
    assert r.target == 2 and r.label == "c"
    assert r.rows[0].new_label in vm.labels
    assert r.map.shape == (16, 16)
    d = r.to_dict()
    assert d["method"] == "gradcam" and len(d["transforms"]) == 2
    assert "map" not in d["transforms"][0]


def test_model_state_restored():
    model = make_tiny()
    model.train()
    model.features[0].weight.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    robustness(model, image(), "gradcam", transforms=["hflip", "brightness:1.3"])
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_registered():
    info = {m.name: m for m in seethrough.metrics.list_metrics()}["robustness"]
    assert info.category == "robustness"
    assert info.higher_is_better is True
    assert info.needs == ("model", "image", "method")
    assert info.range == (-1, 1)
    assert info.func is robustness

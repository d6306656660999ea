"""Synthetic digits: the generator's guarantees, the trained model, its cache and the zoo entry."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

import seethrough
from seethrough.datasets.synthetic import digit_sources, make_digits, write_folder
from seethrough.errors import (
    InvalidParameterError,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from seethrough.models import digits
from seethrough.models.digits import (
    DigitsNet,
    accuracy,
    cache_path,
    load_digits_model,
    train_digits_model,
)

ARRAYS = ("images", "masks", "boxes", "labels", "sources")


@pytest.fixture(scope="module")
def data():
    return make_digits(200, seed=3)


@pytest.fixture(scope="module")
def backgrounds():
    return make_digits(200, seed=3, with_digit=False)


# ---------------------------------------------------------------------------------- generator


def test_shapes_and_dtypes(data):
    assert len(data) == 200 and data.split == "train" and data.seed == 3
    assert data.images.shape == (200, 64, 64, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (200, 64, 64) and data.masks.dtype == bool
    assert data.boxes.shape == (200, 4) and data.boxes.dtype == np.int64
    assert data.labels.shape == data.sources.shape == (200,) and data.labels.dtype == np.int64
    assert data.label_names == tuple("0123456789")
    small = make_digits(3, size=32, seed=3)
    assert small.images.shape == (3, 32, 32, 3) and small.masks.any(axis=(1, 2)).all()
    assert len(make_digits(0)) == 0


def test_deterministic_and_prefix_stable(data):
    again = make_digits(200, seed=3)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(data, name), getattr(again, name))
    head = make_digits(7, seed=3)  # image i does not depend on n
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(head, name), getattr(data, name)[:7])
    other = make_digits(200, seed=4)
    assert not np.array_equal(other.images, data.images)
    assert not np.array_equal(other.labels, data.labels)


def test_masks_boxes_and_labels(data):
    areas = data.masks.sum(axis=(1, 2))
    assert (areas > 100).all() and (areas < 0.4 * 64 * 64).all()
    x0, y0, x1, y1 = data.boxes.T
    assert ((0 <= x0) & (x0 < x1) & (x1 <= 64) & (0 <= y0) & (y0 < y1) & (y1 <= 64)).all()
    for mask, (a, b, c, d) in zip(data.masks, data.boxes, strict=True):
        assert mask[b:d, a:c].sum() == mask.sum()  # the box holds the whole mask, tightly
        assert mask[b, a:c].any() and mask[d - 1, a:c].any() and mask[b:d, a].any()
    sides = np.maximum(x1 - x0, y1 - y0)
    assert sides.min() >= 15 and sides.max() <= 56 and sides.std() > 3  # varied scale
    counts = np.bincount(data.labels, minlength=10)
    assert len(counts) == 10 and counts.min() >= 5  # every class, roughly balanced


def test_digit_contrasts_with_its_background(data, backgrounds):
    np.testing.assert_array_equal(backgrounds.masks, data.masks)
    np.testing.assert_array_equal(backgrounds.labels, data.labels)
    diff = np.abs(data.images.astype(int) - backgrounds.images.astype(int)).max(axis=3)
    inside = np.array([d[m].mean() for d, m in zip(diff, data.masks, strict=True)])
    outside = np.array([d[~m].mean() for d, m in zip(diff, data.masks, strict=True)])
    assert inside.min() > 25 and np.median(inside) > 60  # the digit stands out where it is ...
    assert outside.max() < 0.5  # ... and nowhere else (only its soft edge spills over the mask)


def test_clutter_is_textured(backgrounds):
    images = backgrounds.images.astype(np.float32)
    assert images.std(axis=(1, 2)).mean() > 20  # not flat
    edges = np.abs(np.diff(images, axis=2)).max(axis=3) > 40  # sharp edges of rectangles / lines
    assert edges.any(axis=(1, 2)).mean() > 0.5


def test_splits_use_disjoint_digit_sources():
    train, test = digit_sources("train"), digit_sources("test")
    assert not set(train) & set(test) and len(train) + len(test) == 1797
    assert 300 < len(test) < 400
    assert set(make_digits(300, seed=1, split="train").sources) <= set(train)
    assert set(make_digits(300, seed=1, split="test").sources) <= set(test)


@pytest.mark.parametrize(
    "kwargs", [{"n": -1}, {"n": 2.5}, {"size": 8}, {"seed": -1}, {"split": "val"}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(InvalidParameterError):
        make_digits(**{"n": 4, **kwargs})


def test_write_folder(tmp_path):
    root = write_folder(tmp_path / "set", 5, seed=2)
    data = make_digits(5, seed=2, split="test")
    images = sorted(p.name for p in (root / "images").iterdir())
    masks = sorted(p.name for p in (root / "masks").iterdir())
    assert images == masks == [f"digit{i:04d}.png" for i in range(5)]
    with (root / "labels.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "label"]
    assert rows[1:] == [[f"digit{i:04d}", str(label)] for i, label in enumerate(data.labels)]
    for i in range(5):
        image = Image.open(root / "images" / f"digit{i:04d}.png")
        mask = Image.open(root / "masks" / f"digit{i:04d}.png")
        assert image.mode == "RGB" and mask.mode == "L" and image.size == mask.size == (64, 64)
        np.testing.assert_array_equal(np.asarray(image), data.images[i])
        np.testing.assert_array_equal(np.asarray(mask), data.masks[i] * np.uint8(255))


# -------------------------------------------------------------------------------------- model


def test_digits_net_is_cam_ready():
    net = DigitsNet().eval()
    features = dict(net.named_modules())[digits.DEFAULT_LAYER]
    seen = []
    features.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    assert seen == [(2, 64, 16, 16)]
    assert isinstance(net.fc, torch.nn.Linear)


def test_training_is_deterministic_and_restores_threads():
    threads = torch.get_num_threads()
    kwargs = dict(n_train=48, epochs=1, batch=16, n_test=20, seed=5, threads=1, progress=False)
    first, info = train_digits_model(**kwargs)
    second, _ = train_digits_model(**kwargs)
    assert torch.get_num_threads() == threads
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not first.training and {"test_accuracy", "background_accuracy", "seconds"} <= set(info)


def test_zoo_random_init_and_weights_file(tmp_path):
    from safetensors.torch import save_file

    assert seethrough.list_models(source="synthetic") == ["synthetic_digits"]
    assert seethrough.list_models()[:2] == ["efficientnet_lite0", "synthetic_digits"]
    vm = seethrough.load_model("synthetic_digits", weights="none")
    assert (vm.source, vm.weights, vm.labels) == ("synthetic", "none (random)", list("0123456789"))
    assert vm.default_layer == digits.DEFAULT_LAYER and isinstance(vm.module, DigitsNet)
    pre = vm.preprocessing
    assert (pre.size, pre.resize, pre.mean, pre.std) == (
        64,
        "squash",
        digits.MEAN,
        digits.STD,
    )
    torch.manual_seed(1)
    state = DigitsNet().state_dict()
    path = tmp_path / "digits.safetensors"
    save_file(state, str(path))
    loaded = seethrough.load_model("synthetic_digits", weights=path)
    assert loaded.weights == str(path) and loaded.labels == list("0123456789")
    for k, v in loaded.module.state_dict().items():
        assert torch.equal(v, state[k]), k


# ------------------------------------------------------------------- trained model and cache


def needs_training(test):
    """Slow, with room for the one training (~1.5 min, more on a busy machine) in its setup."""
    return pytest.mark.slow(pytest.mark.timeout(900)(test))


@pytest.fixture(scope="module")
def cache(digits_cache):
    """The cache folder holding the real trained model (see ``digits_cache`` in conftest)."""
    return digits_cache


@pytest.fixture
def no_training(monkeypatch):
    def refuse(**kwargs):
        raise AssertionError("the trainer must not run: the cache holds the weights")

    monkeypatch.setattr(digits, "train_digits_model", refuse)


@needs_training
def test_trained_model_is_accurate_on_held_out_digits_only(cache, no_training):
    files = sorted(p.name for p in cache.iterdir())
    assert files == ["synthetic_digits-v2.json", "synthetic_digits-v2.safetensors"]  # no temp
    info = json.loads((cache / "synthetic_digits-v2.json").read_text())
    assert info["version"] == "v2" and info["seed"] == 0 and info["test_accuracy"] >= 0.9
    assert {"seconds", "torch", "numpy", "sklearn"} <= set(info)
    model = load_digits_model(cache_dir=cache)
    held_out = make_digits(400, seed=11, split="test")
    assert accuracy(model, held_out) >= 0.9
    # without the digit (the same clutter), the model is near chance: the class is the digit's
    assert accuracy(model, make_digits(400, seed=11, split="test", with_digit=False)) < 0.25


@needs_training
def test_cache_is_reused_without_training(cache, no_training):
    start = time.perf_counter()
    first = load_digits_model(cache_dir=cache)
    second = load_digits_model(cache_dir=cache)
    assert time.perf_counter() - start < 10
    assert not first.training and first is not second
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@needs_training
def test_broken_cache_is_a_clear_error(cache, no_training, tmp_path):
    path = cache_path(tmp_path)
    path.write_bytes((cache / path.name).read_bytes()[:1000])  # truncated
    with pytest.raises(WeightsUnavailableError, match="retrain=True"):
        load_digits_model(cache_dir=tmp_path)
    from safetensors.torch import save_file

    save_file(DigitsNet(width=32).state_dict(), str(path))  # another architecture
    with pytest.raises(WeightsMismatchError, match="do not fit DigitsNet"):
        load_digits_model(cache_dir=tmp_path)


def test_retrain_overwrites_the_cache(tmp_path, monkeypatch, capsys):
    calls = []

    def tiny(**kwargs):  # a different seed per call, so that each training gives other weights
        calls.append(kwargs)
        kwargs = dict(n_train=16, epochs=1, batch=16, n_test=10, progress=False)
        return train_digits_model(seed=len(calls), **kwargs)

    monkeypatch.setattr(digits, "train_digits_model", tiny)
    monkeypatch.setenv("SEETHROUGH_CACHE", str(tmp_path))
    assert cache_path() == tmp_path / "synthetic_digits-v2.safetensors"
    first = load_digits_model(progress=False)
    assert "training the synthetic digits model once" in capsys.readouterr().err
    assert len(calls) == 1 and cache_path().is_file()
    cached = load_digits_model()
    assert len(calls) == 1 and torch.equal(cached.fc.weight, first.fc.weight)
    second = load_digits_model(retrain=True, progress=False)
    assert len(calls) == 2 and not torch.equal(second.fc.weight, first.fc.weight)
    assert torch.equal(load_digits_model().fc.weight, second.fc.weight)
    assert json.loads(cache_path().with_suffix(".json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synthetic_digits-v2.json",
        "synthetic_digits-v2.safetensors",
    ]


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("SEETHROUGH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_path() == tmp_path / "seethrough" / "synthetic_digits-v2.safetensors"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path().parent == tmp_path / "home" / ".cache" / "seethrough"
    assert cache_path(tmp_path / "x").parent == tmp_path / "x"


@needs_training
def test_zoo_model_explains_the_digit(cache, no_training, monkeypatch):
    monkeypatch.setenv("SEETHROUGH_CACHE", str(cache))
    vm = seethrough.load_model("synthetic_digits")
    assert vm.source == "synthetic" and str(cache) in vm.weights
    data = make_digits(12, seed=21, split="test")
    with torch.no_grad():
        direct = load_digits_model(cache_dir=cache)(digits._to_input(data.images))
        torch.testing.assert_close(vm(vm.preprocess(list(data.images))), direct)
    inside = []
    for image, mask, label in zip(data.images, data.masks, data.labels, strict=True):
        e = seethrough.explain(vm, image, "gradcam", target=int(label))
        assert e.map.shape == (64, 64) and e.layer == digits.DEFAULT_LAYER
        inside.append(e.map[mask].mean() > e.map[~mask].mean())
    assert np.mean(inside) >= 0.8  # Grad-CAM looks at the digit


def test_the_model_names_still_resolve_from_the_data_set_modules():
    from seethrough import datasets
    from seethrough.datasets import synthetic

    for name in ("DigitsNet", "load_digits_model", "train_digits_model"):
        assert getattr(datasets, name) is getattr(digits, name)
    for name in ("MEAN", "STD", "PREPROCESSING", "DEFAULT_LAYER", "cache_path", "accuracy"):
        assert getattr(synthetic, name) is getattr(digits, name)
    with pytest.raises(AttributeError):
        synthetic.no_such_name  # noqa: B018
    with pytest.raises(AttributeError):
        datasets.no_such_name  # noqa: B018

"""Tests for the model zoo, preprocessing, VisionModel and output_to_tensor (all offline)."""

from __future__ import annotations

import urllib.error
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from seethrough.core.outputs import output_to_tensor
from seethrough.errors import (
    InvalidParameterError,
    ModelOutputError,
    SeethroughError,
    UnknownClassError,
    UnknownModelError,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from seethrough.images import sample_image
from seethrough.models import (
    Prediction,
    Preprocessing,
    VisionModel,
    generic_labels,
    imagenet_labels,
    list_models,
    load_model,
    zoo,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0() -> VisionModel:
    return load_model()


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


class Tiny(nn.Module):
    """A small CNN classifier (conv, BN, pool, linear) for fast tests."""

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _tiny_model(module: nn.Module | None = None, classes: int = 7) -> VisionModel:
    return VisionModel(
        module or Tiny(classes),
        Preprocessing(size=32),
        generic_labels(classes),
        name="tiny",
        source="test",
        weights="none (random)",
    )


# ------------------------------------------------------------------------------ bundled model


def test_bundled_model_metadata(lite0):
    assert lite0.name == "efficientnet_lite0" and lite0.source == "bundled"
    assert lite0.weights == "bundled ImageNet weights"
    assert lite0.labels == imagenet_labels() and len(lite0.labels) == 1000
    assert lite0.default_layer == "bn2"
    assert not lite0.module.training and lite0.device == torch.device("cpu")
    pre = lite0.preprocessing
    assert (pre.size, pre.resize, pre.crop_pct, pre.interpolation) == (
        224,
        "squash",
        0.875,
        "bicubic",
    )
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    text = lite0.describe()
    assert "efficientnet_lite0" in text and "3x224x224" in text and "4,652,008" in text


def test_predict_chelsea_is_a_cat(lite0):
    top = lite0.predict(sample_image("chelsea"))
    assert len(top) == 5 and all(isinstance(p, Prediction) for p in top)
    assert top[0].index in CAT_CLASSES
    assert top[0].label == lite0.labels[top[0].index]
    probabilities = [p.probability for p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6


def test_predict_coffee_is_espresso(lite0):
    assert lite0.predict("sample:coffee", k=1)[0][:2] == (ESPRESSO, "espresso")


def test_predict_batches_and_k(lite0):
    images = [sample_image("chelsea"), np.asarray(sample_image("coffee"))]
    batch = lite0.predict(images, k=2)
    assert len(batch) == 2 and all(len(row) == 2 for row in batch)
    assert batch[1][0].index == ESPRESSO
    x = lite0.preprocess(images)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    from_tensor = lite0.predict(x, k=2)
    assert [[p.index for p in row] for row in from_tensor] == [
        [p.index for p in row] for row in batch
    ]
    one = lite0.predict(x[1], k=5000)  # (3, H, W): one image; k clipped to the classes
    assert len(one) == 1000 and one[0].index == ESPRESSO
    with pytest.raises(InvalidParameterError):
        lite0.predict(x[0], k=0)
    with pytest.raises(InvalidParameterError):
        lite0.predict(torch.zeros(2, 2, dtype=torch.long))


def test_each_load_gives_a_fresh_module(lite0):
    other = load_model()
    assert other.module is not lite0.module
    with torch.no_grad():
        other.module.classifier.bias.add_(1.0)
    assert not torch.equal(other.module.classifier.bias, lite0.module.classifier.bias)
    assert not torch.equal(load_model().module.classifier.bias, other.module.classifier.bias)


def test_remap_rejects_tampered_weights():
    real = zoo._read_bundled_weights()
    template = zoo._architecture("bundled", "efficientnet_lite0").state_dict()
    assert len(zoo.remap_in_order(real, template)) == len(template)
    tampered = dict(real)
    tampered["_fc.weight"] = torch.zeros(10, 1280)
    with pytest.raises(
        WeightsMismatchError, match=r"_fc\.weight \(10, 1280\) vs classifier\.weight"
    ):
        zoo.remap_in_order(tampered, template)
    tampered.pop("_fc.bias")
    with pytest.raises(WeightsMismatchError, match="295 tensors .* expects 296"):
        zoo.remap_in_order(tampered, template)


def test_load_model_rejects_tampered_bundle(monkeypatch):
    real = zoo._read_bundled_weights()
    tampered = dict(real)
    tampered["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    monkeypatch.setattr(zoo, "_read_bundled_weights", lambda: tampered)
    zoo._bundled_state_dict.cache_clear()
    try:
        with pytest.raises(WeightsMismatchError, match="conv_stem"):
            load_model()
    finally:
        zoo._bundled_state_dict.cache_clear()


def test_random_bundled_and_overrides():
    model = load_model(weights="none", size=160, resize="squash", mean=(0.5, 0.5, 0.5))
    assert model.weights == "none (random)" and model.source == "bundled"
    assert model.preprocessing.size == 160 and model.preprocessing.resize == "squash"
    assert model.preprocessing.mean == (0.5, 0.5, 0.5)
    assert model.preprocess("sample:chelsea").shape == (1, 3, 160, 160)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocessing_describe():
    assert Preprocessing(resize="crop").describe() == (
        "resize shorter side to 256 (bilinear), centre-crop 224x224, scale to [0,1], "
        "normalise mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)"
    )
    squash = Preprocessing(
        size=(128, 96), resize="squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    assert squash.describe().startswith("resize to 128x96 (bilinear, aspect ratio not kept)")
    assert "mean=(0.5, 0.5, 0.5)" in squash.describe()


def test_crop_and_squash_shapes():
    image = sample_image("chelsea")  # 451x300, not square
    crop, squash = (
        Preprocessing(size=(96, 128), resize="crop"),
        Preprocessing(size=(96, 128), resize="squash"),
    )
    assert crop(image).shape == squash(image).shape == (1, 3, 96, 128)
    assert crop([image, image]).shape == (2, 3, 96, 128)
    assert crop.display_image(image).shape == (96, 128, 3)
    assert crop.transform_one(image).shape == (3, 96, 128)
    expected = np.asarray(image.resize((128, 96), 2))  # PIL bilinear: aspect not kept
    assert np.array_equal(squash.display_image(image), expected)
    assert not np.array_equal(crop.display_image(image), expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mean": (0.5, 0.5)},
        {"mean": (0.5, float("nan"), 0.5)},
        {"mean": "abc"},
        {"std": (0.2, 0.0, 0.2)},
        {"std": (0.2, -1.0, 0.2)},
        {"size": 0},
        {"size": 5000},
        {"size": (224, 0)},
        {"size": True},
        {"crop_pct": 0.0},
        {"crop_pct": 1.5},
        {"resize": "stretch"},
        {"interpolation": "lanczos"},
    ],
)
def test_preprocessing_validation(kwargs):
    with pytest.raises(InvalidParameterError):
        Preprocessing(**kwargs)


def test_preprocessing_dict_and_replace():
    pre = Preprocessing(size=(160, 192), crop_pct=0.9, interpolation="bicubic")
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert pre.to_dict()["size"] == [160, 192]
    with pytest.raises(InvalidParameterError, match="colour"):
        Preprocessing.from_dict({"colour": "red"})
    changed = pre.replace(size=64, std=[1, 1, 1])
    assert changed.size == 64 and changed.std == (1.0, 1.0, 1.0) and changed.crop_pct == 0.9
    assert pre.size == (160, 192)
    with pytest.raises(InvalidParameterError):
        pre.replace(resize="zoom")  # type: ignore[arg-type]


def test_denormalize_round_trips_display_image():
    pre = Preprocessing(size=64)
    images = [sample_image("astronaut"), sample_image("coins")]
    shown = np.stack([pre.display_image(i) for i in images])
    batch = pre(images)
    assert np.array_equal(pre.denormalize(batch), shown)  # rounded to nearest, not truncated
    assert np.array_equal(pre.denormalize(batch[0]), shown[0])
    assert pre.denormalize(batch).dtype == np.uint8
    far = torch.stack([torch.full((3, 2, 2), -50.0), torch.full((3, 2, 2), 50.0)])
    assert pre.denormalize(far)[0].max() == 0 and pre.denormalize(far)[1].min() == 255
    with pytest.raises(InvalidParameterError):
        pre.denormalize(torch.zeros(4, 8, 8))


# ----------------------------------------------------------------------- torchvision and timm


def test_torchvision_random_offline():
    model = load_model("resnet18", weights="none")
    assert (model.source, model.weights, model.name) == ("torchvision", "none (random)", "resnet18")
    assert model.labels == imagenet_labels() and model.preprocessing == Preprocessing()
    assert not model.module.training
    assert load_model("torchvision:resnet18", weights=None).source == "torchvision"


def test_download_failure_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("resnet18")
    message = str(info.value)
    assert calls and "\n" not in message
    assert "'resnet18'" in message and "--weights none" in message and "--weights PATH" in message


def test_timm_random():
    model = load_model("timm:resnet10t", weights="none")
    assert (model.source, model.name) == ("timm", "resnet10t")
    assert model.preprocessing.size == 176 and model.preprocessing.interpolation == "bicubic"
    lite = load_model("timm:efficientnet_lite0", weights="none")
    assert lite.source == "timm" and len(lite.labels) == 1000


def test_timm_name_without_prefix():
    assert load_model("resnet10t", weights="none").source == "timm"


def test_list_models():
    names = list_models()
    assert names[0] == "efficientnet_lite0" and len(names) == len(set(names))
    assert "resnet18" in names and "resnet10t" in names
    assert list_models(source="bundled") == ["efficientnet_lite0"]
    torchvision_names = list_models(source="torchvision")
    assert "vgg16" in torchvision_names and "resnet10t" not in torchvision_names
    assert torchvision_names == sorted(torchvision_names)
    assert "efficientnet_lite0" in list_models(source="timm")
    assert set(list_models("resnet1*")) >= {"resnet18", "resnet10t"}
    with pytest.raises(InvalidParameterError, match="torchvision"):
        list_models(source="hub")


def test_unknown_model_suggests():
    with pytest.raises(UnknownModelError, match="Did you mean: resnet18"):
        load_model("resnt18")
    with pytest.raises(UnknownModelError, match="resnet10t"):
        load_model("timm:resnet10q")
    with pytest.raises(UnknownModelError):
        load_model("torchvision:resnet10t")


# ------------------------------------------------------------------------------ local files


def _forward(model: VisionModel) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model.module(torch.randn(1, 3, 64, 64))


def test_safetensors_and_pt_round_trip(tmp_path, resnet18_state):
    save_file(resnet18_state, tmp_path / "r18.safetensors")
    torch.save(resnet18_state, tmp_path / "r18.pt")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in resnet18_state.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    reference = torchvision.models.resnet18()
    reference.load_state_dict(resnet18_state)
    expected = _forward(
        VisionModel(reference.eval(), Preprocessing(), [], name="r", source="t", weights="t")
    )
    models = [
        load_model("resnet18", weights=tmp_path / "r18.safetensors"),
        load_model("resnet18", weights=str(tmp_path / "r18.pt")),
        load_model(tmp_path / "wrapped.pth", arch="resnet18"),
    ]
    for model in models:
        assert model.source == "torchvision" and model.labels == imagenet_labels()
        assert torch.equal(_forward(model), expected)
    assert models[0].weights == str(tmp_path / "r18.safetensors")


def test_ten_class_state_dict(tmp_path):
    save_file(
        torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "ten.safetensors"
    )
    model = load_model("resnet18", weights=tmp_path / "ten.safetensors")
    assert model.labels == generic_labels(10)
    assert _forward(model).shape == (1, 10)


def test_mismatched_weights_file(tmp_path, resnet18_state):
    broken = dict(resnet18_state)
    broken.pop("layer1.0.conv1.weight")
    broken["extra.weight"] = torch.zeros(1)
    broken["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(WeightsMismatchError) as info:
        load_model("resnet18", weights=tmp_path / "broken.pt")
    message = str(info.value)
    for part in (
        "broken.pt",
        "1 missing (layer1.0.conv1.weight)",
        "1 unexpected (extra.weight)",
        "conv1.weight (64, 3, 5, 5) vs (64, 3, 7, 7)",
    ):
        assert part in message
    save_file(resnet18_state, tmp_path / "r18.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"missing .*\.\.\."):
        load_model("resnet50", weights=tmp_path / "r18.safetensors")


def test_torchscript_file(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Tiny(7).eval(), torch.zeros(1, 3, 16, 16)).save(str(tmp_path / "tiny.pt"))
        torch.jit.trace(Tiny(1000).eval(), torch.zeros(1, 3, 16, 16)).save(str(tmp_path / "big.pt"))
    model = load_model(tmp_path / "tiny.pt")
    assert (model.source, model.name, model.labels) == ("file", "tiny", generic_labels(7))
    assert len(model.predict("sample:chelsea", k=3)) == 3
    assert load_model(str(tmp_path / "big.pt")).labels == imagenet_labels()
    with pytest.raises(InvalidParameterError, match="TorchScript"):
        load_model(tmp_path / "tiny.pt", arch="resnet18")


class _Payload:
    """Pickling this would touch a marker file when unpickled: it must never run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(InvalidParameterError, match="evil.pt.*weights_only") as info:
        load_model("resnet18", weights=tmp_path / "evil.pt")
    assert isinstance(info.value, SeethroughError) and not marker.exists()
    with pytest.raises(InvalidParameterError):
        load_model(tmp_path / "evil.pt", arch="resnet18")
    assert not marker.exists()


def test_bad_paths_and_arguments(tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "plain.pt")
    with pytest.raises(InvalidParameterError, match="arch=NAME"):
        load_model(tmp_path / "plain.pt")
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_model("models/missing.safetensors")
    with pytest.raises(InvalidParameterError, match="'default', 'none'"):
        load_model("resnet18", weights="defualt")
    with pytest.raises(InvalidParameterError, match="extension"):
        (tmp_path / "w.npz").write_bytes(b"x")
        load_model("resnet18", weights=tmp_path / "w.npz")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidParameterError, match="junk.pt"):
        load_model("resnet18", weights=tmp_path / "junk.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(InvalidParameterError, match="state dict"):
        load_model("resnet18", weights=tmp_path / "list.pt")


# ------------------------------------------------------------------------------- VisionModel


def test_class_index(lite0):
    assert lite0.class_index("Egyptian cat") == 285
    assert lite0.class_index("egyptian CAT") == 285
    assert lite0.class_index("gyptian") == 285
    assert lite0.class_index("espresso") == ESPRESSO
    assert lite0.class_index(281) == 281 and lite0.class_index(np.int64(3)) == 3
    with pytest.raises(UnknownClassError, match="ambiguous"):
        lite0.class_index("cat")
    with pytest.raises(UnknownClassError, match="Did you mean"):
        lite0.class_index("espreso machine")
    for bad in (1000, -1, True, 2.5):
        with pytest.raises(UnknownClassError):
            lite0.class_index(bad)


def test_predict_restores_train_mode():
    module = Tiny()
    module.train()
    module.features[1].eval()  # a mixed state must come back exactly
    model = _tiny_model(module)
    flags = [m.training for m in module.modules()]
    before = module.features[1].running_mean.clone()
    model.predict(torch.randn(3, 32, 32))
    assert [m.training for m in module.modules()] == flags
    assert torch.equal(module.features[1].running_mean, before)  # ran in eval mode


def test_predict_restores_train_mode_on_error():
    class Failing(Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert not self.training
            raise RuntimeError("boom")

    module = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        _tiny_model(module).predict(torch.randn(3, 32, 32))
    assert all(m.training for m in module.modules())


def test_predict_reads_dict_outputs_and_checks_shape():
    class DictOut(Tiny):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": super().forward(x), "aux": x}

    assert len(_tiny_model(DictOut()).predict(torch.randn(3, 32, 32), k=3)) == 3

    class Flat(Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).flatten()

    with pytest.raises(ModelOutputError, match="shape"):
        _tiny_model(Flat()).predict(torch.randn(2, 3, 32, 32))


def test_vision_model_basics():
    model = _tiny_model()
    assert model.to("cpu") is model and model.device == torch.device("cpu")
    assert _tiny_model(nn.Identity()).device == torch.device("cpu")
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 7)
    assert model.label(3) == "class 3" and model.label(99) == "class 99"
    assert "tiny" in repr(model)


# ----------------------------------------------------------------------------- model outputs


def test_output_to_tensor():
    t = torch.ones(2, 3)
    assert output_to_tensor(t) is t
    assert output_to_tensor((t, torch.zeros(1))) is t
    assert output_to_tensor(["aux", t]) is t
    assert output_to_tensor({"logits": t, "out": None}) is t
    assert output_to_tensor({"out": t, "aux": torch.zeros(1)}) is t
    assert output_to_tensor({"scores": t}) is t
    assert output_to_tensor(SimpleNamespace(logits=t)) is t
    with pytest.raises(ModelOutputError, match="str"):
        output_to_tensor("logits")
    with pytest.raises(ModelOutputError, match="dict"):
        output_to_tensor({"a": t, "b": t})
    with pytest.raises(ModelOutputError, match="tuple"):
        output_to_tensor(("no", "tensor"))

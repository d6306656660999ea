"""Core pieces: layer lookup, targets, hooks, state protection, input handling of explain()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import seethrough
from seethrough.core.hooks import Recorder, count_hooks
from seethrough.core.layers import default_layer, named_modules, resolve_layer
from seethrough.core.state import preserved_state
from seethrough.core.targets import resolve_target
from seethrough.errors import (
    InvalidImageError,
    InvalidTargetError,
    UnknownClassError,
    UnknownLayerError,
    UnknownMethodError,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18", "layer4"),
        ("vgg11", "features"),
        ("densenet121", "features"),
        ("mobilenet_v2", "features"),
        # fully convolutional: the last spatial map is the 1000-channel class map before pooling
        ("squeezenet1_1", "classifier.2"),
    ],
)
def test_default_layer_is_the_last_spatial_one(name, expected):
    model = torchvision.models.get_model(name, weights=None).eval()
    assert default_layer(model, torch.rand(1, 3, 224, 224)) == expected


def test_resolve_layer_by_name_module_and_errors(tiny):
    assert resolve_layer(tiny, "features.2")[1] is tiny.features[2]
    assert resolve_layer(tiny, tiny.features)[0] == "features"
    with pytest.raises(UnknownLayerError, match="features"):
        resolve_layer(tiny, "featurs")
    with pytest.raises(UnknownLayerError, match="not a submodule"):
        resolve_layer(tiny, nn.ReLU())


def test_recorder_keeps_what_the_module_produced_despite_inplace_ops(tiny_input):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True)).eval()
    with Recorder({"0": model[0]}) as rec:
        model(tiny_input)
    assert (rec.outputs["0"] < 0).any(), "stored activation was modified by the in-place ReLU"
    assert count_hooks(model) == 0


def test_recorder_removes_hooks_when_forward_fails(tiny):
    with pytest.raises(RuntimeError), Recorder({"features": tiny.features}):
        tiny(torch.rand(1, 5, 16, 16))  # wrong channel count
    assert count_hooks(tiny) == 0


def test_preserved_state_restores_swapped_modules_and_flags(tiny):
    tiny.train()
    original = tiny.features[1]
    with pytest.raises(ValueError), preserved_state(tiny, modules=True):
        assert not tiny.training
        tiny.features[1] = nn.Tanh()
        tiny.fc.weight.requires_grad_(False)
        raise ValueError
    assert tiny.training and tiny.features[1] is original and tiny.fc.weight.requires_grad


def test_resolve_target_variants():
    out = torch.tensor([[0.1, 2.0, 0.3], [3.0, 0.0, 1.0]])
    assert resolve_target(None, out).classes == (1, 0)
    assert resolve_target(2, out).classes == (2, 2)
    assert resolve_target([0, 1], out).classes == (0, 1)
    custom = resolve_target(lambda o: o[:, 0] - o[:, 1], out)
    assert custom.classes == (None, None)
    torch.testing.assert_close(custom(out), torch.tensor([-1.9, 3.0]))
    torch.testing.assert_close(resolve_target([2, None], out)(out), torch.tensor([0.3, 3.0]))
    with pytest.raises(UnknownClassError):
        resolve_target(3, out)
    with pytest.raises(UnknownClassError, match="no class labels"):
        resolve_target("cat", out)
    with pytest.raises(InvalidTargetError, match="3 targets"):
        resolve_target([0, 1, 2], out)
    with pytest.raises(InvalidTargetError, match="one score per sample"):
        resolve_target(lambda o: o, out)
    with pytest.raises(InvalidTargetError):
        resolve_target(1.5j, out)


def test_unknown_method_suggests(tiny, tiny_input):
    with pytest.raises(UnknownMethodError, match="gradcam"):
        seethrough.explain(tiny, tiny_input, "grad-cam")


def test_explain_accepts_every_image_kind(lite0, tmp_path):
    rgb = np.asarray(seethrough.images.sample_image("coffee"))
    gray = Image.fromarray(rgb.mean(axis=2).astype(np.uint8))
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    palette = Image.fromarray(rgb).convert("P")
    wide = rgb.astype(np.uint16) * 257
    path = tmp_path / "coffee.png"
    Image.fromarray(rgb).save(path)
    inputs = [str(path), path, Image.fromarray(rgb), rgb, rgb / 255.0, gray, rgba, palette, wide]
    reference = seethrough.explain(lite0, Image.fromarray(rgb), "gradcam")
    for item in inputs:
        e = seethrough.explain(lite0, item, "gradcam")
        assert e.map.shape == (224, 224) and e.image.shape == (224, 224, 3)
        assert e.label in {"espresso", "cup", "coffee mug"}
    for item in (rgba, rgb, wide):
        np.testing.assert_allclose(
            seethrough.explain(lite0, item, "gradcam").raw, reference.raw, atol=1e-4
        )
    batch = seethrough.explain(lite0, [rgb, gray], "gradcam")
    assert len(batch) == 2


def test_explain_rejects_bad_inputs(lite0, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(InvalidImageError, match="notes.jpg"):
        seethrough.explain(lite0, text, "gradcam")
    with pytest.raises(InvalidImageError):
        seethrough.explain(lite0, torch.zeros(3, 8, 8, dtype=torch.uint8), "gradcam")
    with pytest.raises(InvalidImageError):
        seethrough.explain(lite0, [], "gradcam")


def test_tensor_input_is_taken_as_model_input(lite0):
    x = lite0.preprocess(seethrough.images.sample_image("chelsea"))
    from_tensor = seethrough.explain(lite0, x[0], "gradcam")
    from_image = seethrough.explain(lite0, "sample:chelsea", "gradcam")
    np.testing.assert_allclose(from_tensor.raw, from_image.raw, rtol=1e-5, atol=1e-6)
    assert abs(from_tensor.image.astype(int) - from_image.image.astype(int)).max() <= 1


def test_plain_module_with_raw_image_is_scaled_only(tiny):
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    e = seethrough.explain(tiny, image, "gradcam")
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    expected = seethrough.explain(tiny, x, "gradcam")[0]
    np.testing.assert_allclose(e.raw, expected.raw, rtol=1e-5, atol=1e-7)


def test_named_modules_equals_torchs_walk_with_shared_and_missing_children():
    shared = nn.Conv2d(3, 3, 1)
    model = nn.Sequential(
        nn.Sequential(shared, nn.ReLU()),
        nn.ModuleDict({"a": shared, "b": nn.Sequential(nn.Linear(2, 2))}),
        shared,
    )
    model.register_module("empty", None)
    for m in (model, torchvision.models.resnet18(), nn.ReLU()):
        mine, theirs = named_modules(m), dict(m.named_modules())
        assert list(mine) == list(theirs)  # same names, same order (the first path to a module)
        assert all(mine[k] is theirs[k] for k in theirs)


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [(7, 7, (224, 224)), (1, 1, (5, 5)), (7, 9, (100, 37)), (30, 20, (15, 10)), (8, 8, (8, 8))],
)
def test_maps_are_resized_exactly_as_bilinear_interpolation(h, w, size):
    from seethrough.core.resize import to_input_size

    maps = torch.randn(3, h, w, generator=torch.Generator().manual_seed(h * w))
    expected = torch.nn.functional.interpolate(
        maps[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0]
    got = to_input_size(maps, size)
    assert got.dtype == np.float32 and got.shape == (3, *size)
    assert not np.shares_memory(got, maps.numpy())  # the map never aliases the raw map
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("classes", [[2, 2, 2], [0, 3, 1], [4]])
def test_class_scores_pick_each_rows_class(classes):
    from seethrough.core.targets import class_scores

    scores = torch.arange(len(classes) * 5, dtype=torch.float32).view(len(classes), 5)
    expected = torch.tensor([scores[i, c] for i, c in enumerate(classes)])
    assert torch.equal(class_scores(scores, classes), expected)
    meta = class_scores(scores.to("meta"), classes)  # a device other than the CPU
    assert meta.shape == (len(classes),)


@pytest.mark.parametrize("shape", [(3,), (16,), (2, 3, 7, 5), (40,)])
def test_standard_normal_is_torchs_float64_draw(shape):
    from seethrough.core.noise import standard_normal

    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    got = standard_normal(shape, ours, torch.float32)
    expected = torch.randn(shape, generator=theirs, dtype=torch.float64).to(torch.float32)
    assert got.shape == shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert torch.equal(ours.get_state(), theirs.get_state())  # the generator moved as far


def test_scores_of_is_a_protected_forward():
    """Eval mode and no autograd during the forward; every flag and grad as it was after."""
    from seethrough.core.state import scores_of

    seen = []
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    model.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    model.train()
    model[0].weight.requires_grad_(False)
    grad = torch.ones(3)
    model[0].bias.grad = grad
    out = scores_of(model, torch.ones(2, 4))
    assert seen == [(False, False)] and out.shape == (2, 3) and not out.requires_grad
    assert model.training and model[1].training
    assert not model[0].weight.requires_grad and model[0].bias.grad is grad
    torch.testing.assert_close(scores_of(model, torch.ones(2, 4)), out)  # dropout off

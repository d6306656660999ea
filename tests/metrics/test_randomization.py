"""seethrough.metrics.randomization: the cascading randomization sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.errors import CancelledError, InvalidParameterError, UnknownLayerError
from seethrough.metrics import RandomizationResult, cascading_randomization, randomizable_layers
from seethrough.metrics.randomization import _reinitialise, _similarities
from seethrough.models import Preprocessing, VisionModel

from ..conftest import make_tiny

ALL = ["fc", "features.3", "features.2", "features.0"]


def image(seed: int = 1) -> torch.Tensor:
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_default_layers_output_side_first():
    assert randomizable_layers(make_tiny()) == ALL


def test_users_model_untouched():
    model = make_tiny()
    model.train()
    before = snapshot(model)
    params = list(model.parameters())
    flags = [m.training for m in model.modules()]
    r = cascading_randomization(model, image(), "gradcam")
    assert isinstance(r, RandomizationResult)
    assert same_state(model, before)
    assert all(p is q for p, q in zip(params, model.parameters(), strict=True))
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_result_shape_and_drop():
    r = cascading_randomization(make_tiny(), image(), "gradcam", keep_maps=True)
    assert r.layers == ALL
    assert r.layer == "features"  # the default layer, resolved once
    for a in (r.spearman, r.spearman_abs, r.ssim):
        assert isinstance(a, np.ndarray) and a.shape == (4,)
        assert np.all((a >= -1) & (a <= 1))
    assert r.final_similarity == r.spearman[-1]
    assert r.final_similarity < 0.5  # everything randomised: the map has moved
    assert r.ssim[-1] < 0.5
    assert len(r.maps) == 4 and r.maps[0].shape == r.original.shape == (16, 16)
    d = r.to_dict()
    assert d["layers"] == ALL and len(d["spearman"]) == 4
    assert cascading_randomization(make_tiny(), image(), "saliency").final_similarity < 0.5


def test_layers_above_the_explained_layer_do_not_matter():
    # Eigen-CAM reads only the activations at its layer: randomising the classifier changes
    # nothing, randomising a layer below it changes the map.
    r = cascading_randomization(make_tiny(), image(), "eigencam", layers=2)
    assert r.layers == ["fc", "features.3"]
    assert r.spearman[0] == pytest.approx(1)
    assert r.ssim[0] == pytest.approx(1)
    assert r.spearman[1] < 0.99


def test_deterministic_for_a_seed_and_leaves_global_rng_alone():
    model = make_tiny()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = cascading_randomization(model, image(), "saliency", seed=5)
    assert torch.equal(torch.rand(3), expected)
    b = cascading_randomization(make_tiny(), image(), "saliency", seed=5)
    c = cascading_randomization(make_tiny(), image(), "saliency", seed=6)
    for key in ("spearman", "spearman_abs", "ssim"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.spearman, c.spearman)


def test_reinitialise_without_reset_parameters():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.linspace(1, 2, 50))

    m = Scale()
    old = m.w.detach().clone()
    _reinitialise(m, seed=0, step=0)
    assert not torch.equal(m.w, old)
    assert abs(float(m.w.detach().std()) - float(old.std())) < 0.15
    again = Scale()
    _reinitialise(again, seed=0, step=0)
    assert torch.equal(again.w, m.w)


def test_similarity_of_a_map_with_itself_is_one():
    m = np.random.default_rng(0).random((16, 16))
    assert _similarities(m, m) == pytest.approx((1, 1, 1))
    s, s_abs, ssim = _similarities(m - 0.5, 0.5 - m)
    assert s == pytest.approx(-1) and s_abs == pytest.approx(1) and ssim < 0.5


def test_unknown_layer_name_suggests():
    with pytest.raises(UnknownLayerError, match="featurs.0.*Did you mean: features.0"):
        cascading_randomization(make_tiny(), image(), "gradcam", layers=["fc", "featurs.0"])


def test_bad_layers_arguments():
    with pytest.raises(InvalidParameterError, match="from 1 to 4"):
        cascading_randomization(make_tiny(), image(), layers=5)
    with pytest.raises(InvalidParameterError, match="no parameters"):
        cascading_randomization(make_tiny(), image(), layers=["pool"])
    with pytest.raises(InvalidParameterError, match="twice"):
        cascading_randomization(make_tiny(), image(), layers=["fc", "fc"])


def test_named_block_and_layer_module():
    model = make_tiny()
    r = cascading_randomization(
        model, image(), "gradcam", layer=model.features[2], layers=["fc", "features"]
    )
    assert r.layer == "features.2"
    assert r.layers == ["fc", "features"]


def test_cancel_through_progress():
    model = make_tiny()
    before = snapshot(model)
    calls = []

    def progress(done, total):
        calls.append((done, total))
        return done < 2

    with pytest.raises(CancelledError):
        cascading_randomization(model, image(), "gradcam", progress=progress)
    assert calls == [(1, 5), (2, 5)]
    assert same_state(model, before)

    calls.clear()
    cascading_randomization(
        model, image(), "gradcam", layers=1, progress=lambda *a: calls.append(a)
    )
    assert calls == [(1, 2), (2, 2)]  # None goes on


def test_vision_model():
    module = make_tiny()
    vm = VisionModel(
        module,
        Preprocessing(size=16),
        ["a", "b", "c", "d"],
        name="tiny",
        source="file",
        weights="random",
        default_layer="features.2",
    )
    before = snapshot(module)
    img = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    r = cascading_randomization(vm, img, "gradcam", target="b", layers=2)
    assert r.target == 1 and r.layer == "features.2"
    assert vm.module is module and same_state(module, before)


def test_registered():
    info = {m.name: m for m in seethrough.metrics.list_metrics()}["cascading_randomization"]
    assert info.category == "randomization"
    assert info.higher_is_better is False
    assert info.needs == ("model", "image", "method")
    assert info.range == (-1, 1)
    assert info.func is cascading_randomization

"""Feature maps (the top channels of a layer) and feature inversion / visualisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import seethrough
from seethrough.errors import CancelledError, InvalidParameterError, MethodNotApplicableError
from seethrough.methods.features import gaussian_blur, total_variation
from seethrough.viz.concepts import feature_grid

from ..concepts._activations import layer_output


@pytest.mark.parametrize("rank_by", ["mean", "max"])
def test_feature_maps_are_the_top_channels(tiny, tiny_input, rank_by):
    out = seethrough.explain(tiny, tiny_input, "feature_maps", top_k=3, rank_by=rank_by)
    acts = layer_output(tiny, tiny_input, "features")
    reduce = {"mean": lambda a: a.mean(dim=(1, 2)), "max": lambda a: a.amax(dim=(1, 2))}[rank_by]
    for a, e in zip(acts, out, strict=True):
        scores = reduce(a)
        order = scores.argsort(descending=True)[:3]
        np.testing.assert_array_equal(e.extras["channel_indices"], order.numpy())
        np.testing.assert_allclose(e.extras["channel_scores"], scores[order].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(e.extras["channels"], a[order].numpy())
        np.testing.assert_allclose(e.raw, a.sum(dim=0).numpy(), rtol=1e-5, atol=1e-6)
        assert e.map.shape == (16, 16)


def test_feature_maps_top_k_beyond_the_channels_and_grid(tiny, tiny_input):
    e = seethrough.explain(tiny, tiny_input[0], "feature_maps", top_k=50, layer="features.1")
    assert e.extras["channels"].shape == (6, 16, 16)  # the layer has 6 channels
    assert sorted(e.extras["channel_indices"].tolist()) == list(range(6))
    fig = feature_grid(e.extras["channels"], e.extras["channel_indices"], e.image)
    assert [ax.get_title() for ax in fig.axes[:6]] == [
        f"channel {i}" for i in e.extras["channel_indices"]
    ]


def test_feature_maps_need_a_spatial_layer(tiny, tiny_input):
    with pytest.raises(MethodNotApplicableError, match="spatial"):
        seethrough.explain(tiny, tiny_input, "feature_maps", layer="fc")


def test_regularisers():
    x = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    flat = torch.full((1, 3, 9, 9), 0.3)
    assert torch.equal(total_variation(flat), torch.zeros(1))
    ramp = torch.arange(9.0).expand(1, 1, 9, 9)  # +1 per column
    assert total_variation(ramp).item() == pytest.approx(1.0)
    blurred = gaussian_blur(x)
    assert blurred.shape == x.shape
    assert (total_variation(blurred) < total_variation(x)).all()
    torch.testing.assert_close(gaussian_blur(flat), flat)  # a constant image is unchanged


def test_inversion_outputs_and_determinism(tiny, tiny_input):
    kw = {"n_steps": 15, "seed": 3}
    a = seethrough.explain(tiny, tiny_input[:2], "feature_inversion", **kw)
    b = seethrough.explain(tiny, tiny_input[:2], "feature_inversion", **kw)
    c = seethrough.explain(tiny, tiny_input[:2], "feature_inversion", n_steps=15, seed=4)
    for ea, eb, ec in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(ea.extras["inverted"], eb.extras["inverted"])
        np.testing.assert_array_equal(ea.extras["loss"], eb.extras["loss"])
        assert not np.array_equal(ea.extras["inverted"], ec.extras["inverted"])
        x = ea.extras["inverted"]
        assert x.shape == (3, 16, 16) and x.dtype == np.float32
        assert ea.extras["loss"].shape == (15,)
        assert ea.extras["inverted_image"].shape == (16, 16, 3)
        assert ea.extras["inverted_image"].dtype == np.uint8
        expected = np.abs(x - x.mean(axis=(1, 2), keepdims=True)).mean(axis=0)
        np.testing.assert_allclose(ea.raw, expected, rtol=1e-5, atol=1e-7)
        assert ea.stats["initial_loss"] == pytest.approx(ea.extras["loss"][0])
        ratio = ea.stats["initial_loss"] / ea.stats["final_loss"]
        assert ea.stats["loss_ratio"] == pytest.approx(ratio)


def test_inversion_reports_progress_and_cancels(tiny, tiny_input):
    calls = []
    seethrough.explain(
        tiny,
        tiny_input[:2],
        "feature_inversion",
        n_steps=4,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(i, 8) for i in range(1, 9)]
    with pytest.raises(CancelledError):
        seethrough.explain(
            tiny, tiny_input, "feature_inversion", n_steps=4, progress=lambda d, t: d < 3
        )


def test_inversion_channel_objective(tiny, tiny_input):
    kw = {"objective": "channel", "channel": 5, "n_steps": 30, "jitter": 0, "tv": 0.0}
    e = seethrough.explain(tiny, tiny_input[0], "feature_inversion", **kw)
    acts = layer_output(tiny, torch.from_numpy(e.extras["inverted"])[None], "features")
    start = -e.stats["initial_loss"]  # tv=0, no jitter: the loss is minus the channel's mean
    assert acts[0, 5].mean().item() == pytest.approx(-e.stats["final_loss"], rel=1e-5)
    assert acts[0, 5].mean().item() > start + 0.3  # measured: 0.007 -> 0.44
    with pytest.raises(InvalidParameterError, match="channel=8"):
        seethrough.explain(tiny, tiny_input, "feature_inversion", objective="channel", channel=8)


@pytest.fixture(scope="module")
def small_chelsea(lite0):
    """The chelsea photo as lite0's input, downsampled to 64x64 to keep the optimisation short."""
    x = lite0.preprocess(["sample:chelsea"])
    return F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)[0]


@pytest.mark.slow
def test_inversion_matches_the_representation_on_the_real_model(lite0, small_chelsea):
    e = seethrough.explain(
        lite0, small_chelsea, "feature_inversion", layer="blocks.3", n_steps=60, jitter=0
    )
    # measured: 1.02 -> 0.088 (ratio 11.6); the curve falls steadily
    assert e.stats["loss_ratio"] > 10
    curve = e.extras["loss"]
    assert curve[-1] < curve[len(curve) // 2] < curve[0]
    image = e.extras["inverted_image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 5


@pytest.mark.slow
def test_class_objective_raises_the_class_score(lite0, small_chelsea):
    cls = 281  # tabby
    kw = {"objective": "class", "n_steps": 10, "jitter": 0, "tv": 0.0, "lr": 0.1}
    e = seethrough.explain(lite0, small_chelsea, "feature_inversion", target=cls, **kw)
    with torch.no_grad():
        logits = lite0.module(torch.from_numpy(e.extras["inverted"])[None])
    score = logits[0, cls].item()
    assert score == pytest.approx(-e.stats["final_loss"], rel=1e-4, abs=1e-4)
    start = -e.stats["initial_loss"]  # tv=0, no jitter: the loss is minus the class logit
    assert score > start + 5
    assert int(logits[0].argmax()) == cls


def test_inversion_blur_smooths_the_image(tiny, tiny_input):
    kw = {"n_steps": 6, "tv": 0.0, "jitter": 0}
    sharp = seethrough.explain(tiny, tiny_input[0], "feature_inversion", **kw)
    smooth = seethrough.explain(tiny, tiny_input[0], "feature_inversion", blur_every=2, **kw)
    tv = [
        total_variation(torch.from_numpy(e.extras["inverted"])[None]).item()
        for e in (sharp, smooth)
    ]
    assert tv[1] < 0.5 * tv[0]

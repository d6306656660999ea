"""The shared engine (batched masked evaluation, hidden images, progress and cancellation),
segmentation, determinism and batch independence of the perturbation family.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.errors import CancelledError, InvalidParameterError
from seethrough.methods.base import Context
from seethrough.methods.perturbation import (
    FeatureMasks,
    PixelMasks,
    evaluate,
    hidden_image,
    segment,
)
from seethrough.methods.perturbation.engine import Ticker

from ._models import DT, SmallMLP, TinyConv, grid_labels, masked_inputs

# ------------------------------------------------------------------------------------ evaluate


@pytest.fixture(scope="module")
def conv64():
    return TinyConv(classes=4, seed=0, dtype=DT)


def _ctx(model, x, progress=None):
    return Context(model, x, None, None, progress=progress)


class PerSample(torch.nn.Module):
    """Runs the wrapped model one sample at a time: its outputs cannot depend on the batch."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.cat([self.model(x[i : i + 1]) for i in range(x.shape[0])])


def test_evaluate_matches_direct_forward_for_every_batch_size(conv64):
    """Batch size changes nothing: bit-identical with a batch-invariant model.

    A plain conv net's own output changes in the last ulp with the batch size (PyTorch CPU
    kernels, ~3e-17 in float64 here), so for it the check is 1e-12.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 10, 12, generator=g, dtype=DT)
    hidden = torch.rand(1, 3, 10, 12, generator=g, dtype=DT)
    labels = torch.as_tensor(grid_labels(10, 12, 2, 3))
    z = (torch.rand(23, 6, generator=g) < 0.5).to(DT)
    z[5] = torch.tensor([0.25, 0.5, 0.75, 1.0, 0.0, 0.6], dtype=DT)  # soft weights too
    masks = FeatureMasks(z, labels)
    score = lambda out: out[:, [2, 0]]  # noqa: E731  (two targets at once)
    sizes = (1, 3, 7, 23, 100)
    invariant = PerSample(conv64)
    exact = [evaluate(_ctx(invariant, x), x, hidden, masks, score, b) for b in sizes]
    for r in exact[1:]:
        assert torch.equal(r, exact[0])
    assert exact[0].shape == (23, 2) and exact[0].dtype == torch.float64
    with torch.no_grad():
        direct = torch.cat([conv64(xi[None]) for xi in masked_inputs(x, hidden, z[:, labels])])
    torch.testing.assert_close(exact[0], direct[:, [2, 0]], rtol=1e-12, atol=1e-12)
    for b in sizes:
        plain = evaluate(_ctx(conv64, x), x, hidden, masks, score, b)
        torch.testing.assert_close(plain, exact[0], rtol=1e-12, atol=1e-12)


def test_evaluate_ticker_counts_every_evaluation(conv64):
    x = torch.rand(1, 3, 6, 6, dtype=DT)
    calls = []
    ctx = _ctx(conv64, x, progress=lambda d, t: calls.append((d, t)))
    masks = PixelMasks(torch.rand(10, 6, 6, dtype=DT))
    evaluate(ctx, x, torch.zeros_like(x), masks, lambda o: o[:, :1], 4, Ticker(ctx, 10))
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_feature_masks_batch_equals_hand_built():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (7, 9), generator=g)
    z = torch.rand(6, 5, generator=g, dtype=DT)
    fm = FeatureMasks(z, labels)
    assert len(fm) == 6
    hand = np.zeros((6, 7, 9))
    for i in range(6):
        for h in range(7):
            for w in range(9):
                hand[i, h, w] = z[i, labels[h, w]]
    np.testing.assert_array_equal(fm.batch(0, 6).numpy(), hand)
    np.testing.assert_array_equal(fm.batch(2, 5).numpy(), hand[2:5])
    np.testing.assert_array_equal(fm.batch(4, 99).numpy(), hand[4:])
    pm = PixelMasks(torch.tensor(hand))
    assert len(pm) == 6
    np.testing.assert_array_equal(pm.batch(1, 3).numpy(), hand[1:3])


# -------------------------------------------------------------------------------- progress/cancel

CHEAP = {
    "lime": dict(n_samples=30, segments="grid", n_segments=9),
    "kernelshap": dict(n_samples=30, segments="grid", n_segments=9),
    "occlusion": dict(window=4, stride=3),
    "rise": dict(n_samples=30, cells=3),
}


@pytest.mark.parametrize("method", sorted(CHEAP))
def test_progress_is_monotonic_and_complete(method):
    model = TinyConv()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    calls = []
    seethrough.explain(
        model, x, method, batch_size=7, progress=lambda d, t: calls.append((d, t)), **CHEAP[method]
    )
    done = [d for d, _ in calls]
    assert len(calls) > 2
    assert all(b > a for a, b in zip(done, done[1:], strict=False))
    assert calls[-1][0] == calls[-1][1]  # ends at the total
    assert all(d <= t for d, t in calls)
    per_image = {"lime": 30, "kernelshap": 30, "rise": 30, "occlusion": 4 * 4}[method]
    assert calls[-1][1] == 2 * per_image


@pytest.mark.parametrize("method", sorted(CHEAP))
def test_cancel_raises_and_restores_model(method):
    model = TinyConv().train()
    model.bn.eval()  # a mixed state must come back as it was
    flags = {name: m.training for name, m in model.named_modules()}
    grads = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    calls = []

    def progress(done, total):
        calls.append(done)
        return len(calls) < 2  # cancel on the second report

    with pytest.raises(CancelledError):
        seethrough.explain(model, x, method, batch_size=5, progress=progress, **CHEAP[method])
    assert len(calls) == 2
    assert count_hooks(model) == 0
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert [p.requires_grad for p in model.parameters()] == grads
    for k, v in model.state_dict().items():  # eval mode kept BatchNorm statistics untouched
        assert torch.equal(v, state[k]), k


def test_progress_returning_none_does_not_cancel():
    model = TinyConv()
    x = torch.rand(3, 12, 12)
    e = seethrough.explain(model, x, "rise", n_samples=10, cells=3, progress=lambda d, t: None)
    assert e.map.shape == (12, 12)


# ---------------------------------------------------------------------------------- hidden_image


@pytest.fixture(scope="module")
def img():
    return torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(4), dtype=DT)


def test_hidden_number(img):
    for value, expected in [(0, 0.0), (0.5, 0.5), (-1.25, -1.25), ("0.25", 0.25)]:
        out = hidden_image(img, value)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert torch.all(out == expected)


def test_hidden_mean_is_per_channel(img):
    out = hidden_image(img, "mean")
    assert out.shape == img.shape
    for c in range(3):
        assert torch.allclose(out[0, c], img[0, c].mean().expand(16, 20), rtol=0, atol=1e-15)
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_hidden_blur_constant_and_edge():
    const = torch.full((1, 2, 16, 16), 0.7, dtype=DT)
    torch.testing.assert_close(hidden_image(const, "blur"), const, rtol=0, atol=1e-12)
    edge = torch.zeros(1, 1, 16, 16, dtype=DT)
    edge[..., 8:] = 1.0
    out = hidden_image(edge, "blur")
    assert out.shape == edge.shape
    step = out.diff(dim=-1).abs()
    assert step.max() < 0.5  # the unit step is spread over several pixels
    assert (step > 1e-3).sum(-1).min() >= 3
    assert out.min() >= -1e-12 and out.max() <= 1 + 1e-12  # a positive kernel: no overshoot
    assert torch.allclose(out[..., :, 0], torch.zeros(16, dtype=DT), atol=1e-3)  # far side
    # the blur is along rows and columns alike (separable, isotropic)
    torch.testing.assert_close(hidden_image(edge.transpose(-1, -2), "blur"), out.transpose(-1, -2))


def test_hidden_noise_is_seeded(img):
    a = hidden_image(img, "noise", torch.Generator().manual_seed(7))
    b = hidden_image(img, "noise", torch.Generator().manual_seed(7))
    c = hidden_image(img, "noise", torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == img.shape and a.dtype == img.dtype
    big = hidden_image(torch.zeros(1, 3, 64, 64), "noise", torch.Generator().manual_seed(0))
    assert abs(float(big.mean())) < 0.05 and abs(float(big.std()) - 1) < 0.05


def test_hidden_tensor(img):
    t = torch.rand(3, 16, 20, dtype=torch.float32)
    out = hidden_image(img, t)
    assert out.shape == img.shape and out.dtype == img.dtype
    torch.testing.assert_close(out[0], t.to(DT))
    torch.testing.assert_close(hidden_image(img, t[None]), out)


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(3, 16, 21),
        torch.zeros(1, 16, 20),
        torch.zeros(16, 20),
        "purple",
        float("nan"),
        float("inf"),
        None,
        [0.5],
    ],
)
def test_hidden_bad_values_raise(img, bad):
    with pytest.raises(InvalidParameterError):
        hidden_image(img, bad)


def test_explain_rejects_wrong_hide_shape():
    model = TinyConv()
    with pytest.raises(InvalidParameterError):
        seethrough.explain(
            model, torch.rand(3, 12, 12), "rise", n_samples=4, hide=torch.zeros(3, 8, 8)
        )


# ---------------------------------------------------------------------------------- segmentation


@pytest.fixture(scope="module")
def photo():
    return np.asarray(seethrough.images.sample_image("chelsea").resize((64, 48)))


@pytest.mark.parametrize("name", ["slic", "quickshift", "felzenszwalb", "grid"])
def test_segmenters_return_contiguous_int32_labels(photo, name):
    labels = segment(photo, name, n_segments=20)
    assert labels.dtype == np.int32 and labels.shape == (48, 64)
    f = int(labels.max()) + 1
    assert f >= 2
    np.testing.assert_array_equal(np.unique(labels), np.arange(f))


@pytest.mark.parametrize("n,expected", [(12, 12), (50, 48), (7, 8), (1, 1), (200, 204)])
def test_grid_cells_are_rectangles(photo, n, expected):
    labels = segment(photo, "grid", n_segments=n)
    f = int(labels.max()) + 1
    assert f == expected  # a rows x cols grid as square as 48x64 allows
    sizes = []
    for k in range(f):
        rows, cols = np.nonzero(labels == k)
        box = labels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert np.all(box == k), "cell is not a filled rectangle"
        sizes.append(box.shape)
    heights = {s[0] for s in sizes}
    widths = {s[1] for s in sizes}
    assert max(heights) - min(heights) <= 1 and max(widths) - min(widths) <= 1  # even split


def test_user_labels_are_relabelled(photo):
    labels = np.full((48, 64), 100, dtype=np.int64)
    labels[:10] = -5
    labels[20:, 30:] = 7
    out = segment(photo, labels)
    assert out.dtype == np.int32
    expected = np.where(labels == -5, 0, np.where(labels == 7, 1, 2))
    np.testing.assert_array_equal(out, expected)
    # unsigned, torch, and already-dense labels
    np.testing.assert_array_equal(segment(photo, labels.astype(np.int16) + 5), expected)
    np.testing.assert_array_equal(segment(photo, torch.as_tensor(labels)), expected)
    np.testing.assert_array_equal(segment(photo, expected.astype(np.uint8)), expected)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((48, 63), dtype=np.int64),
        np.zeros((64, 48), dtype=np.int64),
        np.zeros((48, 64), dtype=np.float32),
        np.zeros((48, 64, 1), dtype=np.int64),
        "watershed",
        "SLIC ",
    ],
)
def test_bad_segments_raise(photo, bad):
    with pytest.raises(InvalidParameterError):
        segment(photo, bad)


def test_explain_bad_segments_raise():
    model = TinyConv()
    x = torch.rand(3, 12, 12)
    with pytest.raises(InvalidParameterError):
        seethrough.explain(model, x, "lime", segments="watershed", n_samples=4)
    with pytest.raises(InvalidParameterError):
        seethrough.explain(model, x, "kernelshap", segments=np.zeros((12, 12)), n_samples=4)
    with pytest.raises(InvalidParameterError):
        seethrough.explain(model, x, "lime", segments=np.zeros((11, 12), dtype=int), n_samples=4)


def test_explain_grid_segments_reach_the_explanation():
    model = TinyConv()
    e = seethrough.explain(
        model, torch.rand(3, 12, 16), "lime", segments="grid", n_segments=12, n_samples=20
    )
    assert e.segments.shape == (12, 16) and e.segments.max() + 1 == 12
    assert e.weights.shape == (12,)
    np.testing.assert_array_equal(e.map, e.weights[e.segments])


# ------------------------------------------------------------------------- determinism and batch

DET = {
    # SLIC finds one segment in this noise: paired coalitions over one feature are the same
    # for every seed, so a grid
    "lime": dict(n_samples=40, segments="grid", n_segments=12),
    "kernelshap": dict(n_samples=40, segments="grid", n_segments=12),
    "rise": dict(n_samples=40, cells=3),
}


@pytest.fixture(scope="module")
def det_input():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("method", sorted(DET))
@pytest.mark.parametrize("hide", [0.0, "noise"])
def test_same_seed_is_bit_identical_and_seed_matters(det_input, method, hide):
    model = TinyConv()
    run = lambda seed: seethrough.explain(  # noqa: E731
        model, det_input[0], method, seed=seed, hide=hide, batch_size=16, **DET[method]
    )
    a, b, c = run(5), run(5), run(6)
    assert a.seed == 5 and c.seed == 6
    np.testing.assert_array_equal(a.map, b.map)
    assert not np.array_equal(a.map, c.map)
    if method != "rise":
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(a.segments, b.segments)
        assert not np.array_equal(a.weights, c.weights)
        assert a.stats == b.stats


@pytest.mark.parametrize("method", [*sorted(DET), "occlusion"])
def test_batch_equals_per_image(det_input, method):
    model = TinyConv()
    kw = dict(DET.get(method, {"window": 5, "stride": 4}), seed=3, hide="noise", batch_size=8)
    both = seethrough.explain(model, det_input, method, **kw)
    assert len(both) == 2
    for i in range(2):
        one = seethrough.explain(model, det_input[i], method, **kw)
        assert one.target == both[i].target
        np.testing.assert_array_equal(one.map, both[i].map)
        if method != "rise":
            np.testing.assert_array_equal(one.weights, both[i].weights)
        assert one.stats == both[i].stats
    assert not np.array_equal(both[0].map, both[1].map)


def test_mlp_float64_kernelshap_batch_with_user_segments():
    """A batch shares one user label array; each image still gets its own exact values."""
    labels = grid_labels(6, 6, 2, 3)
    model = SmallMLP(3 * 36, seed=4).eval()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=DT)
    kw = dict(target=0, segments=labels, n_samples=64, score="logit", hide="mean")
    both = seethrough.explain(model, x, "kernelshap", **kw)
    for i in range(2):
        one = seethrough.explain(model, x[i], "kernelshap", **kw)
        np.testing.assert_array_equal(one.weights, both[i].weights)


def test_batch_of_hide_images_is_used_per_image_or_rejected():
    labels = grid_labels(6, 6, 2, 2)
    model = SmallMLP(3 * 36, seed=4).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 6, 6, generator=g, dtype=DT)
    hide = torch.rand(2, 3, 6, 6, generator=g, dtype=DT)
    try:
        es = seethrough.explain(
            model,
            x,
            "kernelshap",
            target=0,
            segments=labels,
            n_samples=16,
            score="logit",
            hide=hide,
        )
    except InvalidParameterError:
        return
    with torch.no_grad():
        expected = model(hide)[:, 0]
    assert es[1].stats["base_value"] == pytest.approx(float(expected[1]), abs=1e-9)

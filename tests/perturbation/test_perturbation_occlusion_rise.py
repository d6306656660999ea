"""Occlusion and RISE against analytic responses computed in the test.

Occlusion: a linear model ``score = sum of x over a fixed region R`` with hide=0 has
``drop_p = sum of x over R and window p`` exactly; the expected map (mean over covering
windows) is built here with plain loops from hard-coded window positions. Inputs are integers,
so drops are exact in float32; the map is a float64 quotient rounded to float32, so it is
compared with rtol 2e-7 (float32 half-ulp is 6e-8) and atol 1e-9.

RISE: with p_keep=1 every mask is 1 so the map is f(x) everywhere; with a model linear in its
input, x = 1 and hide = 0, the model sees the masks themselves, so they are recorded and the
map is recomputed from them (1/(N p) sum_i f(M_i) M_i) and its expectation checked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.errors import InvalidParameterError
from seethrough.methods.perturbation.occlusion import window_starts

from ._models import DT, SmallMLP, WeightedSum

H, W = 12, 10


@pytest.fixture(scope="module")
def region_setup():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, size=(2, H, W)).astype(np.float64)  # 2 channels, integer values
    region = (rng.random((H, W)) < 0.4).astype(np.float64)
    region[3:7, 2:6] = 1.0
    model = WeightedSum(torch.tensor(np.broadcast_to(region, (2, H, W)).copy())).eval()
    return model, x, region


def _expected(x, region, ys, xs, wh, ww):
    xr = (x * region).sum(0)
    drops, total, count = [], np.zeros((H, W)), np.zeros((H, W))
    for y0 in ys:  # row-major: all column positions of the first row of windows, then the next
        for x0 in xs:
            d = 0.0
            for i in range(y0, y0 + wh):
                for j in range(x0, x0 + ww):
                    d += xr[i, j]
            drops.append(d)
            for i in range(y0, y0 + wh):
                for j in range(x0, x0 + ww):
                    total[i, j] += d
                    count[i, j] += 1
    assert count.min() >= 1  # every pixel covered by the expected windows
    return np.array(drops), total / count


@pytest.mark.parametrize(
    "window,stride,ys,xs,wh,ww",
    [
        (4, 3, [0, 3, 6, 8], [0, 3, 6], 4, 4),  # stride does not divide: last row flush (8)
        ("5x3", "4x2", [0, 4, 7], [0, 2, 4, 6, 7], 5, 3),  # HxW strings, flush in both
        ((3, 10), (2, 1), [0, 2, 4, 6, 8, 9], [0], 3, 10),  # full-width windows, tuple form
        ("6X4", "6x3", [0, 6], [0, 3, 6], 6, 4),  # upper-case X; 6 divides 12 exactly
        ("3,4", "3", [0, 3, 6, 9], [0, 3, 6], 3, 4),  # comma form
        (100, 7, [0], [0], H, W),  # window larger than the image: one window, the whole image
        ((20, 4), 3, [0], [0, 3, 6], H, 4),  # larger in one dimension only
    ],
)
def test_occlusion_matches_analytic_drops(region_setup, window, stride, ys, xs, wh, ww):
    model, x, region = region_setup
    drops, expected = _expected(x, region, ys, xs, wh, ww)
    e = seethrough.explain(
        model,
        torch.tensor(x),
        "occlusion",
        target=0,
        window=window,
        stride=stride,
        hide=0,
        score="logit",
        batch_size=5,
    )
    assert e.stats["windows"] == len(ys) * len(xs)
    np.testing.assert_array_equal(e.weights, drops.astype(np.float32))
    assert e.map.shape == (H, W) and np.all(np.isfinite(e.map))
    np.testing.assert_allclose(e.map, expected, rtol=2e-7, atol=1e-9)
    assert e.score == pytest.approx((x * region).sum())


def test_occlusion_window_starts_positions():
    assert window_starts(12, 4, 3) == [0, 3, 6, 8]
    assert window_starts(12, 4, 4) == [0, 4, 8]
    assert window_starts(10, 3, 2) == [0, 2, 4, 6, 7]
    assert window_starts(5, 9, 2) == [0]
    assert window_starts(5, 5, 1) == [0]
    assert window_starts(224, 32, 16)[-1] == 192 and len(window_starts(224, 32, 16)) == 13
    for size, window, stride in [(12, 4, 3), (17, 5, 4), (10, 3, 2), (7, 7, 3), (30, 4, 4)]:
        starts = window_starts(size, window, stride)
        covered = np.zeros(size, bool)
        for s in starts:
            assert 0 <= s and s + window <= size
            covered[s : s + window] = True
        assert covered.all(), (size, window, stride, starts)
        assert starts == sorted(set(starts))


def test_occlusion_stride_larger_than_window_leaves_no_nan(region_setup):
    """stride > window: some pixels are in no window; the map must still be finite."""
    model, x, region = region_setup
    e = seethrough.explain(
        model, torch.tensor(x), "occlusion", target=0, window=2, stride=5, hide=0, score="logit"
    )
    ys, xs = [0, 5, 10], [0, 5, 8]
    assert e.stats["windows"] == len(ys) * len(xs)
    xr = (x * region).sum(0)
    drops = np.array([xr[y0 : y0 + 2, x0 : x0 + 2].sum() for y0 in ys for x0 in xs])
    np.testing.assert_array_equal(e.weights, drops.astype(np.float32))
    assert np.all(np.isfinite(e.map)), "pixels outside every window give NaN (0/0)"


@pytest.mark.parametrize(
    "param,value",
    [
        ("window", 0),
        ("window", "0"),
        ("window", -3),
        ("window", "abc"),
        ("window", "3x"),
        ("window", "2x3x4"),
        ("window", (0, 2)),
        ("window", "x"),
        ("window", ""),
        ("window", None),
        ("stride", 0),
        ("stride", "0x2"),
        ("stride", "-1"),
    ],
)
def test_occlusion_bad_window_raises(region_setup, param, value):
    model, x, _ = region_setup
    with pytest.raises(InvalidParameterError):
        seethrough.explain(model, torch.tensor(x), "occlusion", target=0, **{param: value})


def test_occlusion_probability_sign():
    """Hiding evidence for the target lowers its score: positive drops where a > 0."""
    a = torch.zeros(1, 8, 8, dtype=DT)
    a[0, :4] = 0.05  # evidence in the top half only
    model = WeightedSum(a).eval()
    x = torch.ones(1, 8, 8, dtype=DT)
    e = seethrough.explain(model, x, "occlusion", target=0, window=4, stride=4, hide=0)
    # default score: the softmax probability of class 0 over logits [s, -s], i.e. sigmoid(2 s);
    # s = 1.6 clean, 0.8 with a top window hidden, unchanged with a bottom one
    sig = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    drop = sig(3.2) - sig(1.6)
    np.testing.assert_allclose(e.weights, [drop, drop, 0, 0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(e.map[:4], drop, rtol=1e-6)
    np.testing.assert_array_equal(e.map[4:], 0)


# ---------------------------------------------------------------------------------------- RISE


def test_rise_p_keep_one_is_constant_score():
    model = SmallMLP(3 * 9 * 11, classes=3, seed=2).eval()
    x = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0), dtype=DT)
    e = seethrough.explain(model, x, "rise", target=2, n_samples=20, p_keep=1.0, cells=3)
    with torch.no_grad():
        f = float(model(x[None]).softmax(1)[0, 2])
        logit = float(model(x[None])[0, 2])
    assert e.score == pytest.approx(logit, abs=1e-9)  # .score is the clean logit
    np.testing.assert_allclose(e.map, np.full((9, 11), f), rtol=1e-6)


@pytest.fixture(scope="module")
def rise_linear():
    h, w = 12, 20
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.exp(-((yy - 3.5) ** 2 + (xx - 14.0) ** 2) / (2 * 3.0**2))  # smooth bump off-centre
    a = torch.tensor(a[None])
    model = WeightedSum(a, record=True).eval()
    x = torch.ones(1, h, w, dtype=DT)
    n, p = 600, 0.3
    e = seethrough.explain(
        model,
        x,
        "rise",
        target=0,
        n_samples=n,
        p_keep=p,
        cells=4,
        hide=0,
        score="logit",
        batch_size=64,
        seed=3,
    )
    masks = torch.cat(model.seen[1:])[:, 0].numpy()  # the first call is the clean forward
    return e, masks, a[0].numpy(), n, p


def test_rise_masks_shape_range_and_mean(rise_linear):
    e, masks, a, n, p = rise_linear
    assert masks.shape == (n, 12, 20)
    assert masks.min() >= 0 and masks.max() <= 1 + 1e-12
    assert abs(masks.mean() - p) < 0.03  # bilinear interpolation of Bernoulli(p) cells: mean p
    # smooth, not binary: bilinear upsampling leaves many values strictly between 0 and 1
    assert ((masks > 0.01) & (masks < 0.99)).mean() > 0.2
    # masks differ from one another (random grids and shifts; a few all-hidden grids,
    # probability 0.7^16 each, may repeat)
    assert len({m.tobytes() for m in masks}) > 0.98 * n


def test_rise_map_is_the_weighted_mask_average(rise_linear):
    e, masks, a, n, p = rise_linear
    scores = (masks * a).sum((1, 2))  # the model's logit on each masked input
    expected = np.einsum("n,nhw->hw", scores, masks) / (n * p)
    np.testing.assert_allclose(e.map, expected, rtol=1e-6, atol=1e-9)


def test_rise_map_correlates_with_linear_weights(rise_linear):
    """E[map] = p * sum(a) + (1/p) sum_h' a_h' Cov(M_h, M_h'): a smoothed copy of ``a``."""
    e, masks, a, n, p = rise_linear
    r = np.corrcoef(e.map.ravel(), a.ravel())[0, 1]
    assert r > 0.85, r
    peak = np.unravel_index(e.map.argmax(), e.map.shape)
    assert abs(peak[0] - 3.5) <= 3 and abs(peak[1] - 14) <= 4, peak

"""Faithfulness metrics on a hand-made model whose answer is known in closed form.

``ObjectModel``: class 0's logit is ``SCALE * (mean of the input over a 4x4 object square)``,
class 1's logit is the constant ``BIAS``. On an all-ones 8x8 image with ``hide=0``, removing
``j`` of the 16 object pixels gives ``p0 = sigmoid(SCALE * (16 - j) / 16 - BIAS)`` whatever
happens to the background, so every curve value can be computed by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.errors import CancelledError, InvalidParameterError, InvalidTargetError
from seethrough.methods.perturbation.engine import hidden_image
from seethrough.metrics import (
    average_drop,
    deletion,
    hide_top,
    hide_top_sweep,
    increase_in_confidence,
    insertion,
    list_metrics,
)
from tests.conftest import make_tiny

SIZE = 8
N = SIZE * SIZE
ROWS, COLS = slice(2, 6), slice(2, 6)
OBJECT = 16
SCALE, BIAS = 4.0, 1.0


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def p0(kept: int) -> float:
    """Class 0's probability when ``kept`` object pixels are 1 and the rest 0 (hide=0)."""
    return sigmoid(SCALE * kept / OBJECT - BIAS)


class ObjectModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(SCALE, dtype=torch.float64))
        self.drop = nn.Dropout(0.5)  # identity in eval mode: the metrics must use eval mode
        mask = torch.zeros(SIZE, SIZE, dtype=torch.float64)
        mask[ROWS, COLS] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        obj = (x * self.mask).sum((1, 2, 3)) / (self.mask.sum() * x.shape[1])
        logit0 = self.drop(self.scale * obj)
        return torch.stack([logit0, torch.full_like(logit0, BIAS)], 1)


@pytest.fixture
def model() -> ObjectModel:
    return ObjectModel().eval()


@pytest.fixture
def image() -> torch.Tensor:
    return torch.ones(3, SIZE, SIZE, dtype=torch.float64)


def object_map() -> np.ndarray:
    """Perfect map: object 1, background 0 (a tie inside each: raster order decides)."""
    a = np.zeros((SIZE, SIZE))
    a[ROWS, COLS] = 1
    return a


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    f = getattr(np, "trapezoid", None) or np.trapz
    return float(f(y, x))


# --------------------------------------------------------------------------- deletion, insertion


def test_deletion_of_perfect_map_matches_hand_computation(model, image):
    c = deletion(model, image, object_map(), steps=16, hide=0.0)
    assert c.kind == "deletion" and c.target == 0 and c.score == "probability"
    np.testing.assert_array_equal(c.pixels, np.arange(17) * 4)
    np.testing.assert_allclose(c.fractions, np.arange(17) / 16)
    # 4 object pixels go per step; the object is gone after 4 steps (its share: 1/4)
    expected = [p0(16 - 4 * i) for i in range(5)] + [p0(0)] * 12
    np.testing.assert_allclose(c.scores, expected, rtol=1e-12, atol=0)
    assert c.scores[4] == c.scores[-1]
    assert c.auc == pytest.approx(trapezoid(c.scores, c.fractions), rel=1e-12)
    assert float(c) == c.auc


def test_curves_start_at_clean_score_and_end_at_hidden_score(model, image):
    d = deletion(model, image, object_map(), hide=0.0)
    i = insertion(model, image, object_map(), hide=0.0)
    assert d.scores[0] == pytest.approx(p0(16), rel=1e-12)
    assert d.scores[-1] == pytest.approx(p0(0), rel=1e-12)
    assert i.scores[0] == pytest.approx(p0(0), rel=1e-12)
    assert i.scores[-1] == pytest.approx(p0(16), rel=1e-12)
    assert d.fractions[0] == 0 and d.fractions[-1] == 1
    assert i.fractions[0] == 0 and i.fractions[-1] == 1


def test_deletion_prefers_the_object_and_insertion_too(model, image):
    good, bad = object_map(), 1 - object_map()
    d_good = deletion(model, image, good, steps=16).auc
    d_bad = deletion(model, image, bad, steps=16).auc
    assert d_good < d_bad
    i_good = insertion(model, image, good, steps=16, hide=0.0).auc
    i_bad = insertion(model, image, bad, steps=16, hide=0.0).auc
    assert i_good > i_bad
    # background first: the score stays clean until 48 pixels are gone, then falls
    c = deletion(model, image, bad, steps=16)
    np.testing.assert_allclose(c.scores[:13], p0(16), rtol=1e-12)
    assert c.scores[13] == pytest.approx(p0(12), rel=1e-12)
    for auc in (d_good, d_bad, i_good, i_bad):
        assert 0 <= auc <= 1


def test_insertion_defaults_to_blur(model):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, SIZE, SIZE, generator=g, dtype=torch.float64)
    c = insertion(model, x, object_map())
    blurred = hidden_image(x[None], "blur")
    with torch.no_grad():
        start = model(blurred).softmax(1)[0, c.target].item()
        clean = model(x[None]).softmax(1)[0, c.target].item()
    assert c.scores[0] == pytest.approx(start, rel=1e-12)
    assert c.scores[-1] == pytest.approx(clean, rel=1e-12)
    assert c.scores[0] != pytest.approx(c.scores[-1])  # blur is not the identity here


def test_ties_are_broken_by_raster_order(model, image):
    order = np.arange(N).reshape(SIZE, SIZE)
    in_object = np.zeros(N, bool)
    in_object[order[ROWS, COLS].ravel()] = True
    # a constant map removes pixels row by row: the object's first pixel is the 19th
    c = deletion(model, image, np.zeros((SIZE, SIZE)), steps=N)
    kept = [OBJECT - int(in_object[:j].sum()) for j in range(N + 1)]
    np.testing.assert_allclose(c.scores, [p0(k) for k in kept], rtol=1e-12)
    # three levels with many ties: by level (high first), then by position
    a = np.random.default_rng(3).integers(0, 3, size=(SIZE, SIZE)).astype(float)
    removal = sorted(range(N), key=lambda i: (-a.flat[i], i))
    c = deletion(model, image, a, steps=N)
    kept = [OBJECT - int(in_object[removal[:j]].sum()) for j in range(N + 1)]
    np.testing.assert_allclose(c.scores, [p0(k) for k in kept], rtol=1e-12)


def test_signed_maps_rank_by_value(model, image):
    a = object_map() - 5.0  # all negative, object still highest
    assert deletion(model, image, a, steps=16).auc == pytest.approx(
        deletion(model, image, object_map(), steps=16).auc, rel=1e-15
    )


def test_curve_independent_of_batch_size(model, image):
    g = np.random.default_rng(0).normal(size=(SIZE, SIZE))
    for func in (deletion, insertion):
        one = func(model, image, g, steps=N, batch_size=1)
        seven = func(model, image, g, steps=N, batch_size=7)
        auto = func(model, image, g, steps=N)
        np.testing.assert_array_equal(one.scores, seven.scores)
        np.testing.assert_array_equal(one.scores, auto.scores)
        assert one.auc == seven.auc


def test_more_steps_than_pixels(model, image):
    c = deletion(model, image, object_map(), steps=1000)
    np.testing.assert_array_equal(c.pixels, np.arange(N + 1))
    np.testing.assert_allclose(c.scores[:17], [p0(16 - j) for j in range(17)], rtol=1e-12)
    # steps that do not divide the pixel count: 64 pixels in steps of ceil(64 / 10) = 7
    c = deletion(model, image, object_map(), steps=10)
    np.testing.assert_array_equal(c.pixels, [0, 7, 14, 21, 28, 35, 42, 49, 56, 63, 64])


def test_logit_score(model, image):
    c = deletion(model, image, object_map(), steps=16, score="logit")
    np.testing.assert_allclose(c.scores[:5], [SCALE * (16 - 4 * i) / 16 for i in range(5)])
    c1 = deletion(model, image, object_map(), steps=16, score="logit", target=1)
    np.testing.assert_allclose(c1.scores, BIAS)
    assert c1.target == 1 and c1.label == "class 1"


def test_progress_and_cancellation_restore_mode(model, image):
    calls = []
    c = deletion(
        model,
        image,
        object_map(),
        steps=16,
        batch_size=5,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(5, 17), (10, 17), (15, 17), (17, 17)]
    assert len(c.scores) == 17

    model.train()
    seen = []

    def stop(done, total):
        seen.append(done)
        return False

    with pytest.raises(CancelledError):
        insertion(model, image, object_map(), batch_size=4, progress=stop)
    assert seen == [4]
    assert model.training and all(m.training for m in model.modules())
    # evaluated in eval mode: dropout (train mode) would make this random
    c_train = deletion(model, image, object_map(), steps=16)
    np.testing.assert_array_equal(c_train.scores, c.scores)
    assert model.training


# --------------------------------------------------------------------------- hide_top


def test_hide_top_changes_label_when_object_hidden(model, image):
    r = hide_top(model, image, object_map(), fraction=0.25)
    assert r.pixels == 16 and r.target == 0
    assert r.before_class == 0 and r.before_label == "class 0"
    assert r.before_probability == pytest.approx(p0(16), rel=1e-12)
    assert r.changed and r.after_class == 1 and r.after_label == "class 1"
    assert r.after_probability == pytest.approx(1 - p0(0), rel=1e-12)
    assert r.target_before == pytest.approx(p0(16)) and r.target_after == pytest.approx(p0(0))
    assert float(r) == 1.0

    r = hide_top(model, image, 1 - object_map(), fraction=0.25)  # hides background only
    assert not r.changed and r.after_class == 0 and float(r) == 0.0
    assert r.target_after == pytest.approx(p0(16), rel=1e-12)


def test_hide_top_sweep(model, image):
    rs = hide_top_sweep(model, image, object_map(), [0.1, 0.25, 1.0])
    assert [r.pixels for r in rs] == [6, 16, 64]  # round(0.1 * 64) = 6
    assert [r.changed for r in rs] == [p0(10) < 0.5, True, True]
    assert rs[0].target_after == pytest.approx(p0(10), rel=1e-12)
    # 0.001 of 64 pixels still hides one
    assert hide_top(model, image, object_map(), fraction=0.001).pixels == 1


# --------------------------------------------------------------------------- Grad-CAM++ metrics


def test_average_drop_and_increase(model, image):
    assert average_drop(model, image, object_map()) == 0.0
    assert increase_in_confidence(model, image, object_map()) == 0.0  # O == Y: not an increase
    y, o = p0(16), p0(0)
    assert average_drop(model, image, 1 - object_map()) == pytest.approx((y - o) / y, rel=1e-12)
    # soft mask: object at 0.5 after min-max scaling keeps half of the object's mean
    soft = object_map() * 0.5
    soft[0, 0] = 1.0  # a background pixel sets the maximum
    o = p0(8)
    assert average_drop(model, image, soft) == pytest.approx((y - o) / y, rel=1e-12)
    # a constant map masks out everything
    assert average_drop(model, image, np.full((SIZE, SIZE), 3.0)) == pytest.approx(
        (y - p0(0)) / y, rel=1e-12
    )


def test_increase_in_confidence_with_brighter_hide(model):
    x = torch.full((3, SIZE, SIZE), 0.5, dtype=torch.float64)
    # background kept, object replaced by 1.0 > 0.5: class 0's probability rises
    assert increase_in_confidence(model, x, 1 - object_map(), hide=1.0) == 1.0
    assert average_drop(model, x, 1 - object_map(), hide=1.0) == 0.0
    assert increase_in_confidence(model, x, 1 - object_map(), hide=0.0) == 0.0
    # target 1's probability rises when class 0's falls
    assert increase_in_confidence(model, x, 1 - object_map(), target=1) == 1.0


# --------------------------------------------------------------------------- errors, registry


def test_bad_inputs(model, image):
    good = object_map()
    with pytest.raises(InvalidParameterError, match="model input is 8x8"):
        deletion(model, image, np.zeros((7, 8)))
    with pytest.raises(InvalidParameterError, match="model input"):
        average_drop(model, image, np.zeros((4, 4)))
    nan = good.copy()
    nan[0, 0] = np.nan
    for func in (deletion, insertion, hide_top, average_drop, increase_in_confidence):
        with pytest.raises(InvalidParameterError):
            func(model, image, nan)
    for fraction in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(InvalidParameterError):
            hide_top(model, image, good, fraction=fraction)
    with pytest.raises(InvalidParameterError):
        hide_top(model, image, good, fraction=[0.1, 0.2])
    with pytest.raises(InvalidParameterError):
        hide_top_sweep(model, image, good, [])
    for steps in (0, -3, 2.5, True):
        with pytest.raises(InvalidParameterError):
            deletion(model, image, good, steps=steps)
    with pytest.raises(InvalidParameterError):
        insertion(model, image, good, batch_size=-1)
    with pytest.raises(InvalidParameterError):
        deletion(model, image, good, score="softmax")
    with pytest.raises(InvalidParameterError):
        deletion(model, image, good, hide="bogus")
    with pytest.raises(InvalidTargetError):
        deletion(model, image, good, target=5)


def test_registry_lists_faithfulness_metrics():
    infos = {m.name: m for m in list_metrics("faithfulness")}
    expected = {
        "deletion": False,
        "insertion": True,
        "hide_top": True,
        "average_drop": False,
        "increase_in_confidence": True,
    }
    assert set(expected) <= set(infos)
    for name, higher in expected.items():
        info = infos[name]
        assert info.higher_is_better is higher, name
        assert info.needs == ("model", "image") and info.range == (0, 1)
        assert info.func is getattr(seethrough.metrics, name)


# --------------------------------------------------------------------------- a real map


def test_tiny_cnn_with_explain_maps():
    net = make_tiny()
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    e = seethrough.explain(net, x, "gradcam")
    with torch.no_grad():
        probs = net(x[None]).softmax(1)[0]
    d = deletion(net, x, e, steps=8)
    i = insertion(net, x, e, steps=8)
    assert d.target == e.target == int(probs.argmax())
    assert d.scores[0] == pytest.approx(probs[e.target].item(), rel=1e-5)
    assert i.scores[-1] == pytest.approx(probs[e.target].item(), rel=1e-5)
    assert len(d.scores) == 9 and 0 <= d.auc <= 1 and 0 <= i.auc <= 1
    r = hide_top(net, x, e, fraction=0.2)
    assert r.before_class == e.target and r.pixels == round(0.2 * 256)
    assert 0 <= average_drop(net, x, e) <= 1

"""Cheap smoke checks on the bundled EfficientNet-Lite0 and the "chelsea" sample.

* IG (32 Gauss-Legendre steps, 'black' baseline): ``delta`` is ``y(x) - y(black)`` with black
  the image that is 0 before normalisation (``-mean / std``, built here from the model's
  preprocessing), the reported gap is ``|sum(a) - delta|``, and it is a small fraction of
  ``|delta|``. Measured: 7.7% at 32 steps (0.6% at 8, 11.7% at 16, 2.9% at 64, 1.8% at 128).
  Lite0 uses ReLU6, so the path integrand is piecewise constant with many jumps and
  Gauss-Legendre converges only slowly and not monotonically; the same 32-step IG from Captum
  gives the same attributions to 1e-7, so the gap is the quadrature's, not a bug. The bound is
  10%: a wrong weight, node or baseline gives a gap of the order of ``|delta|`` itself.
* Saliency: the map's mass on the cat's face box (rows 60-215, cols 40-200: 50% of the area)
  is 0.576 (abs_max); the test asks for > 0.54.
* Guided backprop runs on a model whose activations are ``nn.ReLU6`` modules, and every
  module of the bundled model is the same object of the same type afterwards.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import seethrough

pytestmark = pytest.mark.slow

ROWS, COLS = slice(60, 216), slice(40, 201)


def snapshot(model: nn.Module) -> list[tuple[str, int, type]]:
    return [(name, id(m), type(m)) for name, m in model.named_modules()]


def test_integrated_gradients_completeness_on_lite0(lite0):
    before = snapshot(lite0.module)
    e = seethrough.explain(lite0, "sample:chelsea", "integrated_gradients", n_steps=32)
    assert snapshot(lite0.module) == before
    x = seethrough.api.prepare_inputs(lite0, "sample:chelsea")[0]
    prep = lite0.preprocessing
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (prep.mean, prep.std))
    black = (-mean / std).expand_as(x)
    with torch.no_grad():
        y = lite0.module(torch.cat([x, black]))[:, e.target]
    delta = float(y[0] - y[1])
    assert e.stats["delta"] == pytest.approx(delta, rel=1e-4)
    assert e.score == pytest.approx(float(y[0]), rel=1e-5)
    total = float(e.attributions.astype(np.float64).sum())
    assert e.stats["completeness_gap"] == pytest.approx(abs(total - delta), rel=1e-3, abs=1e-3)
    assert e.stats["completeness_gap"] < 0.10 * abs(delta), e.stats
    assert abs(delta) > 5  # the cat logit really drops on the black image


def test_saliency_concentrates_on_the_cat(lite0):
    e = seethrough.explain(lite0, "sample:chelsea", "saliency")
    assert e.label == "Egyptian cat"
    m = e.map.astype(np.float64)
    assert m.shape == (224, 224) and (m >= 0).all()
    area = (ROWS.stop - ROWS.start) * (COLS.stop - COLS.start) / m.size
    assert area == pytest.approx(0.50, abs=0.01)
    share = m[ROWS, COLS].sum() / m.sum()
    assert share > 0.54, share


def test_guided_backprop_runs_and_restores_lite0(lite0):
    module = lite0.module
    before = snapshot(module)
    flags = [(p.requires_grad, p.grad) for p in module.parameters()]
    assert sum(type(m) is nn.ReLU6 for m in module.modules()) > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = seethrough.explain(lite0, "sample:chelsea", "guided_backprop")
    # every activation of Lite0 is a ReLU6 module: nothing is left unguided
    assert not [w for w in caught if "guided backpropagation" in str(w.message)]
    assert snapshot(module) == before
    assert np.isfinite(e.attributions).all() and np.abs(e.attributions).max() > 0
    assert e.label == "Egyptian cat"
    after = [(p.requires_grad, p.grad) for p in module.parameters()]
    assert all(a[0] == b[0] and a[1] is b[1] for a, b in zip(after, flags, strict=True))

"""Captum (test-only oracle) on a tiny random float32 CNN, batch of 2 with different targets.

Saliency (``abs=False``: the signed gradient), IntegratedGradients (same baseline, steps and
rule) and GuidedBackprop (Captum hooks the ``nn.ReLU`` modules) must agree with ours.

Tolerance: both run the same float32 network; they differ only in summation order and in
Captum's float32 ``linspace`` nodes (about 1e-7 relative), so 1e-5 of the largest attribution
(absolute) leaves an order of magnitude of margin, while any wrong weight or node is >= 1e-2.

Captum's ``riemann_trapezoid`` is not the trapezoid rule: its weights are ``1/n`` (halved at
both ends), summing to ``(n-1)/n``, with nodes ``linspace(0, 1, n)`` (captum 0.9.0,
``attr/_utils/approximation_methods.py``, ``riemann_builders``). Ours uses ``1/(n-1)`` (summing
to 1, as completeness needs), so ours equals Captum's times ``n/(n-1)`` exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.methods.gradient.integrated_gradients import RULES

from ._models import SmallCNN

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings(
    "ignore:Input Tensor 0 did not already require gradients:UserWarning",
    "ignore:Setting backward hooks on ReLU:UserWarning",
)

TARGETS = [1, 3]


@pytest.fixture(scope="module")
def model() -> SmallCNN:
    return SmallCNN(classes=4, seed=3, dtype=torch.float32)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(70)
    return torch.rand(2, 3, 8, 8, generator=g) * 2 - 1


def agree(ours: np.ndarray, theirs: torch.Tensor, rtol: float = 1e-5) -> None:
    theirs = theirs.detach().numpy().astype(np.float64)
    scale = np.abs(theirs).max()
    assert scale > 1e-4
    np.testing.assert_allclose(ours.astype(np.float64), theirs, rtol=0, atol=rtol * scale)


def ours(model, x, method: str, **kw) -> np.ndarray:
    es = seethrough.explain(model, x, method, target=TARGETS, **kw)
    assert [e.target for e in es] == TARGETS
    return np.stack([e.attributions for e in es])


def test_saliency_matches_captum(model, x):
    theirs = captum_attr.Saliency(model).attribute(x.clone(), target=TARGETS, abs=False)
    agree(ours(model, x, "saliency"), theirs)


@pytest.mark.parametrize("rule", RULES)
def test_integrated_gradients_matches_captum(model, x, rule):
    g = torch.Generator().manual_seed(71)
    base = torch.rand(2, 3, 8, 8, generator=g) * 0.5
    n = 12
    theirs = captum_attr.IntegratedGradients(model).attribute(
        x.clone(), baselines=base, target=TARGETS, n_steps=n, method=rule
    )
    if rule == "riemann_trapezoid":
        theirs = theirs * n / (n - 1)
    agree(
        ours(model, x, "integrated_gradients", baseline=base, n_steps=n, integration=rule), theirs
    )


def test_guided_backprop_matches_captum(model, x):
    before = [(name, type(m)) for name, m in model.named_modules()]
    theirs = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=TARGETS)
    mine = ours(model, x, "guided_backprop")
    agree(mine, theirs)
    plain = captum_attr.Saliency(model).attribute(x.clone(), target=TARGETS, abs=False)
    assert np.abs(mine - plain.detach().numpy()).max() > 1e-2 * np.abs(mine).max()
    assert [(name, type(m)) for name, m in model.named_modules()] == before

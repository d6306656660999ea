"""Feature ablation and Shapley value sampling against Captum's implementations.

Same float64 model, input, groups (Captum's ``feature_mask`` is our ``segments``), fill
(Captum's ``baselines`` is our ``hide``) and target. Shapley value sampling draws its
permutations with ``torch.randperm`` from a generator seeded with ``seed``; Captum draws them
with ``torch.randperm`` from the global generator, so ``torch.manual_seed(seed)`` gives both
the same permutations and the results agree to rounding. Our maps are float32 (values of order
1: ~1e-7), so 1e-5 catches any difference in the formula (a missed group, a wrong sign, a
permutation out of step) while leaving rounding alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough

from . import test_new_perturbation_methods as formulas

captum_attr = pytest.importorskip("captum.attr")

H, W, LABELS = formulas.H, formulas.W, formulas.LABELS  # 8 groups of a shuffled 2x4 grid
x, fill, mlp = formulas.x, formulas.fill, formulas.mlp  # the same input, fill, model (fixtures)
CLS = 1


def _ours(model, x, method, hide, **kw):
    return seethrough.explain(
        model, x[0], method, target=CLS, segments=LABELS, hide=hide, score="logit", **kw
    )


def _mask() -> torch.Tensor:
    return torch.as_tensor(LABELS)[None, None]  # (1, 1, H, W): the same groups in every channel


@pytest.mark.parametrize("hide", ["image", 0.25])
def test_feature_ablation_equals_captum(mlp, x, fill, hide):
    baseline = fill if hide == "image" else hide
    e = _ours(mlp, x, "feature_ablation", fill[0] if hide == "image" else hide, batch_size=3)
    theirs = captum_attr.FeatureAblation(mlp).attribute(
        x, baselines=baseline, target=CLS, feature_mask=_mask(), perturbations_per_eval=3
    )
    theirs = theirs[0].numpy()
    assert np.abs(theirs - theirs[:1]).max() == 0  # one value per group in every channel
    assert np.abs(theirs[0]).max() > 0.05  # a non-trivial case
    np.testing.assert_allclose(e.raw, theirs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed, n_samples", [(0, 1), (7, 5), (3, 40)])
def test_shapley_sampling_equals_captum_with_the_same_permutations(mlp, x, fill, seed, n_samples):
    e = _ours(mlp, x, "shapley_sampling", fill[0], seed=seed, n_samples=n_samples)
    torch.manual_seed(seed)
    theirs = captum_attr.ShapleyValueSampling(mlp).attribute(
        x, baselines=fill, target=CLS, feature_mask=_mask(), n_samples=n_samples
    )
    theirs = theirs[0, 0].numpy()
    assert np.abs(theirs).max() > 0.05
    np.testing.assert_allclose(e.raw, theirs, rtol=1e-5, atol=1e-6)


def test_shapley_sampling_differs_from_captum_with_other_permutations(mlp, x, fill):
    # the agreement above is not an accident of the model: another seed gives other values
    e = _ours(mlp, x, "shapley_sampling", fill[0], seed=1, n_samples=5)
    torch.manual_seed(2)
    theirs = captum_attr.ShapleyValueSampling(mlp).attribute(
        x, baselines=fill, target=CLS, feature_mask=_mask(), n_samples=5
    )
    assert np.abs(e.raw - theirs[0, 0].numpy()).max() > 1e-3

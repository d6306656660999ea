"""LIME and Kernel SHAP against independent references computed in the test.

1. Kernel SHAP vs EXACT Shapley values, enumerated by brute force with the classic formula
   phi_i = sum_{S not containing i} |S|! (F-|S|-1)! / F! (v(S + i) - v(S)) on a nonlinear float64
   model with F = 8 known features (a shuffled 2x4 grid on a 3x8x8 input), ``score="logit"``.
   v(S) is computed here from the model on ``x * m + hidden * (1 - m)``.
2. LIME on a model that is exactly linear in the superpixel indicators (with hide=0 a masked
   segment's mean is z_f * mean_f) must recover the true coefficients.
3. ``weighted_ridge`` against the normal equations with an explicit intercept column.

Tolerances: the methods compute in float64 but ``.weights`` are float32, so values of order 1
agree to ~1e-7; 1e-6 leaves margin while any formula error (wrong kernel weight, a lost
constraint, a penalised intercept) shows up at 1e-3 or more. Stats are float64 (1e-9).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.methods.perturbation import hidden_image
from seethrough.methods.perturbation.surrogate import weighted_ridge

from ._models import (
    DT,
    SegmentMeanLinear,
    SmallMLP,
    UnanimityGame,
    brute_force_shapley,
    grid_labels,
)

H = W = 8
LABELS = grid_labels(H, W, 2, 4, seed=3)  # 8 features of 4x2 pixels, labels shuffled
F = 8
CLS = 1


@pytest.fixture(scope="module")
def mlp():
    return SmallMLP(3 * H * W, classes=3, seed=0).eval()


@pytest.fixture(scope="module")
def x():
    g = torch.Generator().manual_seed(5)
    return torch.rand(1, 3, H, W, generator=g, dtype=DT) * 2 - 0.5


def _hide_value(kind: str, x: torch.Tensor):
    if kind == "image":
        g = torch.Generator().manual_seed(11)
        return torch.rand(3, H, W, generator=g, dtype=DT)
    return {"zero": 0.0, "half": 0.5}.get(kind, kind)


def _reference_hidden(x: torch.Tensor, hide, seed: int) -> torch.Tensor:
    """The replacement image, built independently where that is simple."""
    if isinstance(hide, torch.Tensor):
        return hide[None]
    if isinstance(hide, float):
        return torch.full_like(x, hide)
    if hide == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    # blur / noise: the library's helper (checked on its own in test_perturbation_engine.py);
    # noise comes from the per-image generator seeded with ``seed``, first draw.
    return hidden_image(x, hide, torch.Generator().manual_seed(seed))


def _kernelshap(model, x, hide, n_samples, seed=0, **kw):
    return seethrough.explain(
        model,
        x,
        "kernelshap",
        target=CLS,
        segments=LABELS,
        hide=hide,
        n_samples=n_samples,
        batch_size=64,
        seed=seed,
        score="logit",
        **kw,
    )[0]


HIDES = ["zero", "half", "mean", "blur", "noise", "image"]


@pytest.mark.parametrize("hide_kind", HIDES)
def test_kernelshap_exact_mode_equals_brute_force_shapley(mlp, x, hide_kind):
    hide = _hide_value(hide_kind, x)
    hidden = _reference_hidden(x, hide, seed=0)
    phi, v_full, v_empty = brute_force_shapley(mlp, x, hidden, LABELS, CLS)
    assert np.abs(phi).max() > 0.05  # a non-trivial reference
    calls = []
    e = _kernelshap(mlp, x, hide, n_samples=2**F, progress=lambda d, t: calls.append((d, t)))
    assert e.weights.shape == (F,)
    np.testing.assert_allclose(e.weights, phi, rtol=0, atol=1e-6)
    assert e.stats["base_value"] == pytest.approx(v_empty, abs=1e-9)
    assert e.stats["full_value"] == pytest.approx(v_full, abs=1e-9)
    assert e.stats["efficiency_gap"] < 1e-9
    assert e.stats["features"] == F
    # exact enumeration: 2^F model evaluations (all coalitions, the two ends included)
    assert calls[-1] == (2**F, 2**F)
    # the map paints each feature with its value
    np.testing.assert_array_equal(e.map, e.weights[LABELS])


def test_kernelshap_exact_with_larger_budget_still_enumerates(mlp, x):
    phi, _, _ = brute_force_shapley(mlp, x, torch.zeros_like(x), LABELS, CLS)
    calls = []
    e = _kernelshap(mlp, x, 0.0, n_samples=5000, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_allclose(e.weights, phi, rtol=0, atol=1e-6)
    assert calls[-1] == (2**F, 2**F)  # not 5000: the budget is not wasted


def test_kernelshap_exact_top_labels_each_row_its_class(mlp, x):
    e = seethrough.explain(
        mlp,
        x,
        "kernelshap",
        target=0,
        segments=LABELS,
        hide=0.0,
        n_samples=2**F,
        score="logit",
        top_labels=3,
    )[0]
    classes = e.extras["classes"]
    assert classes[0] == 0 and sorted(classes) == [0, 1, 2]
    assert e.weights.shape == (3, F)
    for row, cls in enumerate(classes):
        phi, _, _ = brute_force_shapley(mlp, x, torch.zeros_like(x), LABELS, int(cls))
        np.testing.assert_allclose(e.weights[row], phi, rtol=0, atol=1e-6)


@pytest.mark.parametrize("hide_kind", HIDES)
@pytest.mark.parametrize("n_samples,seed", [(2**F, 0), (2**F - 1, 1), (12, 0), (7, 2)])
def test_kernelshap_efficiency_in_every_mode(mlp, x, hide_kind, n_samples, seed):
    """sum(phi) = f(x) - f(all hidden), exact by construction, sampled or not."""
    hide = _hide_value(hide_kind, x)
    hidden = _reference_hidden(x, hide, seed=seed)
    with torch.no_grad():
        f_x = float(mlp(x)[0, CLS])
        f_hidden = float(mlp(hidden)[0, CLS])
    e = _kernelshap(mlp, x, hide, n_samples=n_samples, seed=seed)
    assert e.stats["efficiency_gap"] < 1e-5
    assert e.stats["full_value"] == pytest.approx(f_x, abs=1e-9)
    assert e.stats["base_value"] == pytest.approx(f_hidden, abs=1e-9)
    assert float(np.sum(e.weights.astype(np.float64))) == pytest.approx(f_x - f_hidden, abs=1e-5)
    assert np.all(np.isfinite(e.weights))


def test_kernelshap_boundary_budget_switches_to_sampling(mlp, x):
    """n_samples = 2^F - 1 is one short of enumeration: sampled, so not the exact values."""
    phi, _, _ = brute_force_shapley(mlp, x, torch.zeros_like(x), LABELS, CLS)
    e = _kernelshap(mlp, x, 0.0, n_samples=2**F - 1)
    assert np.abs(e.weights - phi).max() > 1e-4


def test_kernelshap_sampled_converges_to_exact():
    """Paired kernel sampling is a consistent estimator: the error shrinks with the budget.

    Sampling needs n_samples < 2^F (otherwise every coalition is enumerated), so this uses
    F = 10 (1024 coalitions) and compares 1000 sampled coalitions with 40. The error comes only
    from which coalitions are drawn (O(1/sqrt(M))). Measured on this model: 3-5 % of max|phi|
    (max abs error over features) at M = 1000, 30-40 % at M = 40. We require < 10 % at 1000
    and a mean error at least 3x smaller than at 40 (over 4 seeds): a biased sampler (sizes
    drawn uniformly, unpaired, or kernel weights applied twice) fails one or the other.
    """
    h, w = 8, 10
    labels = grid_labels(h, w, 2, 5, seed=7)
    model = SmallMLP(3 * h * w, classes=3, seed=1).eval()
    x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(5), dtype=DT) * 2 - 0.5
    phi, _, _ = brute_force_shapley(model, x[None], torch.zeros(1, 3, h, w, dtype=DT), labels, 1)
    scale = np.abs(phi).max()

    def error(n, seed):
        e = seethrough.explain(
            model,
            x,
            "kernelshap",
            target=1,
            segments=labels,
            hide=0.0,
            n_samples=n,
            seed=seed,
            score="logit",
        )
        assert e.stats["efficiency_gap"] < 1e-9
        return np.abs(e.weights - phi).max() / scale

    big = [error(1000, s) for s in range(4)]
    small = [error(40, s) for s in range(4)]
    assert max(big) < 0.1, big
    assert np.mean(big) < np.mean(small) / 3, (big, small)


def test_kernelshap_sampled_is_nearly_unbiased_on_a_known_game():
    """Averaged over seeds, sampled Kernel SHAP lands on the exact Shapley values.

    A sum of unanimity games (sets of 1 to 9 of F = 10 features) has Shapley values in closed
    form (c_k / |A_k| to each member), confirmed here by brute force. Strong high-order
    interactions make one run noisy (12-27 % of max|phi| at 1000 samples), but averaging 8
    seeds shrinks the variance and leaves the bias: measured 3.6 % (the O(1/M) bias of a
    ratio estimator). Drawing coalition sizes uniformly instead of by the Shapley kernel gives
    23 %, so 10 % separates a correct sampler from a biased one.
    """
    h, w = 8, 10
    labels = grid_labels(h, w, 2, 5, seed=7)
    x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(5), dtype=DT) + 0.5
    rng = np.random.default_rng(0)
    sets = [tuple(rng.choice(10, size=k, replace=False)) for k in (1, 2, 3, 5, 7, 9)]
    model = UnanimityGame(labels, x, sets, [0.5, -1.0, 1.5, 2.0, -2.0, 3.0]).eval()
    phi = model.shapley()
    brute, _, _ = brute_force_shapley(model, x[None], torch.zeros(1, 3, h, w, dtype=DT), labels, 0)
    np.testing.assert_allclose(brute, phi, rtol=0, atol=1e-12)
    runs = [
        seethrough.explain(
            model,
            x,
            "kernelshap",
            target=0,
            segments=labels,
            hide=0.0,
            n_samples=1000,
            seed=seed,
            score="logit",
            batch_size=250,
        ).weights
        for seed in range(8)
    ]
    assert len({r.tobytes() for r in runs}) == 8  # sampled, not enumerated
    error = np.abs(np.mean(runs, 0) - phi).max() / np.abs(phi).max()
    assert error < 0.1, error


# ---------------------------------------------------------------------------------------- LIME

LH, LW = 9, 12
LIME_LABELS = grid_labels(LH, LW, 3, 3, seed=1) * 7 + 4  # 9 features, labels 4, 11, ..., 60
LIME_F = 9
DENSE = np.unique(LIME_LABELS, return_inverse=True)[1].reshape(LH, LW)


@pytest.fixture(scope="module")
def linear_setup():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(5, LIME_F, generator=g, dtype=DT)
    model = SegmentMeanLinear(DENSE, c).eval()
    x = torch.rand(1, 3, LH, LW, generator=g, dtype=DT) + 0.5
    seg = torch.as_tensor(DENSE)
    means = torch.stack([x[0][:, seg == f].mean() for f in range(LIME_F)]).numpy()
    return model, x, c.numpy(), means


def test_lime_recovers_exact_linear_coefficients(linear_setup):
    model, x, c, means = linear_setup
    target = 2
    e = seethrough.explain(
        model,
        x[0],
        "lime",
        target=target,
        segments=LIME_LABELS,
        hide=0,
        n_samples=120,
        alpha=1e-8,
        score="logit",
        seed=4,
    )
    np.testing.assert_array_equal(e.segments, DENSE)
    expected = c[target] * means
    assert np.abs(expected).min() > 1e-3
    np.testing.assert_allclose(e.weights, expected, rtol=0, atol=1e-6)
    assert abs(e.stats["r2"] - 1) < 1e-9
    assert abs(e.stats["intercept"]) < 1e-6  # f(all hidden) = 0 for this model with hide=0
    np.testing.assert_array_equal(e.map, e.weights[DENSE])


def test_lime_top_labels_rows_match_their_classes(linear_setup):
    model, x, c, means = linear_setup
    e = seethrough.explain(
        model,
        x[0],
        "lime",
        segments=LIME_LABELS,
        hide=0.0,
        n_samples=120,
        alpha=1e-8,
        score="logit",
        top_labels=3,
        seed=0,
    )
    with torch.no_grad():
        ranking = model(x)[0].argsort(descending=True).numpy()
    np.testing.assert_array_equal(e.extras["classes"], ranking[:3])
    assert e.target == ranking[0]
    assert e.weights.shape == (3, LIME_F)
    for row, cls in enumerate(e.extras["classes"]):
        np.testing.assert_allclose(e.weights[row], c[cls] * means, rtol=0, atol=1e-6)
    # the map is the primary target's row
    np.testing.assert_array_equal(e.map, e.weights[0][DENSE])


def test_lime_ridge_penalty_shrinks(linear_setup):
    """With the default alpha=1 the coefficients shrink towards 0 (and r2 drops below 1)."""
    model, x, c, means = linear_setup
    e = seethrough.explain(
        model,
        x[0],
        "lime",
        target=0,
        segments=LIME_LABELS,
        hide=0.0,
        n_samples=120,
        score="logit",
        seed=4,
    )
    exact = c[0] * means
    assert np.abs(e.weights).sum() < np.abs(exact).sum()
    assert e.stats["r2"] < 1 - 1e-6


# --------------------------------------------------------------------------------- weighted ridge


def _normal_equations(z, y, w, alpha):
    x = np.hstack([np.ones((len(z), 1)), z])
    penalty = alpha * np.eye(x.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not penalised
    theta = np.linalg.solve(x.T @ (w[:, None] * x) + penalty, x.T @ (w[:, None] * y))
    fitted = x @ theta
    ybar = (w @ y) / w.sum()
    r2 = 1 - (w @ (y - fitted) ** 2) / (w @ (y - ybar) ** 2)
    return theta[1:].T, theta[0], r2


@pytest.mark.parametrize("alpha", [0.0, 1e-3, 0.7, 25.0])
@pytest.mark.parametrize("binary", [True, False])
def test_weighted_ridge_matches_normal_equations(alpha, binary):
    rng = np.random.default_rng(int(alpha * 1000) + binary)
    m, f, t = 60, 7, 3
    z = (rng.random((m, f)) < 0.5).astype(float) if binary else rng.normal(size=(m, f))
    y = z @ rng.normal(size=(f, t)) + rng.normal(size=t) + 0.3 * rng.normal(size=(m, t))
    w = rng.uniform(0.05, 2.0, size=m)
    coef, intercept, r2 = weighted_ridge(torch.tensor(z), torch.tensor(y), torch.tensor(w), alpha)
    ref_coef, ref_intercept, ref_r2 = _normal_equations(z, y, w, alpha)
    assert coef.shape == (t, f) and intercept.shape == (t,) and r2.shape == (t,)
    np.testing.assert_allclose(coef.numpy(), ref_coef, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(intercept.numpy(), ref_intercept, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(r2.numpy(), ref_r2, rtol=1e-9, atol=1e-10)


def test_weighted_ridge_scale_of_weights_and_exact_fit():
    """Multiplying all weights by a constant changes nothing when alpha=0; exact data -> r2=1."""
    rng = np.random.default_rng(0)
    z = torch.tensor(rng.normal(size=(30, 4)))
    y = z @ torch.tensor(rng.normal(size=(4, 2))) + 1.5
    w = torch.tensor(rng.uniform(0.1, 1, size=30))
    c1, b1, r1 = weighted_ridge(z, y, w, 0.0)
    c2, b2, r2 = weighted_ridge(z, y, w * 1000, 0.0)
    torch.testing.assert_close(c1, c2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b1, torch.full((2,), 1.5, dtype=DT), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r1, torch.ones(2, dtype=DT), rtol=0, atol=1e-12)


def test_lime_alpha_zero_with_few_samples_fails_cleanly(linear_setup):
    model, x, _, _ = linear_setup
    try:
        e = seethrough.explain(
            model, x[0], "lime", target=0, segments=LIME_LABELS, n_samples=5, alpha=0.0
        )
    except seethrough.errors.SeethroughError:
        return
    assert np.all(np.isfinite(e.weights))


@pytest.mark.parametrize("n", [1, 7, 40])
def test_lime_pairs_complementary_coalitions(n):
    from seethrough.methods.perturbation.lime import Lime

    z, w = Lime(n_samples=n).coalitions(9, torch.Generator().manual_seed(0))
    assert z.shape == (n, 9) and w.shape == (n,) and bool(z[0].all())
    half = (n + 1) // 2
    assert torch.equal(z[half:], 1 - z[: n - half])
    independent, _ = Lime(n_samples=n, paired=False).coalitions(9, torch.Generator().manual_seed(0))
    if n > 2:
        assert not torch.equal(independent[half:], 1 - independent[: n - half])


def test_lime_pairs_lower_the_variance_of_the_weights():
    """On a score with interactions (not linear in the coalition), the ridge weights of 40
    seeds scatter less with paired coalitions than with independent ones, around the same
    mean (pairs keep every coalition's distribution)."""
    from seethrough.methods.perturbation.lime import Lime
    from seethrough.methods.perturbation.surrogate import weighted_ridge

    f = 12
    g = torch.Generator().manual_seed(3)
    beta = torch.randn(f, generator=g, dtype=torch.float64)
    pairs = torch.randn(f, f, generator=g, dtype=torch.float64) / f

    def fits(paired: bool) -> torch.Tensor:
        out = []
        for seed in range(40):
            method = Lime(n_samples=200, paired=paired)
            z, w = method.coalitions(f, torch.Generator().manual_seed(seed))
            y = (z @ beta + ((z @ pairs) * z).sum(1)).unsqueeze(1)
            out.append(weighted_ridge(z, y, w, 1.0)[0][0])
        return torch.stack(out)

    paired, independent = fits(True), fits(False)
    assert paired.var(0).mean() < 0.7 * independent.var(0).mean()
    spread = independent.std(0).mean()
    assert (paired.mean(0) - independent.mean(0)).abs().max() < spread

"""Feature ablation, Shapley value sampling and DAX against their formulas and axioms.

1. Feature ablation on a linear float64 model: attribution of group g = w_g . (x_g - b_g).
2. Shapley value sampling: one permutation reproduced by hand (the permutation drawn from the
   seeded generator, marginal contributions evaluated here); efficiency for every permutation
   sample (sum = v(all) - v(empty)); convergence to the exact Shapley values of a 4-group game
   (brute force here, and the library's exact ``shapley_from_values``).
3. DAX on models whose evidence lies in one known region: the mask's maximum falls there and
   the training loss goes down; the global random generator is left alone.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.core.coalitions import (
    all_coalitions,
    permutation_coalitions,
    shapley_from_permutations,
    shapley_from_values,
)

from ._models import DT, SmallMLP, WeightedSum, brute_force_shapley, grid_labels, masked_inputs

H = W = 8
LABELS = grid_labels(H, W, 2, 4, seed=3)  # 8 groups, labels shuffled


@pytest.fixture(scope="module")
def x():
    g = torch.Generator().manual_seed(5)
    return torch.rand(1, 3, H, W, generator=g, dtype=DT) * 2 - 0.5


@pytest.fixture(scope="module")
def fill():
    g = torch.Generator().manual_seed(11)
    return torch.rand(1, 3, H, W, generator=g, dtype=DT)


# ---------------------------------------------------------------------------------------------
# feature ablation


def test_feature_ablation_of_a_linear_model_is_w_dot_x_minus_b(x, fill):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(1, 3, H, W, generator=g, dtype=DT)
    e = seethrough.explain(
        WeightedSum(a),
        x[0],
        "feature_ablation",
        target=0,
        segments=LABELS,
        hide=fill[0],
        score="logit",
    )
    contrib = (a * (x - fill)).sum(1)[0].numpy()  # (H, W): w . (x - b) per pixel
    by_hand = np.array([contrib[LABELS == k].sum() for k in range(8)])
    np.testing.assert_allclose(e.extras["weights"], by_hand, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(e.raw, by_hand[LABELS], rtol=1e-6, atol=1e-6)
    assert e.stats["features"] == 8
    # a linear model's group drops add up to the whole difference f(x) - f(b)
    assert by_hand.sum() == pytest.approx(float((a * (x - fill)).sum()), rel=1e-10)


def test_feature_ablation_explains_several_classes_from_one_run(x):
    model = SmallMLP(3 * H * W, classes=3, seed=1).eval()
    both = seethrough.explain(
        model, x[0], "feature_ablation", target=0, segments=LABELS, top_labels=2, score="logit"
    )
    assert both.extras["weights"].shape == (2, 8)
    alone = seethrough.explain(
        model, x[0], "feature_ablation", target=0, segments=LABELS, score="logit"
    )
    np.testing.assert_allclose(both.extras["weights"][0], alone.extras["weights"], rtol=1e-6)
    hidden = torch.zeros_like(x)
    with torch.no_grad():
        v0 = model(x)[0, 0]
        for k in range(8):
            m = torch.as_tensor(LABELS != k, dtype=DT)[None]
            drop = v0 - model(masked_inputs(x, hidden, m))[0, 0]
            assert alone.extras["weights"][k] == pytest.approx(float(drop), rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Shapley value sampling


@pytest.fixture(scope="module")
def mlp():
    return SmallMLP(3 * H * W, classes=3, seed=0).eval()


def _value(model, x, hidden, keep: torch.Tensor, cls: int) -> float:
    masks = keep[torch.as_tensor(LABELS)][None]  # (1, H, W)
    with torch.no_grad():
        return float(model(masked_inputs(x, hidden, masks))[0, cls])


def _one_permutation(mlp, x, fill, target: int, seed: int):
    """Shapley value sampling of ``target`` from the single permutation ``seed`` draws."""
    return seethrough.explain(
        mlp,
        x[0],
        "shapley_sampling",
        target=target,
        segments=LABELS,
        hide=fill[0],
        seed=seed,
        n_samples=1,
        score="logit",
    )


def test_one_permutation_by_hand(mlp, x, fill):
    seed = 4
    e = _one_permutation(mlp, x, fill, 2, seed)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(seed)).tolist()
    keep = torch.zeros(8, dtype=DT)
    phi = np.zeros(8)
    before = _value(mlp, x, fill, keep, 2)
    for k in order:
        keep[k] = 1
        now = _value(mlp, x, fill, keep, 2)
        phi[k] = now - before
        before = now
    np.testing.assert_allclose(e.extras["weights"], phi, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_efficiency_holds_for_every_permutation_sample(mlp, x, fill, seed):
    e = _one_permutation(mlp, x, fill, 1, seed)
    full = _value(mlp, x, fill, torch.ones(8, dtype=DT), 1)
    empty = _value(mlp, x, fill, torch.zeros(8, dtype=DT), 1)
    assert e.stats["efficiency_gap"] < 1e-12
    assert e.stats["base_value"] == pytest.approx(empty, abs=1e-12)
    assert e.stats["full_value"] == pytest.approx(full, abs=1e-12)
    assert float(e.extras["weights"].sum()) == pytest.approx(full - empty, abs=1e-5)


def test_the_helpers_telescope_for_any_scores():
    # efficiency of the estimator itself, on arbitrary values of the coalitions
    g = torch.Generator().manual_seed(0)
    z = permutation_coalitions(6, 7, g)
    assert z.shape == (1 + 7 * 6, 6) and z[0].sum() == 0
    assert torch.equal(z[1:].reshape(7, 6, 6)[:, -1], torch.ones(7, 6, dtype=DT))
    y = torch.randn(len(z), 2, generator=g, dtype=DT)
    y[6::6] = y[6]  # v(all) is one value, whatever the permutation
    phi = shapley_from_permutations(z, y)
    np.testing.assert_allclose(phi.sum(1), y[6] - y[0], atol=1e-12)


def test_converges_to_the_exact_shapley_values_on_four_groups(mlp, x, fill):
    labels = grid_labels(H, W, 2, 2, seed=1)  # 4 groups
    exact, full, empty = brute_force_shapley(mlp, x, fill, labels, 0)
    # the library's exact Shapley code agrees with the brute force of the test
    z = all_coalitions(4)
    with torch.no_grad():
        v = mlp(masked_inputs(x, fill, z[:, torch.as_tensor(labels)]))[:, :1]
    np.testing.assert_allclose(shapley_from_values(v, 4)[0].numpy(), exact, atol=1e-12)
    errors = []
    for n in (24, 2400):  # 4! = 24 orders; 16 distinct coalitions evaluated either way
        e = seethrough.explain(
            mlp,
            x[0],
            "shapley_sampling",
            target=0,
            segments=labels,
            hide=fill[0],
            n_samples=n,
            score="logit",
        )
        errors.append(np.abs(e.extras["weights"] - exact).max())
    scale = np.abs(exact).max()
    assert scale > 0.05
    assert errors[1] < 0.02 * scale, (errors, exact)  # ~ 1 / sqrt(2400) of the spread
    assert errors[1] < errors[0]


def test_distinct_coalitions_are_evaluated_once(mlp, x):
    calls = []
    hook = mlp.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        seethrough.explain(
            mlp,
            x[0],
            "shapley_sampling",
            target=0,
            segments=grid_labels(H, W, 2, 2),
            n_samples=100,
            batch_size=64,
        )
    finally:
        hook.remove()
    # the clean forward, then the 2^4 - 1 coalitions other than the full one (whose score is
    # the clean forward's), where one evaluation per step of each permutation would be 400
    assert sum(calls) == 1 + 15


# ---------------------------------------------------------------------------------------------
# DAX


class OneRegion(nn.Module):
    """Class 0's logit reads only the pixels of ``region`` (a nonlinear function of them)."""

    def __init__(self, region: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("region", torch.as_tensor(region, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x * self.region).flatten(1).sum(1) / self.region.sum()
        s = 4 * torch.tanh(2 * inside)
        return torch.stack([s, -s, torch.zeros_like(s)], 1)


@pytest.mark.parametrize("cell", [5, 10])
def test_dax_finds_the_only_region_the_model_reads(cell):
    labels = grid_labels(32, 32, 4, 4)  # 16 cells of 8x8
    region = labels == cell
    g = torch.Generator().manual_seed(cell)
    x = torch.rand(3, 32, 32, generator=g) + 0.2
    state = torch.random.get_rng_state()
    e = seethrough.explain(
        OneRegion(region), x, "dax", target=0, segments=labels, n_samples=200, steps=150
    )
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator untouched
    m = e.map
    assert region[np.unravel_index(np.argmax(m), m.shape)]
    assert m[region].mean() > 0.5 > 5 * m[~region].mean()
    assert int(np.argmax(e.extras["weights"])) == cell  # the mask's mean per cell
    curve = e.extras["loss_curve"]
    assert curve.shape == (150,) and curve[-10:].mean() < 0.5 * curve[:10].mean()
    assert e.stats["loss_last"] == pytest.approx(float(curve[-1]))
    assert e.stats["r2"] > 0.9  # the student mimics the model with the final mask


class AllRegions(nn.Module):
    """Class 0's logit is high only when every one of ``regions`` is there (an AND of them)."""

    def __init__(self, regions: list[np.ndarray]) -> None:
        super().__init__()
        self.register_buffer("regions", torch.as_tensor(np.stack(regions), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.regions
        inside = (x[:, None] * r[None, :, None]).flatten(2).sum(2) / r.flatten(1).sum(1)
        s = 4 * torch.tanh(3 * inside.prod(1))
        return torch.stack([s, -s, torch.zeros_like(s)], 1)


def four_cells(seed: int) -> tuple[AllRegions, torch.Tensor, np.ndarray, dict[str, Any]]:
    """An :class:`AllRegions` model of four of 16 cells drawn with ``seed``, an image, the
    cells, and DAX's arguments for them (all but ``steps``)."""
    labels = grid_labels(32, 32, 4, 4)
    cells = np.random.default_rng(seed).choice(16, 4, replace=False)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)) + 0.2
    kw = {"target": 0, "segments": labels, "n_samples": 200, "seed": seed}
    return AllRegions([labels == c for c in cells]), x, cells, kw


def test_dax_keeps_every_region_of_an_and():
    # A score that needs four cells at once: a linear fit explains about a quarter of it, and
    # the mask collapsed to zero on 3 of these 10 images when it was trained from the first
    # step at the student's step size (the student had not learnt the model yet).
    for seed in range(10):
        model, x, cells, kw = four_cells(seed)
        e = seethrough.explain(model, x, "dax", steps=600, **kw)
        kept = e.extras["weights"]  # the mask's mean per cell
        inside = np.isin(np.arange(16), cells)
        assert kept[inside].min() > 0.7 > 2 * kept[~inside].max(), (seed, kept.round(2))
        assert kept[~inside].mean() < 0.1, (seed, kept.round(2))
        assert e.stats["r2"] > 0.9, seed


def test_dax_warns_when_its_mask_falls_to_zero():
    # the model of the test above, on an image where 300 steps are too few for it
    model, x, _, kw = four_cells(9)
    with pytest.warns(UserWarning, match="the mask fell to zero everywhere"):
        e = seethrough.explain(model, x, "dax", steps=300, **kw)
    assert e.raw.max() < 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seethrough.explain(model, x, "dax", steps=600, **kw)


def test_dax_is_seeded():
    labels = grid_labels(16, 16, 2, 2)
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = OneRegion(labels == 1)
    kw = {"target": 0, "segments": labels, "n_samples": 40, "steps": 20}
    a = seethrough.explain(model, x, "dax", seed=3, **kw)
    b = seethrough.explain(model, x, "dax", seed=3, **kw)
    c = seethrough.explain(model, x, "dax", seed=4, **kw)
    np.testing.assert_array_equal(a.map, b.map)
    assert np.abs(a.map - c.map).max() > 1e-4


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dax_points_at_the_digit_as_well_as_lime(digits_cache, monkeypatch):
    # the evaluation benchmark's generated digits and small CNN (trained once per session)
    from seethrough.datasets.synthetic import make_digits
    from seethrough.evaluation import Sample, evaluate

    monkeypatch.setenv("SEETHROUGH_CACHE", str(digits_cache))
    vm = seethrough.load_model("synthetic_digits")
    digits = make_digits(24, split="test", seed=0)
    samples = [
        Sample(f"digit{i}", digits.images[i], digits.masks[i], int(digits.labels[i]))
        for i in range(len(digits.labels))
    ]
    params = {m: {"n_samples": 300} for m in ("dax", "lime")}
    result = evaluate([vm], samples, ["dax", "lime"], metrics=("pointing_game",), params=params)
    pg = {s.method: s.pointing_game for s in result.summary()}
    assert pg["dax"] >= pg["baseline:centre"] + 0.2, pg
    assert pg["dax"] >= pg["baseline:random"] + 0.3, pg
    # at the same model evaluations (before the student's warm-up, DAX was 0.16-0.18 behind)
    assert pg["dax"] >= pg["lime"] - 0.05, pg

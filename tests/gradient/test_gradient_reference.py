"""Saliency and integrated gradients against closed forms computed with numpy (no autograd).

Model: ``Quadratic``, ``y_k = W_k . x + (V_k . x)^2`` in float64, so

* saliency: ``dy_k/dx = W_k + 2 (V_k . x) V_k``;
* integrated gradients from a baseline ``b`` (``d = x - b``): the gradient along the path is
  affine in t, so any quadrature rule with weights summing to 1 and mean node
  ``abar = sum_k w_k alpha_k`` gives exactly ``d * (W_k + 2 (V_k . b + abar V_k . d) V_k)``.
  ``abar`` is derived here by hand for each rule: ``(n-1)/(2n)`` (left), ``(n+1)/(2n)`` (right),
  ``1/2`` (middle, trapezoid, Gauss-Legendre). The completeness gap is then exactly
  ``|2 abar - 1| (V_k . d)^2``: ``(V_k . d)^2 / n`` for the left/right sums, 0 for the others.

Tolerances: the library computes in the model's float64 but returns ``.attributions`` /
``.map`` as float32, so agreement is at float32 rounding (6e-8 relative); ``rtol=1e-6`` leaves
margin while any formula error (a factor 2, a missed term, a wrong weight) is >= 1e-2. Stats
are Python floats from float64 arithmetic: compared to 1e-9 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import seethrough
from seethrough.errors import InvalidParameterError
from seethrough.methods.gradient import IntegratedGradients
from seethrough.methods.gradient.base import REDUCTIONS
from seethrough.methods.gradient.integrated_gradients import RULES, integration_rule

from ._models import DT, Linear, Quadratic, TanhMLP, close, ig_quadratic, rand

SHAPE = (3, 4, 5)


@pytest.fixture(scope="module")
def quad() -> Quadratic:
    return Quadratic(SHAPE, classes=3, seed=0).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return rand((2, *SHAPE), seed=10)


def np_reduce(a: np.ndarray, how: str) -> np.ndarray:
    """``(C, H, W) -> (H, W)`` written independently of ``reduce_channels``."""
    return {
        "abs_max": lambda: np.abs(a).max(0),
        "max": lambda: a.max(0),
        "sum": lambda: a.sum(0),
        "abs_sum": lambda: np.abs(a).sum(0),
        "mean": lambda: a.mean(0),
        "abs_mean": lambda: np.abs(a).mean(0),
        "l2": lambda: np.sqrt((a**2).sum(0)),
    }[how]()


# --- saliency -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [[0, 2], [1, 1], None])
def test_saliency_equals_closed_form_gradient(quad, x, target):
    es = seethrough.explain(quad, x, "saliency", target=target)
    xn = x.numpy()
    expected_targets = target or list(quad.np_forward(xn).argmax(1))
    for i, e in enumerate(es):
        k = int(expected_targets[i])
        assert e.target == k
        assert e.attributions.dtype == np.float32 and e.attributions.shape == SHAPE
        close(e.attributions, quad.np_grad(xn[i], k))
        assert e.score == pytest.approx(quad.np_forward(xn)[i, k], rel=1e-9)


@pytest.mark.parametrize("how", REDUCTIONS)
def test_saliency_reductions_match_numpy(quad, x, how):
    es = seethrough.explain(quad, x, "saliency", target=[2, 0], reduce=how)
    xn = x.numpy()
    for e, xi, k in zip(es, xn, [2, 0], strict=True):
        expected = np_reduce(quad.np_grad(xi, k), how)
        close(e.map, expected)
        close(e.raw, expected)


def test_saliency_default_reduce_is_abs_max(quad, x):
    e = seethrough.explain(quad, x[0], "saliency", target=1)
    close(e.map, np.abs(quad.np_grad(x[0].numpy(), 1)).max(0))


def test_unknown_reduce_is_rejected(quad, x):
    with pytest.raises(InvalidParameterError):
        seethrough.explain(quad, x, "saliency", reduce="median")


def test_saliency_loss_objective_is_cross_entropy_gradient():
    """For ``y = A x + c``: ``d(-log softmax(y)_k)/dx = sum_j p_j A_j - A_k = A^T (p - e_k)``."""
    lin = Linear(SHAPE, classes=4, seed=3).eval()
    x = rand((2, *SHAPE), seed=4)
    A, c = lin.np_A(), lin.c.detach().numpy()
    targets = [3, 1]
    es = seethrough.explain(lin, x, "saliency", target=targets, objective="loss")
    for e, xi, k in zip(es, x.numpy(), targets, strict=True):
        y = A.reshape(4, -1) @ xi.ravel() + c
        p = np.exp(y - y.max())
        p /= p.sum()
        onehot = np.eye(4)[k]
        expected = np.tensordot(p - onehot, A, axes=1)
        close(e.attributions, expected)
        # and it is not the score gradient (the test would not notice a silently ignored flag)
        assert np.abs(expected - A[k]).max() > 1e-2
    score = seethrough.explain(lin, x[0], "saliency", target=3, objective="score")
    close(score.attributions, A[3])


# --- integrated gradients: closed form ----------------------------------------------------


def abar(rule: str, n: int) -> float:
    """Mean quadrature node ``sum_k w_k alpha_k``, derived by hand for each rule."""
    return {
        "riemann_left": (n - 1) / (2 * n),
        "riemann_right": (n + 1) / (2 * n),
        "riemann_middle": 0.5,
        "riemann_trapezoid": 0.5,
        "gausslegendre": 0.5,
    }[rule]


def reference_baseline(kind, x: np.ndarray) -> np.ndarray:
    """The baseline image of one input ``x`` (C, H, W), built by hand."""
    if isinstance(kind, torch.Tensor):
        return kind.numpy()
    if kind == "black":  # no normalisation known for a plain module: zeros
        return np.zeros_like(x)
    if kind == "mean":
        return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    return np.full_like(x, float(kind))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n_steps", [2, 7])
def test_ig_quadratic_closed_form_every_rule(quad, x, rule, n_steps):
    targets = [1, 2]
    es = seethrough.explain(
        quad,
        x,
        "integrated_gradients",
        target=targets,
        baseline=0.3,
        n_steps=n_steps,
        integration=rule,
    )
    xn = x.numpy()
    for e, xi, k in zip(es, xn, targets, strict=True):
        b = np.full_like(xi, 0.3)
        close(e.attributions, ig_quadratic(quad, xi, b, k, abar(rule, n_steps)))
        _, V = quad.np_params()
        vd = np.sum(V[k] * (xi - b))
        delta = quad.np_forward(xi[None])[0, k] - quad.np_forward(b[None])[0, k]
        assert e.stats["delta"] == pytest.approx(delta, rel=1e-9)
        gap = abs(2 * abar(rule, n_steps) - 1) * vd**2
        assert e.stats["completeness_gap"] == pytest.approx(gap, rel=1e-7, abs=1e-10)
        close(e.map, e.attributions.sum(0))  # IG's default reduce is the signed sum


@pytest.mark.parametrize("kind", ["black", 0.3, -1, "0.25", "mean", "image", "batch"])
def test_ig_baselines(quad, x, kind):
    if kind == "image":
        kind = rand(SHAPE, seed=20)  # one (C, H, W) image for every input
    elif kind == "batch":
        kind = rand((2, *SHAPE), seed=21)  # one baseline per input
    targets = [0, 2]
    es = seethrough.explain(
        quad, x, "integrated_gradients", target=targets, baseline=kind, n_steps=3
    )
    for i, (e, xi, k) in enumerate(zip(es, x.numpy(), targets, strict=True)):
        if isinstance(kind, torch.Tensor) and kind.dim() == 4:
            b = kind[i].numpy()
        else:
            b = reference_baseline(kind, xi)
        close(e.attributions, ig_quadratic(quad, xi, b, k, 0.5))
        assert e.stats["completeness_gap"] < 1e-9 * max(1.0, abs(e.stats["delta"]))


def test_ig_black_baseline_uses_normalisation():
    """'black' is the image that is 0 before normalisation: ``-mean / std`` per channel."""
    lin = Linear(SHAPE, classes=4, seed=5).eval()
    x = rand((2, *SHAPE), seed=6)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    result = IntegratedGradients(baseline="black", n_steps=3)(
        lin, x, [2, 0], normalization=(mean, std)
    )
    black = -(np.array(mean) / np.array(std)).reshape(1, 3, 1, 1)
    A = lin.np_A()
    expected = (x.numpy() - black) * A[[2, 0]]
    close(result.extras["attributions"].numpy(), expected, rtol=1e-12)
    assert np.abs(black).min() > 1.7  # far from 0: a zero baseline would be caught


# --- integrated gradients: linear model, completeness, batching ---------------------------


RULE_STEPS = [(r, n) for r in RULES for n in (1, 2, 9) if (r, n) != ("riemann_trapezoid", 1)]


def test_trapezoid_needs_two_points():
    with pytest.raises(InvalidParameterError):
        integration_rule(1, "riemann_trapezoid")
    with pytest.raises(InvalidParameterError):
        seethrough.explain(
            Linear(SHAPE).eval(),
            rand(SHAPE, seed=1),
            "integrated_gradients",
            n_steps=1,
            integration="riemann_trapezoid",
        )


@pytest.mark.parametrize(("rule", "n_steps"), RULE_STEPS)
def test_ig_linear_model_is_exact_for_every_rule(rule, n_steps):
    lin = Linear(SHAPE, classes=4, seed=7).eval()
    x = rand((2, *SHAPE), seed=8)
    base = rand(SHAPE, seed=9)
    es = seethrough.explain(
        lin,
        x,
        "integrated_gradients",
        target=[3, 0],
        baseline=base,
        n_steps=n_steps,
        integration=rule,
    )
    A = lin.np_A()
    for e, xi, k in zip(es, x.numpy(), [3, 0], strict=True):
        close(e.attributions, (xi - base.numpy()) * A[k])
        assert e.stats["completeness_gap"] < 1e-12


@pytest.mark.parametrize(
    ("rule", "n"),
    [(r, n) for r in RULES for n in (1, 2, 3, 8, 33) if (r, n) != ("riemann_trapezoid", 1)],
)
def test_integration_rule_weights_and_nodes(rule, n):
    alphas, weights = integration_rule(n, rule)
    assert alphas.dtype == torch.float64 and weights.dtype == torch.float64
    assert alphas.shape == weights.shape == (n,)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-14)
    assert bool((weights > 0).all())
    assert float(alphas.min()) >= 0 and float(alphas.max()) <= 1
    assert float((alphas * weights).sum()) == pytest.approx(abar(rule, n), abs=1e-14)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_gauss_legendre_exact_to_degree_2n_minus_1(n):
    alphas, weights = (t.numpy() for t in integration_rule(n, "gausslegendre"))
    for p in range(2 * n):
        assert np.sum(weights * alphas**p) == pytest.approx(1 / (p + 1), rel=1e-12)
    # ... and not beyond: for t^(2n) the error is exactly (n!)^4 / ((2n + 1) ((2n)!)^2) on
    # [0, 1] (the remainder term with a constant 2n-th derivative): the test has teeth
    error = 1 / (2 * n + 1) - np.sum(weights * alphas ** (2 * n))
    expected = math.factorial(n) ** 4 / ((2 * n + 1) * math.factorial(2 * n) ** 2)
    assert error == pytest.approx(expected, rel=1e-3)


def test_trapezoid_and_middle_exact_for_degree_one_only():
    for rule in ("riemann_trapezoid", "riemann_middle"):
        alphas, weights = (t.numpy() for t in integration_rule(4, rule))
        assert np.sum(weights * alphas) == pytest.approx(0.5, abs=1e-14)
        assert abs(np.sum(weights * alphas**2) - 1 / 3) > 1e-3


def test_unknown_rule_is_rejected():
    with pytest.raises(InvalidParameterError):
        integration_rule(4, "simpson")


TANH_SHAPE = (3, 6, 6)


@pytest.fixture(scope="module")
def mlp() -> TanhMLP:
    return TanhMLP(TANH_SHAPE, classes=3, seed=0).eval()


@pytest.fixture(scope="module")
def xm() -> torch.Tensor:
    return rand((2, *TANH_SHAPE), seed=30)


def test_ig_completeness_on_nonlinear_model(mlp, xm):
    base = rand(TANH_SHAPE, seed=31) * 0.2
    targets = [0, 2]
    es = seethrough.explain(
        mlp, xm, "integrated_gradients", target=targets, baseline=base, n_steps=64
    )
    with torch.no_grad():
        yx = mlp(xm).numpy()
        yb = mlp(base[None]).numpy()[0]
    for i, (e, k) in enumerate(zip(es, targets, strict=True)):
        delta = yx[i, k] - yb[k]
        assert abs(delta) > 0.1  # a real difference to attribute
        assert e.stats["delta"] == pytest.approx(delta, rel=1e-9)
        assert abs(float(e.attributions.astype(np.float64).sum()) - delta) < 1e-4
        assert e.stats["completeness_gap"] < 1e-4
    # the model is genuinely nonlinear along the path: 2 left-Riemann steps miss by a lot
    coarse = seethrough.explain(
        mlp,
        xm,
        "integrated_gradients",
        target=targets,
        baseline=base,
        n_steps=2,
        integration="riemann_left",
    )
    assert all(e.stats["completeness_gap"] > 1e-2 for e in coarse)


@pytest.mark.parametrize("rule", RULES)
def test_ig_completeness_gap_shrinks_with_steps(mlp, xm, rule):
    base = rand(TANH_SHAPE, seed=31) * 0.2
    gaps = []
    for n in (4, 16, 64):
        e = seethrough.explain(
            mlp,
            xm[0],
            "integrated_gradients",
            target=1,
            baseline=base,
            n_steps=n,
            integration=rule,
        )
        gaps.append(e.stats["completeness_gap"])
    floor = 1e-10  # float64 rounding: Gauss-Legendre reaches it quickly on a smooth model
    assert gaps[1] < gaps[0] or gaps[0] < floor, gaps
    assert gaps[2] < gaps[1] or gaps[1] < floor, gaps
    # first-order rules gain ~4x per 4x steps, the others ~16x or more
    factor = 8.0 if rule in ("riemann_left", "riemann_right") else 50.0
    assert gaps[2] < gaps[0] / factor or gaps[2] < floor, gaps


def test_ig_batch_size_does_not_change_the_result(mlp, xm):
    base = rand(TANH_SHAPE, seed=32) * 0.2
    runs = {
        size: seethrough.explain(
            mlp,
            xm,
            "integrated_gradients",
            target=[2, 0],
            baseline=base,
            n_steps=10,
            batch_size=size,
        )
        for size in (1, 7, 0, 100)
    }
    singles = [
        seethrough.explain(mlp, xm[i], "integrated_gradients", target=k, baseline=base, n_steps=10)
        for i, k in enumerate([2, 0])
    ]
    for size, es in runs.items():
        for e, ref in zip(es, singles, strict=True):
            close(e.attributions, ref.attributions)
            assert e.stats["completeness_gap"] == pytest.approx(
                ref.stats["completeness_gap"], rel=1e-6, abs=1e-12
            ), size


def test_float32_input_is_cast_to_float64_model(quad, x):
    """The input is cast to the model's dtype: a float32 input gives the float64 gradient of
    its (float32-rounded) values."""
    x32 = x.float()
    e = seethrough.explain(quad, x32[0], "saliency", target=0)
    close(e.attributions, quad.np_grad(x32[0].double().numpy(), 0))
    assert quad.W.dtype == DT


@pytest.mark.parametrize("target", [None, [2, 0]])
@pytest.mark.parametrize("size", [3, 0])
def test_ig_ends_riding_with_the_first_batch_change_nothing(mlp, xm, monkeypatch, target, size):
    """On a GPU the path's two ends ride along with the first batch of path points (one
    forward fewer); forced on here, it must give the same attributions, targets and stats."""
    from seethrough.methods.gradient import integrated_gradients

    base = rand(TANH_SHAPE, seed=33) * 0.2
    kw = dict(target=target, baseline=base, n_steps=10, batch_size=size)
    alone = seethrough.explain(mlp, xm, "integrated_gradients", **kw)
    monkeypatch.setattr(integrated_gradients, "fold_ends", lambda x: True)
    calls = []
    real = integrated_gradients.Path.gradients_with_ends
    monkeypatch.setattr(
        integrated_gradients.Path,
        "gradients_with_ends",
        lambda self, *a: calls.append(1) or real(self, *a),
    )
    riding = seethrough.explain(mlp, xm, "integrated_gradients", **kw)
    assert calls == [1]
    for a, b in zip(riding, alone, strict=True):
        assert a.target == b.target
        close(a.attributions, b.attributions)
        for key in ("completeness_gap", "delta"):
            assert a.stats[key] == pytest.approx(b.stats[key], rel=1e-9, abs=1e-12)
        assert a.score == pytest.approx(b.score, rel=1e-12)

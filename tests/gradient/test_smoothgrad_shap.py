"""SmoothGrad and Gradient SHAP against references rebuilt in the test.

SmoothGrad: the noisy copies are rebuilt here from the documented recipe (a generator seeded
with ``seed``, ``randn((n_samples, C, H, W), float64)``, scaled per image by
``noise * (max(x) - min(x))``), and the wrapped method's answer on each copy comes from a closed
form (``Quadratic``: gradient ``W_k + 2 (V_k . x) V_k``; IG from the black = zero baseline with
Gauss-Legendre ``d * (W_k + (V_k . (x + b)) V_k)``), never from the library.

Gradient SHAP: on a linear model every gradient is ``A_k``, so with one baseline and no input
noise the attribution is exactly ``(x - b) * A_k`` whatever ``t``. With a distribution of
baselines the sum of attributions is an unbiased estimate of ``y(x) - mean_m y(b_m)``; its
standard error is computed here in closed form from the quadratic model and the test allows
5 standard errors (a deterministic seed, so no flakiness; 5 sigma so that a change of the draw
order cannot fail a correct implementation, while a bias such as a missing factor 2 or ``x + eps``
in place of ``x`` is many sigma away).

Tolerances: float64 models, float32 ``.attributions``: 1e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seethrough
from seethrough.methods.gradient import SmoothGrad

from ._models import Linear, Quadratic, SeqMLP, close, ig_quadratic, rand

SHAPE = (3, 4, 5)


@pytest.fixture(scope="module")
def quad() -> Quadratic:
    return Quadratic(SHAPE, classes=3, seed=2).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return rand((2, *SHAPE), seed=50)


def noisy_copies(x: np.ndarray, noise: float, n: int, seed: int) -> np.ndarray:
    """``(N, n, C, H, W)`` noisy inputs as SmoothGrad draws them."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn((n, *x.shape[1:]), generator=g, dtype=torch.float64).numpy()
    sigma = (x.reshape(len(x), -1).max(1) - x.reshape(len(x), -1).min(1)) * noise
    return x[:, None] + sigma[:, None, None, None, None] * eps[None]


# --- SmoothGrad -----------------------------------------------------------------------------


def smoothgrad(model, x, target, **params) -> np.ndarray:
    """SmoothGrad's ``(N, C, H, W)`` attributions through the Method call."""
    result = SmoothGrad(**params)(model, x, target)
    return result.extras["attributions"].numpy()


def test_explain_passes_the_wrapped_method(quad, x):
    e = seethrough.explain(
        quad, x[0], "smoothgrad", wrapped="integrated_gradients", noise=0.0, n_samples=2
    )
    ig = seethrough.explain(quad, x[0], "integrated_gradients")
    close(e.attributions, ig.attributions)


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "integrated_gradients"])
def test_smoothgrad_without_noise_is_the_wrapped_method(method):
    model = SeqMLP(torch.nn.ReLU(), torch.nn.ReLU()).eval()  # has ReLUs, for guided backprop
    xs = rand((2, 3, 2, 2), seed=51)
    result = SmoothGrad(wrapped=method, noise=0.0, n_samples=3)(model, xs, None)
    plain = seethrough.explain(model, xs, method)
    for i, p in enumerate(plain):
        assert result.target.classes[i] == p.target
        close(result.extras["attributions"][i].numpy(), p.attributions, rtol=1e-6)
        assert np.abs(p.attributions).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 7])
def test_smoothgrad_saliency_is_mean_over_rebuilt_noisy_inputs(quad, x, seed):
    noise, n = 0.2, 6
    targets = [2, 0]
    es = seethrough.explain(
        quad, x, "smoothgrad", target=targets, noise=noise, n_samples=n, seed=seed
    )
    copies = noisy_copies(x.numpy(), noise, n, seed)
    for e, imgs, k in zip(es, copies, targets, strict=True):
        expected = np.mean([quad.np_grad(c, k) for c in imgs], axis=0)
        close(e.attributions, expected)
        close(e.map, np.abs(expected).max(0))  # default reduce: abs_max
        # the noise matters: the clean gradient is far from the average
        clean = quad.np_grad(x.numpy()[targets.index(k)], k)
        assert np.abs(clean - expected).max() > 1e-3
    assert all(e.seed == seed for e in es)


def test_smoothgrad_explains_the_class_of_the_clean_input(quad, x):
    """With ``target=None`` every noisy copy explains the clean input's top class."""
    noise, n = 0.5, 5
    es = seethrough.explain(quad, x, "smoothgrad", noise=noise, n_samples=n, seed=3)
    top = quad.np_forward(x.numpy()).argmax(1)
    copies = noisy_copies(x.numpy(), noise, n, 3)
    for e, imgs, k in zip(es, copies, top, strict=True):
        assert e.target == k
        close(e.attributions, np.mean([quad.np_grad(c, k) for c in imgs], axis=0))


def test_smoothgrad_wraps_integrated_gradients(quad, x):
    noise, n = 0.1, 3
    targets = [1, 2]
    got = smoothgrad(
        quad, x, targets, wrapped="integrated_gradients", noise=noise, n_samples=n, seed=4
    )
    copies = noisy_copies(x.numpy(), noise, n, 4)
    for a, imgs, k in zip(got, copies, targets, strict=True):
        # the wrapped IG runs with its defaults: 'black' (0 for a plain module), Gauss-Legendre
        expected = np.mean([ig_quadratic(quad, c, np.zeros_like(c), k, 0.5) for c in imgs], axis=0)
        close(a, expected)
    # the default wrapped method (saliency) gives something else
    assert np.abs(got - smoothgrad(quad, x, targets, noise=noise, n_samples=n, seed=4)).max() > 1e-2


def test_smoothgrad_seed_and_batching(quad, x):
    kw = dict(target=[0, 1], noise=0.3, n_samples=5)
    a = seethrough.explain(quad, x, "smoothgrad", seed=11, **kw)
    b = seethrough.explain(quad, x, "smoothgrad", seed=11, **kw)
    c = seethrough.explain(quad, x, "smoothgrad", seed=12, **kw)
    d = seethrough.explain(quad, x, "smoothgrad", seed=11, batch_size=3, **kw)
    for ea, eb, ec, ed in zip(a, b, c, d, strict=True):
        np.testing.assert_array_equal(ea.attributions, eb.attributions)
        assert np.abs(ea.attributions - ec.attributions).max() > 1e-3
        close(ed.attributions, ea.attributions)


# --- Gradient SHAP --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lin() -> Linear:
    return Linear(SHAPE, classes=4, seed=8).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["number", "per_image", "image"])
def test_gradient_shap_linear_fixed_baseline_is_exact(lin, x, seed, kind):
    baseline = {
        "number": 0.25,
        "per_image": rand((2, *SHAPE), seed=60),
        "image": rand(SHAPE, seed=61),
    }[kind]
    targets = [3, 1]
    es = seethrough.explain(
        lin, x, "gradient_shap", target=targets, baseline=baseline, n_samples=7, seed=seed
    )
    A = lin.np_A()
    for i, (e, k) in enumerate(zip(es, targets, strict=True)):
        if kind == "number":
            b = np.full(SHAPE, 0.25)
        elif kind == "per_image":
            b = baseline[i].numpy()
        else:
            b = baseline.numpy()
        close(e.attributions, (x[i].numpy() - b) * A[k])
        close(e.map, ((x[i].numpy() - b) * A[k]).sum(0))  # default reduce: signed sum


def test_gradient_shap_linear_baseline_distribution_expectation(lin, x):
    """``a = (x - mean of the picked baselines) * A_k`` exactly (gradients are constant, input
    noise cannot matter); it approaches ``(x - E[b]) * A_k``. Per pixel the picked mean has
    standard error ``std_m(b) / sqrt(n)``; 5 standard errors allowed."""
    B = rand((6, *SHAPE), seed=62, lo=-2, hi=2)
    n = 3000
    es = seethrough.explain(
        lin,
        x,
        "gradient_shap",
        target=[0, 2],
        baseline=B,
        n_samples=n,
        noise=0.3,
        seed=5,
        batch_size=1000,
    )
    A, Bn = lin.np_A(), B.numpy()
    se = Bn.std(0) / np.sqrt(n)
    for e, xi, k in zip(es, x.numpy(), [0, 2], strict=True):
        expected = (xi - Bn.mean(0)) * A[k]
        err = np.abs(e.attributions - expected)
        assert (err <= 5 * se * np.abs(A[k]) + 1e-6).all()
        # the baseline distribution is really used: one baseline would be far off
        assert np.abs((xi - Bn[0]) * A[k] - expected).max() > 20 * (se * np.abs(A[k])).max()


def test_gradient_shap_rebuilt_exactly(quad, x):
    """The documented draws, in order, from one generator seeded with ``seed``: baseline picks
    ``randint(M, (n,))``, ``t = rand(n)``, input noise ``randn((n, C, H, W)) * noise``; then
    ``a = 1/n sum_i (x - b_i) * grad y(b_i + t_i (x + eps_i - b_i))`` with the closed-form
    gradient."""
    B = rand((5, *SHAPE), seed=63)
    n, noise, seed = 9, 0.2, 6
    targets = [2, 1]
    es = seethrough.explain(
        quad,
        x,
        "gradient_shap",
        target=targets,
        baseline=B,
        n_samples=n,
        noise=noise,
        seed=seed,
        batch_size=4,
    )
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(5, (n,), generator=g).numpy()
    t = torch.rand(n, generator=g, dtype=torch.float64).numpy()
    eps = torch.randn((n, *SHAPE), generator=g, dtype=torch.float64).numpy() * noise
    for e, xi, k in zip(es, x.numpy(), targets, strict=True):
        terms = []
        for j in range(n):
            b = B[pick[j]].numpy()
            point = b + t[j] * (xi + eps[j] - b)
            terms.append((xi - b) * quad.np_grad(point, k))
        close(e.attributions, np.mean(terms, axis=0))


def test_gradient_shap_completeness_in_expectation(quad, x):
    """``E_t[(x - b) . grad y(b + t (x - b))] = y(x) - y(b)`` for every baseline, so
    ``sum(a) -> y(x) - mean_m y(b_m)``. For the quadratic model one sample is
    ``s = W.d + 2 (V.b + t V.d)(V.d)`` (``d = x - b``), so its variance over
    ``m ~ U{0..M-1}, t ~ U(0, 1)`` is known exactly; 5 standard errors allowed."""
    B = rand((6, *SHAPE), seed=64)
    n = 4000
    targets = [0, 2]
    es = seethrough.explain(
        quad,
        x,
        "gradient_shap",
        target=targets,
        baseline=B,
        n_samples=n,
        seed=9,
        batch_size=2000,
    )
    W, V = quad.np_params()
    Bn = B.numpy()
    for e, xi, k in zip(es, x.numpy(), targets, strict=True):
        d = xi[None] - Bn
        a0 = (W[k] * d).sum((1, 2, 3)) + 2 * (V[k] * Bn).sum((1, 2, 3)) * (V[k] * d).sum((1, 2, 3))
        a1 = 2 * (V[k] * d).sum((1, 2, 3)) ** 2  # s = a0 + a1 t
        mean = np.mean(a0 + a1 / 2)
        second = np.mean(a0**2 + a0 * a1 + a1**2 / 3)
        se = np.sqrt((second - mean**2) / n)
        expected = quad.np_forward(xi[None])[0, k] - quad.np_forward(Bn)[:, k].mean()
        assert mean == pytest.approx(expected, rel=1e-10)  # the closed form itself
        total = float(e.attributions.astype(np.float64).sum())
        assert abs(total - expected) < 5 * se, (total, expected, se)
        assert 5 * se < 0.1 * abs(expected)  # the check is tight relative to the effect

"""Input x gradient, the deconvnet, DeepLIFT (Rescale), DeepLIFT SHAP and the noise tunnel
against their formulas, computed here by hand (numpy or plain autograd) on float64 models.

The methods are called through their classes so the float64 attributions are compared (the
public ``explain`` returns float32 arrays): tolerances are 1e-10 relative for closed forms and
1e-10 absolute for completeness, where any wrong multiplier is >= 1e-3.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.errors import InvalidParameterError
from seethrough.methods.gradient.noise_tunnel import parse_base_params

from ._models import DT, Quadratic, SmallCNN, ig_quadratic, rand

SHAPE = (3, 4, 5)


def attributions(model: nn.Module, x: torch.Tensor, method: str, target=None, **params):
    """The float64 ``(N, C, H, W)`` attributions and the result of ``method``."""
    result = seethrough.get_method(method).cls(**params)(model, x, target)
    return result.extras["attributions"], result


def assert_close(actual: torch.Tensor, expected: torch.Tensor | np.ndarray, rtol=1e-10) -> None:
    expected = torch.as_tensor(np.asarray(expected), dtype=DT)
    scale = float(expected.abs().max())
    assert scale > 1e-6
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)


def grad_times_input(model: nn.Module, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    """``x * d y_t / d x`` by plain autograd."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), x)
    return x.detach() * g


class BiasFreeReLUNet(nn.Module):
    """conv - relu - overlapping max pool - conv - relu - avg pool - linear, no biases."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.net = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            nn.Conv2d(6, 8, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 4, bias=False),
        ).to(DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Mixed(nn.Module):
    """Biases, batch norm, a residual sum, a ReLU module used twice (in place), tanh, sigmoid
    and an overlapping max pool: every kind of layer DeepLIFT's rules meet in a CNN."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.tanh = nn.Tanh()
        self.conv3 = nn.Conv2d(6, 5, 1)
        self.sig = nn.Sigmoid()
        self.fc = nn.Linear(5, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 1.5)
        self.to(DT).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu(self.bn(self.conv1(x))))
        h = self.relu(h + self.tanh(self.conv2(h)))
        h = self.sig(self.conv3(h)).mean((2, 3))
        return self.fc(h)


# --- DeepLIFT ------------------------------------------------------------------------------


def test_deeplift_equals_gradient_times_input_on_a_bias_free_relu_net_from_zero():
    model = BiasFreeReLUNet().eval()
    x = rand((2, 3, 8, 8), seed=1)
    ours, _ = attributions(model, x, "deeplift", [1, 3], baseline=0.0)
    assert_close(ours, grad_times_input(model, x, [1, 3]))
    ixg, _ = attributions(model, x, "input_x_gradient", [1, 3])
    assert_close(ixg, grad_times_input(model, x, [1, 3]))


def test_deeplift_completeness_with_every_kind_of_layer():
    model = Mixed()
    x = rand((2, 3, 8, 8), seed=2)
    base = rand((2, 3, 8, 8), seed=3, lo=-0.5, hi=0.5)
    ours, result = attributions(model, x, "deeplift", [0, 2], baseline=base)
    with torch.no_grad():
        delta = model(x)[[0, 1], [0, 2]] - model(base)[[0, 1], [0, 2]]
    assert delta.abs().min() > 1e-3
    torch.testing.assert_close(ours.flatten(1).sum(1), delta, rtol=0, atol=1e-10)
    for stats, d in zip(result.stats, delta.tolist(), strict=True):
        assert stats["completeness_gap"] < 1e-10 and stats["delta"] == pytest.approx(d, abs=1e-12)
    # the check can fail: the gradient at x times the difference does not sum to delta
    plain = grad_times_input(model, x, [0, 2]) / x * (x - base)
    assert (plain.flatten(1).sum(1) - delta).abs().max() > 1e-3
    assert isinstance(model.relu, nn.ReLU) and isinstance(model.pool, nn.MaxPool2d)


def test_rescale_multiplier_by_hand():
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)
    ).to(DT)
    x, x0 = rand((1, 3, 2, 2), seed=4, lo=-2, hi=2), rand((1, 3, 2, 2), seed=5, lo=-2, hi=2)
    W1, b1 = (t.detach().numpy() for t in (model[1].weight, model[1].bias))
    W2, b2 = (t.detach().numpy() for t in (model[3].weight, model[3].bias))
    W3 = model[5].weight.detach().numpy()
    v, v0 = x.numpy().ravel(), x0.numpy().ravel()
    z, z0 = W1 @ v + b1, W1 @ v0 + b1
    m1 = (np.tanh(z) - np.tanh(z0)) / (z - z0)
    u, u0 = W2 @ np.tanh(z) + b2, W2 @ np.tanh(z0) + b2
    m2 = (np.maximum(u, 0) - np.maximum(u0, 0)) / (u - u0)
    expected = (v - v0) * (W1.T @ (m1 * (W2.T @ (m2 * W3[1]))))
    ours, _ = attributions(model, x, "deeplift", [1], baseline=x0)
    assert_close(ours, expected.reshape(1, 3, 2, 2))


def test_deeplift_swaps_back_its_modules_after_an_error():
    model = Mixed()
    before = dict(model.named_modules())

    def failing(output: torch.Tensor) -> torch.Tensor:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        attributions(model, rand((1, 3, 8, 8), seed=1), "deeplift", failing)
    assert dict(model.named_modules()) == before


def test_deeplift_shap_is_the_mean_of_deeplift_over_the_baselines():
    model = Mixed()
    x = rand((2, 3, 8, 8), seed=2)
    bases = rand((3, 3, 8, 8), seed=8)
    each = [
        attributions(model, x, "deeplift", [0, 2], baseline=b.expand(2, -1, -1, -1))[0]
        for b in bases
    ]
    ours, result = attributions(model, x, "deeplift_shap", [0, 2], baseline=bases, n_samples=3)
    assert_close(ours, sum(each) / 3)
    with torch.no_grad():
        delta = model(x)[[0, 1], [0, 2]] - model(bases)[:, [0, 2]].mean(0)
    torch.testing.assert_close(ours.flatten(1).sum(1), delta, rtol=0, atol=1e-10)
    assert [s["completeness_gap"] < 1e-10 for s in result.stats] == [True, True]


def test_deeplift_shap_draws_a_seeded_subset_of_a_larger_set():
    model = Mixed()
    x = rand((1, 3, 8, 8), seed=2)
    bases = rand((5, 3, 8, 8), seed=9)
    each = [attributions(model, x, "deeplift", [1], baseline=b[None])[0] for b in bases]
    ours, _ = attributions(model, x, "deeplift_shap", [1], baseline=bases, n_samples=2, seed=4)
    again, _ = attributions(model, x, "deeplift_shap", [1], baseline=bases, n_samples=2, seed=4)
    assert torch.equal(ours, again)
    errors = [
        float((ours - (each[i] + each[j]) / 2).abs().max())
        for i, j in itertools.combinations(range(5), 2)
    ]
    assert min(errors) < 1e-12 * float(ours.abs().max()) + 1e-15
    assert sorted(errors)[1] > 1e-6  # exactly one pair fits


def test_deeplift_shap_with_one_baseline_is_deeplift_and_noise_keeps_completeness():
    model = Mixed()
    x = rand((2, 3, 8, 8), seed=2)
    one, _ = attributions(model, x, "deeplift_shap", [0, 2], baseline=0.0)
    assert torch.equal(one, attributions(model, x, "deeplift", [0, 2], baseline=0.0)[0])
    _, result = attributions(model, x, "deeplift_shap", [0, 2], n_samples=4)
    assert all(s["completeness_gap"] < 1e-10 and abs(s["delta"]) > 1e-4 for s in result.stats)


# --- input x gradient, deconvnet -------------------------------------------------------------


def test_input_x_gradient_is_input_times_saliency():
    model = SmallCNN(dtype=DT)
    x = rand((2, 3, 6, 6), seed=3)
    sal, _ = attributions(model, x, "saliency", [0, 2])
    ixg, _ = attributions(model, x, "input_x_gradient", [0, 2])
    assert torch.equal(ixg, sal * x)


def test_deconvnet_by_hand_on_a_two_layer_relu_net():
    torch.manual_seed(8)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)
    ).to(DT)
    W1, W2, W3 = (model[i].weight.detach().numpy() for i in (1, 3, 5))
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    expected = W1.T @ relu(W2.T @ relu(W3[2]))  # no forward mask: the same for every input
    for seed in (1, 2):
        x = rand((1, 3, 2, 2), seed=seed, lo=-3, hi=3)
        ours, _ = attributions(model, x, "deconvnet", [2])
        assert_close(ours, expected.reshape(1, 3, 2, 2))
        guided, _ = attributions(model, x, "guided_backprop", [2])
        assert (guided - ours).abs().max() > 1e-3 * ours.abs().max()
    assert [type(m) for m in model] == [
        nn.Flatten,
        nn.Linear,
        nn.ReLU,
        nn.Linear,
        nn.ReLU,
        nn.Linear,
    ]


# --- noise tunnel ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quad() -> Quadratic:
    return Quadratic(SHAPE, classes=3, seed=0).eval()


def noise(n: int, seed: int) -> np.ndarray:
    """The standard normal draws of the noise tunnel (torch's float64 draw, as documented)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *SHAPE), generator=g, dtype=DT).numpy()


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_kinds_by_hand(quad, kind):
    x = rand((1, *SHAPE), seed=10)
    n, stdev = 6, 0.3
    samples = np.stack([quad.np_grad(x[0].numpy() + stdev * z, 1) for z in noise(n, seed=3)])
    expected = {
        "smoothgrad": samples.mean(0),
        "smoothgrad_sq": (samples**2).mean(0),
        "vargrad": (samples**2).mean(0) - samples.mean(0) ** 2,
    }[kind]
    ours, _ = attributions(
        quad, x, "noise_tunnel", [1], kind=kind, n_samples=n, stdev=stdev, seed=3, batch_size=4
    )
    assert_close(ours[0], expected, rtol=1e-9)


def test_noise_tunnel_passes_base_params_through(quad):
    x = rand((1, *SHAPE), seed=11)
    n, stdev = 5, 0.2
    expected = np.mean(
        [
            ig_quadratic(quad, x[0].numpy() + stdev * z, np.zeros(SHAPE), 2, ab=1 / 3)
            for z in noise(n, seed=0)
        ],
        axis=0,
    )
    ours, _ = attributions(
        quad,
        x,
        "noise_tunnel",
        [2],
        base="integrated_gradients",
        base_params="n_steps=3, integration=riemann_left",
        n_samples=n,
        stdev=stdev,
    )
    assert_close(ours[0], expected, rtol=1e-9)


def test_noise_tunnel_smoothgrad_is_smoothgrad(quad):
    x = rand((1, *SHAPE), seed=12)
    span = float(x.max() - x.min())
    smooth, _ = attributions(quad, x, "smoothgrad", [0], noise=0.1, n_samples=7, seed=2)
    tunnel, _ = attributions(quad, x, "noise_tunnel", [0], stdev=0.1 * span, n_samples=7, seed=2)
    assert_close(tunnel, smooth, rtol=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n_steps", "name=value"),
        ("=3", "name=value"),
        ("steps=3", "n_steps"),
        ("n_steps=0", "n_steps"),
        ("integration=simpson", "integration"),
    ],
)
def test_noise_tunnel_rejects_bad_base_params(text, message):
    with pytest.raises(InvalidParameterError, match=message) as info:
        parse_base_params("integrated_gradients", text)
    assert "base_params" in str(info.value)


def test_noise_tunnel_rejects_an_unknown_base(quad):
    with pytest.raises(InvalidParameterError, match="base"):
        seethrough.explain(quad, rand((1, *SHAPE), seed=1), "noise_tunnel", base="gradcam")


# --- sanity: cascading randomization ---------------------------------------------------------


@pytest.mark.slow
def test_cascading_randomization_deconvnet_survives_where_the_others_decorrelate():
    """Adebayo et al. 2018 on a 5-conv ReLU CNN (random weights, 32x32 input): re-initialise
    the classifier, then the last convolution, and rank-correlate |map| with the original.

    Measured on two such networks and two images each: guided backprop 0.54-0.82, the
    deconvnet 0.49-0.72; saliency, input x gradient, DeepLIFT, DeepLIFT SHAP and the noise
    tunnel over saliency 0.07-0.30 (they decorrelate). The deconvnet's map, without the
    forward ReLU masks, depends little on the upper weights.
    """
    from seethrough.metrics import cascading_randomization

    torch.manual_seed(0)
    layers = []
    for c_in, c_out, pool in ((3, 8, False), (8, 8, True), (8, 16, False), (16, 16, True)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        layers += [nn.MaxPool2d(2)] if pool else []
    net = nn.Sequential(
        *layers,
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    few = {"n_samples": 4}
    kept = {}
    for method, params in [
        ("deconvnet", {}),
        ("guided_backprop", {}),
        ("saliency", {}),
        ("input_x_gradient", {}),
        ("deeplift", {}),
        ("deeplift_shap", few),
        ("noise_tunnel", few),
    ]:
        kept[method] = cascading_randomization(net, image, method, layers=2, **params).spearman_abs
    for method in ("deconvnet", "guided_backprop"):
        assert kept[method].min() > 0.45, (method, kept[method])
    for method in ("saliency", "input_x_gradient", "deeplift", "deeplift_shap", "noise_tunnel"):
        assert kept[method].max() < 0.35, (method, kept[method])

"""Captum (test-only oracle) for input x gradient, the deconvnet, DeepLIFT, DeepLIFT SHAP and
the noise tunnel: same model, input, targets (a batch of 2 with different classes) and noise.

Tolerance: 1e-5 of the largest attribution (absolute). Both sides run the same network; they
differ in summation order only (float32: ~1e-7 relative), while a wrong multiplier, rule or
combination of samples is off by >= 1e-2.

DeepLIFT: Captum forms each activation's multiplier from the module's input and output, which
is exact only when every nonlinear module follows a linear layer: where two nonlinear modules
follow each other (a ReLU then a max pool, a ReLU then tanh) or max-pool windows overlap (its
unpooling overwrites instead of summing), Captum's attributions no longer sum to the output
difference. The comparison therefore uses a network whose nonlinear modules each follow a
convolution, with a non-overlapping max pool; the last test shows the difference where they
do not (ours keeps summation to delta, Captum's does not).

Noise tunnel: Captum draws its noise with ``torch.normal(0, std)`` on the global generator.
Here that call is replaced, for Captum's call only, by one returning ``std`` times the standard
normal noise ours draws from its seed (the same noise for every image of the batch, as ours
uses it), so both average the same noisy copies.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough

from ._models import SmallCNN
from .test_captum_oracle import TARGETS, agree, ours

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings(
    "ignore:Input Tensor 0 did not already require gradients:UserWarning",
    "ignore:Setting backward hooks on ReLU:UserWarning",
    "ignore:Setting forward, backward hooks:UserWarning",
)


class PoolNet(nn.Module):
    """conv - max pool (2, non-overlapping) - conv - relu - conv - tanh - avg pool - linear."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 6, 1)
        self.relu = nn.ReLU()
        self.conv3 = nn.Conv2d(6, 8, 3, padding=1)
        self.tanh = nn.Tanh()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.to(dtype).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv2(self.pool(self.conv1(x))))
        return self.fc(self.gap(self.tanh(self.conv3(h))).flatten(1))


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(70)
    return torch.rand(2, 3, 8, 8, generator=g) * 2 - 1


def test_input_x_gradient_matches_captum(x):
    model = SmallCNN(classes=4, seed=3)
    theirs = captum_attr.InputXGradient(model).attribute(x.clone(), target=TARGETS)
    agree(ours(model, x, "input_x_gradient"), theirs)


def test_deconvnet_matches_captum(x):
    model = SmallCNN(classes=4, seed=3)
    theirs = captum_attr.Deconvolution(model).attribute(x.clone(), target=TARGETS)
    mine = ours(model, x, "deconvnet")
    agree(mine, theirs)
    guided = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=TARGETS)
    assert np.abs(mine - guided.detach().numpy()).max() > 1e-2 * np.abs(mine).max()


def test_deeplift_matches_captum(x):
    model = PoolNet()
    base = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(71)) * 0.5
    theirs = captum_attr.DeepLift(model).attribute(x.clone(), baselines=base, target=TARGETS)
    mine = ours(model, x, "deeplift", baseline=base)
    agree(mine, theirs)
    plain = captum_attr.InputXGradient(model).attribute(x - base, target=TARGETS)
    assert np.abs(mine - plain.detach().numpy()).max() > 1e-2 * np.abs(mine).max()


def test_deeplift_shap_matches_captum(x):
    model = PoolNet()
    bases = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(72)) - 0.5
    theirs = captum_attr.DeepLiftShap(model).attribute(x.clone(), baselines=bases, target=TARGETS)
    agree(ours(model, x, "deeplift_shap", baseline=bases, n_samples=4), theirs)


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("base", ["saliency", "integrated_gradients"])
def test_noise_tunnel_matches_captum_with_the_same_noise(x, monkeypatch, kind, base):
    model = SmallCNN(classes=4, seed=3)
    n, stdev, seed = 6, 0.4, 5
    z = torch.randn(
        (n, *x.shape[1:]), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    calls = []

    def same_noise(mean, std):  # noqa: ANN001, ANN202
        calls.append(std.shape)
        return std * z.to(std.dtype).repeat(std.shape[0] // n, 1, 1, 1)

    inner = {
        "saliency": (captum_attr.Saliency(model), {"abs": False}),
        "integrated_gradients": (
            captum_attr.IntegratedGradients(model),
            {"n_steps": 4, "method": "riemann_middle", "baselines": 0.0},
        ),
    }[base]
    tunnel = captum_attr.NoiseTunnel(inner[0])
    with monkeypatch.context() as patch:
        patch.setattr(torch, "normal", same_noise)
        theirs = tunnel.attribute(
            x.clone(), nt_type=kind, nt_samples=n, stdevs=stdev, target=TARGETS, **inner[1]
        )
    assert calls == [(2 * n, *x.shape[1:])]  # one draw, for both images: the patch was used
    mine = ours(
        model,
        x,
        "noise_tunnel",
        base=base,
        kind=kind,
        n_samples=n,
        stdev=stdev,
        seed=seed,
        base_params="n_steps=4,integration=riemann_middle,baseline=0" if base != "saliency" else "",
    )
    scale = float(theirs.abs().max())  # squares of small gradients: compared relative
    agree(mine / scale, theirs / scale)


def test_where_captum_deeplift_loses_completeness_ours_keeps_it(x):
    model = PoolNet(torch.float64)
    model.pool = nn.MaxPool2d(3, 2, padding=1)  # overlapping windows
    model.conv2 = nn.Identity()  # the ReLU now follows the max pool directly
    x64, base = x.double(), torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    _, gap = captum_attr.DeepLift(model).attribute(
        x64.clone(), baselines=base, target=TARGETS, return_convergence_delta=True
    )
    assert gap.abs().max() > 1e-4
    result = seethrough.get_method("deeplift").cls(baseline=base)(model, x64, TARGETS)
    assert max(s["completeness_gap"] for s in result.stats) < 1e-10

"""LRP: each rule against its formula computed by hand, the known identity with gradient x
input, conservation layer by layer, Zennit as an independent oracle, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import seethrough
from seethrough.core.hooks import count_hooks
from seethrough.errors import InvalidParameterError, MethodNotApplicableError
from seethrough.methods.gradient import _lrp_rules as lrp_rules
from seethrough.methods.gradient.lrp import COMPOSITES, LRP

from ._models import DT, rand

EPS = 1e-6  # the stabiliser of every rule


def relevance(model: nn.Module, x: torch.Tensor, target: int, **kw) -> torch.Tensor:
    """The input relevance ``(N, C, H, W)`` of ``lrp`` with parameters ``kw``."""
    normalization = kw.pop("normalization", None)
    result = LRP(**kw)(model, x, target, normalization=normalization)
    return result.extras["attributions"]


# ---------------------------------------------------------------------------------------------
# every rule against its formula, written out by hand on two 1x1 convolutions


def stab(z: np.ndarray) -> np.ndarray:
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def shares(c: np.ndarray, bias: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``R_j = sum_k c_kj R_k / (sum_j' c_kj' + bias_k)`` for contributions ``c`` (K, J)."""
    return (c * (r / stab(c.sum(1) + bias))[:, None]).sum(0)


def pos(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


def neg(a: np.ndarray) -> np.ndarray:
    return np.minimum(a, 0)


def rule_epsilon(x, w, b, r, eps):
    z = w @ x + b
    return x * (w.T @ (r / (z + eps * np.where(z >= 0, 1.0, -1.0))))


def rule_zplus(x, w, b, r):
    c = pos(x)[None] * pos(w) + neg(x)[None] * neg(w)
    return shares(c, pos(b), r)


def rule_alpha_beta(x, w, b, r, alpha=2.0, beta=1.0):
    p = pos(x)[None] * pos(w) + neg(x)[None] * neg(w)
    n = pos(x)[None] * neg(w) + neg(x)[None] * pos(w)
    return alpha * shares(p, pos(b), r) - beta * shares(n, neg(b), r)


def rule_gamma(x, w, b, r, gamma=0.25):
    z = w @ x + b
    up, down = w + gamma * pos(w), w + gamma * neg(w)
    ca = pos(x)[None] * up + neg(x)[None] * down
    cb = pos(x)[None] * down + neg(x)[None] * up
    return shares(ca, b + gamma * pos(b), r * (z > 0)) + shares(cb, b + gamma * neg(b), r * (z < 0))


def rule_box(x, w, b, r, low, high):
    c = x[None] * w - low[None] * pos(w) - high[None] * neg(w)
    return shares(c, np.zeros(len(w)), r)


def rule_flat(x, w, b, r):
    return shares(np.ones_like(w), np.zeros(len(w)), r)


class TwoConvs(nn.Module):
    """``conv 1x1 (4 -> 5) - activation - conv 1x1 (5 -> 3) - flatten`` on a 1x1 image: a
    dense network whose rules can be written with matrices."""

    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 5, 1)
        self.act = activation
        self.conv2 = nn.Conv2d(5, 3, 1)
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(rand(p.shape, 10 + i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x))).flatten(1)


MEAN, STD = (0.5, 0.4, 0.3, 0.2), (0.2, 0.3, 0.25, 0.5)
LOW = (0 - np.array(MEAN)) / np.array(STD)
HIGH = (1 - np.array(MEAN)) / np.array(STD)

# composite -> (rule of the first convolution, rule of the second)
BY_HAND = {
    "epsilon": (lambda *a: rule_epsilon(*a, 0.1), lambda *a: rule_epsilon(*a, 0.1)),
    "z_plus": (rule_zplus, rule_zplus),
    "epsilon_plus": (rule_zplus, rule_zplus),
    "epsilon_plus_flat": (rule_flat, rule_zplus),
    "epsilon_plus_box": (lambda *a: rule_box(*a, LOW, HIGH), rule_zplus),
    "epsilon_alpha2_beta1": (rule_alpha_beta, rule_alpha_beta),
    "epsilon_alpha2_beta1_flat": (rule_flat, rule_alpha_beta),
    "epsilon_gamma_box": (lambda *a: rule_box(*a, LOW, HIGH), rule_gamma),
}


def test_every_composite_is_checked_by_hand():
    assert set(BY_HAND) == set(COMPOSITES)


ACTIVATIONS = {
    "relu": (nn.ReLU, pos),
    "identity": (nn.Identity, lambda z: z),
    "hardtanh": (nn.Hardtanh, lambda z: np.clip(z, -1.0, 1.0)),  # both signs: no short path
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("composite", COMPOSITES)
def test_rules_equal_their_formula(composite, activation):
    """Inputs of both signs reach the first layer; the second sees ReLU outputs (x >= 0, the
    short path of each rule, known from the ReLU) or, without the ReLU or after a hardtanh
    from -1 to 1, inputs of both signs again."""
    module, function = ACTIVATIONS[activation]
    model = TwoConvs(module()).to(DT).eval()
    x = rand((3, 4, 1, 1), 3, -1.5, 2.5)
    got = relevance(model, x, 1, composite=composite, epsilon=0.1, normalization=(MEAN, STD))
    (w1, b1), (w2, b2) = (
        (c.weight.detach().numpy()[:, :, 0, 0], c.bias.detach().numpy())
        for c in (model.conv1, model.conv2)
    )
    first, second = BY_HAND[composite]
    for i in range(len(x)):
        xi = x[i, :, 0, 0].numpy()
        z1 = w1 @ xi + b1
        a1 = function(z1)
        z2 = w2 @ a1 + b2
        r2 = np.eye(3)[1] * z2[1]  # the relevance of the output: the target's logit
        r1 = second(a1, w2, b2, r2)  # ReLU passes relevance unchanged
        r0 = first(xi, w1, b1, r1)
        np.testing.assert_allclose(got[i, :, 0, 0].numpy(), r0, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# identities and conservation on a small residual CNN with batch norm


class ResidualNet(nn.Module):
    """conv-BN-ReLU, a residual block (conv-BN-ReLU-conv-BN + identity, ReLU), max pooling, a
    strided conv, average pooling and a linear head: every canonization LRP needs."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(6)
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1, bias=bias)
        self.bn3 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv4 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=bias)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4, bias=bias)
        with torch.no_grad():
            for i, bn in enumerate((self.bn1, self.bn2, self.bn3)):
                bn.weight.copy_(rand((6,), 20 + i, 0.5, 1.5))
                bn.running_var.copy_(rand((6,), 30 + i, 0.5, 1.5))
                if bias:  # batch norm shifts are biases too
                    bn.bias.copy_(rand((6,), 40 + i, -0.2, 0.2))
                    bn.running_mean.copy_(rand((6,), 50 + i, -0.2, 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(x)))
        out = self.bn3(self.conv3(out))
        out += x
        x = self.pool(self.relu(out))
        x = self.relu(self.conv4(x))
        return self.fc(self.gap(x).flatten(1))


def residual_net(bias: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ResidualNet(bias).to(DT).eval()


@pytest.mark.parametrize("bias", [False, True])
def test_epsilon_to_zero_is_gradient_x_input(bias, monkeypatch):
    """LRP-0 with the logit as the output's relevance is exactly ``x * d logit / dx`` on a ReLU
    network (Ancona et al. 2018: at each unit ``R = z * d logit / dz``), here through batch
    norm, a residual sum, max and average pooling; with biases too, which then keep a share of
    the logit: only without them do the relevances sum to it. Epsilon and the stabiliser of the
    sums and pools (1e-6, as Zennit's) both go to 0."""
    monkeypatch.setattr(lrp_rules, "STABILIZER", 1e-15)
    model = residual_net(bias=bias)
    x = rand((2, 3, 12, 12), 5)
    got = relevance(model, x, 2, composite="epsilon", epsilon=1e-12)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg)[:, 2].sum(), xg)
    np.testing.assert_allclose(got.numpy(), (x * grad).numpy(), rtol=1e-7, atol=1e-12)
    logit = model(x)[:, 2].detach().numpy()
    totals = got.sum((1, 2, 3)).numpy()
    if bias:
        assert np.abs(totals - logit).min() > 1e-3 * np.abs(logit).max()
    else:
        np.testing.assert_allclose(totals, logit, rtol=1e-9)


def test_string_padding_and_functional_relu_follow_the_identity(monkeypatch):
    """``padding="same"`` (transposed through autograd) and ``F.relu`` / ``x.mean`` called in
    ``forward`` (no module to hook: the operations are seen all the same)."""
    monkeypatch.setattr(lrp_rules, "STABILIZER", 1e-15)

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding="same")
            self.conv2 = nn.Conv2d(4, 4, 3, padding="valid")
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = nn.functional.relu(self.conv2(nn.functional.relu(self.conv1(x))))
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(0)
    model = Functional().to(DT).eval()
    x = rand((2, 3, 9, 9), 4)
    got = relevance(model, x, 1, composite="epsilon", epsilon=1e-12)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg)[:, 1].sum(), xg)
    np.testing.assert_allclose(got.numpy(), (x * grad).numpy(), rtol=1e-7, atol=1e-13)


def test_relevance_sum_is_reported():
    model = residual_net(bias=True)
    x = rand((2, 3, 12, 12), 5)
    result = LRP(composite="epsilon_plus")(model, x, 1)
    sums = [s["relevance_sum"] for s in result.stats]
    np.testing.assert_allclose(sums, result.extras["attributions"].sum((1, 2, 3)), rtol=1e-12)


class LayerSums:
    """The total relevance reaching the input of each convolution and linear layer (tensor
    hooks on the backward, registered by forward pre-hooks; all removed on exit). A tensor's
    hook sees the relevance of all its uses: at a block's input, branch and skip together."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.sums, self.handles = model, {}, []

    def __enter__(self) -> LayerSums:
        for name, m in self.model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                self.handles.append(m.register_forward_pre_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def pre(module, args):
            args[0].register_hook(
                lambda g: self.sums.__setitem__(name, g.sum((1, 2, 3)[: g.dim() - 1]))
            )

        return pre

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize(
    "composite",
    ["epsilon", "z_plus", "epsilon_plus_flat", "epsilon_plus_box"],
)
def test_conservation_layer_by_layer(composite, monkeypatch):
    """With zero biases the relevance reaching each layer sums to the logit (1e-5), for the
    conservative rules: epsilon -> 0, z+, alpha-beta, flat and the box; residual sums and
    average pooling split it without loss. The stabilisers (1e-6, an epsilon of their own)
    go to 0 as well."""
    monkeypatch.setattr(lrp_rules, "STABILIZER", 1e-15)
    model = residual_net(bias=False)
    x = rand((2, 3, 12, 12), 6, 0.0, 1.0)  # a dense positive input: every unit has support
    with LayerSums(model) as layers:
        got = relevance(model, x, 1, composite=composite, epsilon=1e-12)
    logit = model(x)[:, 1].detach()
    assert set(layers.sums) == {"conv1", "conv2", "conv3", "conv4", "fc"}
    for name in ("conv1", "conv2", "conv4", "fc"):  # cuts (conv3 sees only the block's branch)
        total = layers.sums[name]
        np.testing.assert_allclose(total.numpy(), logit.numpy(), rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(got.sum((1, 2, 3)).numpy(), logit.numpy(), rtol=1e-5)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("composite", ["epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_alpha_beta_and_gamma_conserve_where_every_unit_has_both_signs(composite, monkeypatch):
    """Alpha-beta conserves relevance where every unit has positive and negative
    contributions (a unit without negative ones passes alpha = 2 times its relevance: after a
    sparse ReLU this happens, as in Zennit); gamma wherever no bias is set. Checked at the
    input of each layer of the dense two-layer network without bias, inputs of both signs."""
    monkeypatch.setattr(lrp_rules, "STABILIZER", 1e-15)
    model = TwoConvs(nn.Identity()).to(DT).eval()
    with torch.no_grad():
        model.conv1.bias.zero_()
        model.conv2.bias.zero_()
    x = rand((4, 4, 1, 1), 8, -1.0, 1.0)
    with LayerSums(model) as layers:
        got = relevance(model, x, 0, composite=composite, normalization=(MEAN, STD))
    logit = model(x)[:, 0].detach().numpy()
    np.testing.assert_allclose(layers.sums["conv2"].numpy(), logit, rtol=1e-9)
    np.testing.assert_allclose(got.sum((1, 2, 3)).numpy(), logit, rtol=1e-9)


def test_alpha_beta_is_not_z_plus_and_epsilon_absorbs():
    """The composites differ where they should: a large epsilon absorbs relevance (the total
    shrinks), alpha-beta differs from z+."""
    model = residual_net(bias=False)
    x = rand((1, 3, 12, 12), 6, 0.0, 1.0)
    small = relevance(model, x, 1, composite="epsilon", epsilon=1e-9).sum()
    large = relevance(model, x, 1, composite="epsilon", epsilon=10.0).sum()
    assert abs(float(large)) < 0.5 * abs(float(small))
    zp = relevance(model, x, 1, composite="z_plus")
    ab = relevance(model, x, 1, composite="epsilon_alpha2_beta1")
    assert not torch.allclose(zp, ab)


def test_the_model_is_not_changed_and_batch_norm_is_merged_for_the_call_only():
    model = residual_net(bias=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = rand((2, 3, 12, 12), 7)
    relevance(model, x, 0, composite="epsilon_plus")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert count_hooks(model) == 0
    assert torch._C._len_torch_function_stack() == 0


def test_the_rules_division_equals_the_stabilised_one_to_the_bit():
    """The rules divide by ``z + eps sign(z)`` (``sign(0) = +1``, for -0.0 as well) through a
    cheaper sequence of operations; the result is the same to the bit."""
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=dtype)
        z[:8], z[8:16] = 0.0, -0.0
        r = torch.randn(4096, generator=torch.Generator().manual_seed(1), dtype=dtype)
        expected = r / lrp_rules.stabilize(z, 1e-6) * 2.0
        assert torch.equal(lrp_rules._ratio(r, z, 1e-6, 2.0), expected)
        assert torch.equal(lrp_rules.stabilize(z[8:16], 0.5), torch.full((8,), 0.5, dtype=dtype))


class ThreeBatchNorms(nn.Module):
    """conv-BN-ReLU three times, GAP and a linear head; ``folded=True``: the same network with
    each batch norm folded into its convolution by hand (no batch norm left)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 8, 3, padding=1),  # weight 216 <= output: the weight is merged
                nn.Conv2d(8, 16, 3, stride=2),  # weight 1152 > twice 2x16x3x3: outputs scaled
                nn.Conv2d(16, 16, 3, stride=2, padding=1),  # as big, but a negative scale
            ]
        )
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for c in (8, 16, 16)])
        self.fc = nn.Linear(16, 4)
        self.folded = False
        with torch.no_grad():
            for i, bn in enumerate(self.bns):
                bn.weight.copy_(rand(bn.weight.shape, 60 + i, 0.5, 1.5))
                bn.bias.copy_(rand(bn.bias.shape, 70 + i, -0.3, 0.3))
                bn.running_mean.copy_(rand(bn.bias.shape, 80 + i, -0.3, 0.3))
                bn.running_var.copy_(rand(bn.bias.shape, 90 + i, 0.5, 1.5))
            self.bns[2].weight[::3] *= -1

    def fold(self) -> ThreeBatchNorms:
        with torch.no_grad():
            for conv, bn in zip(self.convs, self.bns, strict=True):
                scale = bn.weight / (bn.running_var + bn.eps).sqrt()
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
        self.folded = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in zip(self.convs, self.bns, strict=True):
            x = conv(x)
            x = (x if self.folded else bn(x)).relu()
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("composite", COMPOSITES)
def test_a_merged_batch_norm_equals_folding_it_by_hand(composite, monkeypatch):
    """A batch norm is merged for the call, into the weight where that is cheap, else as a
    scale of the convolution's outputs (the weight never copied), and into the weight again
    where a scale is negative: every way gives the relevance of the network folded by hand."""
    settled = []
    settle = lrp_rules.Layer.settle

    def spy(layer):
        had = layer.scale is not None and not layer._settled
        settle(layer)
        if had:
            settled.append(layer.scale is not None)

    monkeypatch.setattr(lrp_rules.Layer, "settle", spy)
    torch.manual_seed(0)
    model = ThreeBatchNorms().to(DT).eval()
    x = rand((2, 3, 8, 8), 11, -1.0, 1.0)
    got = relevance(model, x, 1, composite=composite, normalization=(MEAN[:3], STD[:3]))
    assert sorted(settled) == [False, False, True]  # merged, merged (negative), scaled
    folded = relevance(model.fold(), x, 1, composite=composite, normalization=(MEAN[:3], STD[:3]))
    np.testing.assert_allclose(got.numpy(), folded.numpy(), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# refusals


class Gelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(nn.functional.gelu(self.conv(x)).mean((2, 3)))


class Gate(Gelu):
    def forward(self, x):
        h = self.conv(x)
        return self.fc((h * torch.sigmoid(h)).mean((2, 3)))


class NormFirst(Gelu):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.fc(self.conv(self.bn(x)).relu().mean((2, 3)))


@pytest.mark.parametrize(
    ("model", "match"),
    [(Gelu, "'gelu'"), (Gate, "'sigmoid'"), (NormFirst, "batch norm after another operation")],
)
def test_unsupported_operations_are_refused_and_nothing_is_left_behind(model, match):
    net = model().eval()
    with pytest.raises(MethodNotApplicableError, match=match):
        seethrough.explain(net, torch.rand(1, 3, 8, 8), "lrp")
    assert count_hooks(net) == 0
    assert torch._C._len_torch_function_stack() == 0
    assert all(p.requires_grad for p in net.parameters())


def test_torchscript_and_bad_parameters_are_refused():
    net = torch.jit.script(Gelu().eval())
    with pytest.raises(MethodNotApplicableError, match="TorchScript"):
        seethrough.explain(net, torch.rand(1, 3, 8, 8), "lrp")
    with pytest.raises(InvalidParameterError, match="composite"):
        seethrough.explain(Gelu().eval(), torch.rand(1, 3, 8, 8), "lrp", composite="nope")
    with pytest.raises(InvalidParameterError, match="epsilon"):
        seethrough.explain(Gelu().eval(), torch.rand(1, 3, 8, 8), "lrp", epsilon=-1.0)


# ---------------------------------------------------------------------------------------------
# Zennit, an independent implementation, on VGG16 and ResNet18 with random weights


def zennit_composite(name: str, canonizer, low: torch.Tensor, high: torch.Tensor):
    from zennit import composites as zc
    from zennit import rules
    from zennit.types import Convolution

    can = [canonizer()]
    eps_map = [(Convolution, rules.Epsilon(1e-6)), (nn.Linear, rules.Epsilon(1e-6))]
    plus_map = [(Convolution, rules.ZPlus()), (nn.Linear, rules.Epsilon(1e-6))]
    table = {
        "epsilon": lambda: zc.LayerMapComposite(zc.layer_map_base() + eps_map, canonizers=can),
        "z_plus": lambda: zc.ExcitationBackprop(canonizers=can),
        "epsilon_plus": lambda: zc.EpsilonPlus(canonizers=can),
        "epsilon_plus_flat": lambda: zc.EpsilonPlusFlat(canonizers=can),
        "epsilon_plus_box": lambda: zc.SpecialFirstLayerMapComposite(
            zc.layer_map_base() + plus_map,
            [(Convolution, rules.ZBox(low, high))],
            canonizers=can,
        ),
        "epsilon_alpha2_beta1": lambda: zc.EpsilonAlpha2Beta1(canonizers=can),
        "epsilon_alpha2_beta1_flat": lambda: zc.EpsilonAlpha2Beta1Flat(canonizers=can),
        "epsilon_gamma_box": lambda: zc.EpsilonGammaBox(low=low, high=high, canonizers=can),
    }
    return table[name]()


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module", params=["resnet18", "vgg16"])
def torchvision_net(request):
    torchvision = pytest.importorskip("torchvision")
    zennit_tv = pytest.importorskip("zennit.torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)(weights=None).eval()
    with torch.no_grad():  # batch norms that do something, so merging them matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    canonizer = zennit_tv.ResNetCanonizer if request.param == "resnet18" else zennit_tv.VGGCanonizer
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    return model, canonizer, x


@pytest.mark.slow
@pytest.mark.parametrize("composite", COMPOSITES)
def test_agrees_with_zennit(torchvision_net, composite):
    from zennit.attribution import Gradient

    model, canonizer, x = torchvision_net
    with torch.no_grad():
        logits = model(x)
    cls = int(logits.argmax())
    ours = relevance(model, x, cls, composite=composite, normalization=IMAGENET)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    low, high = (0 - mean) / std, (1 - mean) / std
    with Gradient(model, zennit_composite(composite, canonizer, low, high)) as attributor:
        _, theirs = attributor(x.clone(), torch.eye(1000)[[cls]])
    theirs = theirs * logits[0, cls]  # Zennit starts from 1, we from the logit
    corr = np.corrcoef(ours.flatten().double().numpy(), theirs.flatten().double().numpy())[0, 1]
    assert corr >= 0.999
    np.testing.assert_allclose(ours.sum(), theirs.sum(), rtol=1e-3)
    assert count_hooks(model) == 0


@pytest.mark.slow
def test_sanity_epsilon_decorrelates_and_z_plus_does_not():
    """Cascading randomisation (Adebayo et al. 2018) on the residual network: LRP-epsilon's
    map decorrelates once the head is re-initialised, z+'s stays the same map up to its sign
    (the sign of the new logit), as Sixt et al. (ICML 2020) show for z+. The guide and the
    docstring state it."""
    from seethrough.metrics.randomization import cascading_randomization

    model = residual_net(bias=True).float()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    eps = cascading_randomization(model, x, "lrp", composite="epsilon", target=1)
    zplus = cascading_randomization(model, x, "lrp", composite="z_plus", target=1)
    assert eps.layers[0] == zplus.layers[0] == "fc"
    assert np.abs(eps.spearman[1:]).max() < 0.5
    assert abs(zplus.spearman[0]) > 0.9 and np.abs(zplus.spearman).min() > 0.4

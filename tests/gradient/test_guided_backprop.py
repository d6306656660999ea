"""Guided backpropagation and Guided Grad-CAM against hand-written references.

The guided backward of ``Linear - act - Linear - act - Linear`` (float64) is written out in
numpy, with the rule of Springenberg et al. at every ReLU::

    grad_in = max(grad_out, 0) * [z > 0]            (nn.ReLU)
    grad_in = max(grad_out, 0) * [0 < z < 6]        (nn.ReLU6)

and the plain derivative at activations that are not guided (GELU: Phi(z) + z phi(z)). Each
reference is also checked to differ from the plain gradient, so a method that silently fell
back to ordinary backprop would fail.

Tolerance: float64 model, float32 ``.attributions``: ``rtol=1e-6`` (float32 rounding is 6e-8).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seethrough
from seethrough.errors import MethodNotApplicableError
from seethrough.methods.gradient.guided_backprop import GuidedReLU, guided_relus

from ._models import SeqMLP, SmallStridedCNN, close, linears, rand

SHAPE = (3, 2, 2)  # 12 input features


class SharedAttrMLP(nn.Module):
    """One ``nn.ReLU`` attribute called at both positions in ``forward``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = linears(seed)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.act(self.l2(self.act(self.l1(x.flatten(1))))))

    def layers(self) -> list[nn.Linear]:
        return [self.l1, self.l2, self.l3]


def _act(kind: str, z: np.ndarray) -> np.ndarray:
    if kind == "relu":
        return np.maximum(z, 0)
    if kind == "relu6":
        return np.clip(z, 0, 6)
    erf = np.vectorize(math.erf)
    return 0.5 * z * (1 + erf(z / math.sqrt(2)))  # gelu


def _backward(kind: str, z: np.ndarray, g: np.ndarray, guided: bool) -> np.ndarray:
    if kind == "gelu":
        erf = np.vectorize(math.erf)
        cdf = 0.5 * (1 + erf(z / math.sqrt(2)))
        pdf = np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
        return g * (cdf + z * pdf)
    upper = 6.0 if kind == "relu6" else np.inf
    passes = (z > 0) & (z < upper)
    return (np.maximum(g, 0) if guided else g) * passes


def reference(
    layers: list[nn.Linear], x: np.ndarray, k: int, kinds: tuple[str, str], guided: bool = True
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Guided (or plain) ``d y_k / d x`` for one input ``x`` (C, H, W), and pre-activations."""
    (W1, b1), (W2, b2), (W3, _) = (
        (lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in layers
    )
    z1 = W1 @ x.ravel() + b1
    z2 = W2 @ _act(kinds[0], z1) + b2
    g = W3[k]
    g = _backward(kinds[1], z2, g, guided) @ W2
    g = _backward(kinds[0], z1, g, guided) @ W1
    return g.reshape(x.shape), [z1, z2]


def snapshot(model: nn.Module) -> list[tuple[str, int, type]]:
    return [(name, id(m), type(m)) for name, m in model.named_modules(remove_duplicate=False)]


X = rand((3, *SHAPE), seed=40, lo=-1.5, hi=1.5)
TARGETS = [0, 2, 1]


def check_against_reference(model, kinds, x=X, targets=TARGETS, **kw):
    before = snapshot(model)
    es = seethrough.explain(model, x, "guided_backprop", target=targets, **kw)
    assert snapshot(model) == before
    differs = False
    for e, xi, k in zip(es, x.numpy(), targets, strict=True):
        expected, _ = reference(model.layers(), xi, k, kinds)
        plain, _ = reference(model.layers(), xi, k, kinds, guided=False)
        close(e.attributions, expected)
        close(e.map, np.abs(expected).max(0))  # default reduce: abs_max
        differs |= np.abs(expected - plain).max() > 1e-3 * np.abs(plain).max()
    assert differs, "the reference equals the plain gradient here: the test would have no teeth"
    return es


def test_guided_backprop_separate_relus():
    check_against_reference(SeqMLP(nn.ReLU(), nn.ReLU()).eval(), ("relu", "relu"))


def test_guided_backprop_inplace_relus():
    model = SeqMLP(nn.ReLU(inplace=True), nn.ReLU(inplace=True)).eval()
    check_against_reference(model, ("relu", "relu"))


def test_guided_backprop_shared_relu_attribute():
    check_against_reference(SharedAttrMLP().eval(), ("relu", "relu"))


def test_guided_backprop_shared_relu_in_sequential():
    """The same ``nn.ReLU`` object at two positions of one ``nn.Sequential`` must be guided at
    both."""
    relu = nn.ReLU()
    check_against_reference(SeqMLP(relu, relu).eval(), ("relu", "relu"))


def test_guided_backprop_relu6_rule():
    model = SeqMLP(nn.ReLU6(), nn.ReLU6(), scale=8.0, scale2=3.0).eval()
    zs = [reference(model.layers(), xi, 0, ("relu6", "relu6"))[1] for xi in X.numpy()]
    for j in (0, 1):  # both cut-offs are exercised at both positions
        assert any((z[j] > 6).any() for z in zs) and any(
            ((z[j] > 0) & (z[j] < 6)).any() for z in zs
        )
    check_against_reference(model, ("relu6", "relu6"))
    # a ReLU rule (no upper cut-off) would give a different answer here
    gaps = [
        np.abs(
            reference(model.layers(), xi, k, ("relu", "relu"))[0]
            - reference(model.layers(), xi, k, ("relu6", "relu6"))[0]
        ).max()
        for xi, k in zip(X.numpy(), TARGETS, strict=True)
    ]
    assert max(gaps) > 0.1


def test_guided_backprop_gelu_warns_and_keeps_its_plain_gradient():
    model = SeqMLP(nn.ReLU(), nn.GELU()).eval()
    with pytest.warns(UserWarning, match="GELU"):
        check_against_reference(model, ("relu", "gelu"))


def test_guided_backprop_without_relu_modules_is_not_applicable():
    class FunctionalReLU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2, _ = linears()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l2(F.relu(self.l1(x.flatten(1))))

    model = FunctionalReLU().eval()
    before = snapshot(model)
    with pytest.raises(MethodNotApplicableError):
        seethrough.explain(model, X, "guided_backprop")
    gelu_only = SeqMLP(nn.GELU(), nn.Tanh()).eval()
    with pytest.raises(MethodNotApplicableError):
        seethrough.explain(gelu_only, X, "guided_backprop")
    assert snapshot(model) == before


def test_modules_restored_after_failing_target():
    model = SeqMLP(nn.ReLU(), nn.ReLU6()).eval()
    model.train()  # the call's eval mode must be undone as well
    before = snapshot(model)
    seen: list[type] = []

    def failing(out: torch.Tensor) -> torch.Tensor:
        seen.extend([type(model.net[2]), type(model.net[4])])
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        seethrough.explain(model, X, "guided_backprop", target=failing)
    assert seen == [GuidedReLU, GuidedReLU]  # the swap really happened during the call
    assert snapshot(model) == before
    assert all(m.training for m in model.modules())


def test_guided_relus_context_restores_on_exception_by_itself():
    """The context manager itself restores (not only the caller's ``preserved_state``)."""
    a1, a2 = nn.ReLU(), nn.ReLU6()
    model = SeqMLP(a1, a2)
    before = snapshot(model)
    with pytest.raises(KeyError), guided_relus(model) as n:
        assert n == 2
        assert isinstance(model.net[2], GuidedReLU) and isinstance(model.net[4], GuidedReLU)
        assert model.net[4].upper == 6.0 and math.isinf(model.net[2].upper)
        raise KeyError("boom")
    assert snapshot(model) == before
    assert model.net[2] is a1 and model.net[4] is a2
    assert type(model.net[2]) is nn.ReLU and type(model.net[4]) is nn.ReLU6


def test_guided_backprop_float_input_with_callable_target():
    """A callable target (here a difference of two logits) is backpropagated the same way."""
    model = SeqMLP(nn.ReLU(), nn.ReLU()).eval()
    es = seethrough.explain(model, X, "guided_backprop", target=lambda out: out[:, 2] - out[:, 0])
    for e, xi in zip(es, X.numpy(), strict=True):
        # guided backprop is linear in the output gradient only when signs are preserved, so
        # build it directly: the output gradient is W3[2] - W3[0]
        l1, l2, l3 = model.layers()
        (W1, b1), (W2, b2) = (
            (m.weight.detach().numpy(), m.bias.detach().numpy()) for m in (l1, l2)
        )
        W3 = l3.weight.detach().numpy()
        z1 = W1 @ xi.ravel() + b1
        z2 = W2 @ np.maximum(z1, 0) + b2
        g = _backward("relu", z2, W3[2] - W3[0], True) @ W2
        g = _backward("relu", z1, g, True) @ W1
        close(e.attributions, g.reshape(SHAPE))


# --- Guided Grad-CAM ------------------------------------------------------------------------


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam():
    model = SmallStridedCNN(classes=4, seed=1)
    x = rand((2, 3, 10, 10), seed=41, lo=0.0, hi=1.0)
    targets = [1, 3]
    before = snapshot(model)
    ggc = seethrough.explain(model, x, "guided_gradcam", target=targets, layer="conv2")
    gb = seethrough.explain(model, x, "guided_backprop", target=targets)
    cam = seethrough.explain(model, x, "gradcam", target=targets, layer="conv2")
    assert snapshot(model) == before
    for g, b, c in zip(ggc, gb, cam, strict=True):
        assert c.raw.shape == (5, 5) and c.map.shape == (10, 10)  # really upsampled
        assert c.map.max() > 0 and np.ptp(c.map) > 0
        expected = b.attributions.astype(np.float64) * c.map.astype(np.float64)[None]
        close(g.attributions, expected, rtol=2e-6)
        close(g.map, np.abs(expected).max(0), rtol=2e-6)
        assert g.target == b.target == c.target and g.layer == "conv2"
    # default target: the top class, the same for all three
    ggc0 = seethrough.explain(model, x[0], "guided_gradcam", layer="conv2")
    gb0 = seethrough.explain(model, x[0], "guided_backprop")
    cam0 = seethrough.explain(model, x[0], "gradcam", layer="conv2")
    assert ggc0.target == gb0.target == cam0.target
    close(ggc0.attributions, gb0.attributions.astype(np.float64) * cam0.map[None], rtol=2e-6)

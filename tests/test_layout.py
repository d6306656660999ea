"""The channels-last switch of calls that run the model many times (seethrough.core.layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seethrough
from seethrough.core import layout
from seethrough.core.layout import COPY_PER_INPUT, ChannelsLast, channels_last_switch
from seethrough.errors import CancelledError

from .conftest import make_tiny

CL = torch.channels_last


def storage(model: nn.Module) -> dict[str, tuple[int, tuple[int, ...], torch.Tensor]]:
    return {n: (p.data_ptr(), p.stride(), p.detach().clone()) for n, p in model.named_parameters()}


def assert_same_storage(before, model):
    """Every parameter holds its own memory again, in its own layout, with the same values."""
    after = storage(model)
    for name, (ptr, stride, value) in before.items():
        assert after[name][:2] == (ptr, stride), f"{name} not restored"
        assert torch.equal(after[name][2], value), f"{name} changed"


@pytest.fixture
def switches(monkeypatch):
    """Records every switch a call makes (how many weights it copied)."""
    made: list[int] = []
    real = ChannelsLast.__init__

    def init(self, params):
        made.append(len(params))
        real(self, params)

    monkeypatch.setattr(ChannelsLast, "__init__", init)
    return made


def test_switch_only_where_it_pays():
    model = make_tiny()
    x = torch.rand(1, 3, 16, 16)
    mods = list(model.modules())
    switch = channels_last_switch(model, x, 1, mods)
    assert switch is not None  # a few hundred weights: always worth it
    switch.restore()
    assert channels_last_switch(model.double(), x.double(), 100, mods) is None  # no oneDNN path
    big = nn.Sequential(nn.Conv2d(1024, 1024, 3), nn.Conv2d(1024, 1024, 3)).eval()  # 18.9 M
    big_mods = list(big.modules())
    assert channels_last_switch(big, x, 1, big_mods) is None
    n = -(-sum(p.numel() for p in big.parameters() if p.dim() == 4) // COPY_PER_INPUT)
    switch = channels_last_switch(big, x, n, big_mods)
    assert switch is not None and len(switch.params) == 2
    switch.restore()
    linear = nn.Linear(3, 2)
    assert channels_last_switch(linear, x, 100, list(linear.modules())) is None
    assert channels_last_switch(model.float(), x[0], 100, mods) is None  # not an image batch


def test_already_channels_last_weights_are_not_copied():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8, padding=1)).eval()
    before = storage(model)
    switch = channels_last_switch(model, torch.rand(1, 3, 8, 8), 1, list(model.modules()))
    assert switch is not None and switch.params == []  # 1x1 and depthwise kernels: nothing to copy
    assert switch.input(torch.rand(2, 3, 8, 8)).is_contiguous(memory_format=CL)
    switch.restore()
    assert_same_storage(before, model)


def test_restore_puts_back_the_same_tensors_once():
    model = make_tiny()
    before = storage(model)
    switch = channels_last_switch(model, torch.rand(1, 3, 16, 16), 10, list(model.modules()))
    assert switch is not None
    conv = model.features[0].weight
    assert conv.is_contiguous(memory_format=CL) and not conv.is_contiguous()
    switch.restore()
    switch.restore()
    assert_same_storage(before, model)


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_environment_turns_it_off(monkeypatch, value):
    monkeypatch.setenv(layout.ENV, value)
    model = make_tiny()
    assert channels_last_switch(model, torch.rand(1, 3, 16, 16), 100, list(model.modules())) is None


def test_torchscript_is_left_alone():
    model = torch.jit.script(make_tiny())
    assert channels_last_switch(model, torch.rand(1, 3, 16, 16), 100, []) is None


@pytest.mark.parametrize(
    "method, params",
    [
        ("occlusion", {"window": 6, "stride": 4}),
        ("lime", {"n_samples": 64, "n_segments": 8}),
        ("kernelshap", {"n_samples": 64, "n_segments": 8}),
        ("rise", {"n_samples": 32}),
        ("integrated_gradients", {"n_steps": 16}),
        ("smoothgrad", {"n_samples": 8}),
        ("gradient_shap", {"n_samples": 8}),
        ("scorecam", {"batch_size": 4}),
        ("saliency", {}),
        ("guided_backprop", {}),
        ("gradcam", {}),
        ("gradcam++", {}),
        ("eigencam", {}),
        ("feature_inversion", {"n_steps": 5}),
    ],
)
def test_same_answer_in_both_layouts(monkeypatch, switches, method, params):
    """The switch changes where values sit in memory, not what the method computes."""
    model = make_tiny()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    before = storage(model)
    fast = seethrough.explain(model, x, method, **params)
    assert switches, "the call did not switch"
    assert_same_storage(before, model)
    monkeypatch.setenv(layout.ENV, "0")
    switches.clear()
    plain = seethrough.explain(model, x, method, **params)
    assert not switches
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-4, atol=1e-6)
        assert a.target == b.target


def test_the_real_model_agrees_in_both_layouts(monkeypatch, lite0):
    fast = seethrough.explain(lite0, "sample:chelsea", "occlusion", window=56, stride=56)
    monkeypatch.setenv(layout.ENV, "0")
    plain = seethrough.explain(lite0, "sample:chelsea", "occlusion", window=56, stride=56)
    np.testing.assert_allclose(fast.raw, plain.raw, rtol=1e-3, atol=1e-5)


class ViewsItsWeight(nn.Module):
    """A convolution that flattens its weight with ``.view``, which fails on channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight.view(4, -1).view(4, 3, 3, 3)
        return self.fc(F.conv2d(x, w, self.conv.bias).mean(dim=(2, 3)))


def test_a_model_that_fails_in_channels_last_falls_back(monkeypatch, switches):
    model = ViewsItsWeight().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = storage(model)
    fast = seethrough.explain(model, x, "occlusion", window=4, stride=4)
    assert switches == [1]  # tried once, failed, the rest of the call ran in the model's layout
    assert_same_storage(before, model)
    monkeypatch.setenv(layout.ENV, "0")
    plain = seethrough.explain(model, x, "occlusion", window=4, stride=4)
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_array_equal(a.raw, b.raw)


def test_weights_are_back_after_a_cancelled_call(switches):
    model = make_tiny()
    before = storage(model)
    with pytest.raises(CancelledError):
        seethrough.explain(
            model,
            torch.rand(1, 3, 16, 16),
            "occlusion",
            window=4,
            stride=2,
            batch_size=2,
            progress=lambda done, total: done < 6,
        )
    assert switches
    assert_same_storage(before, model)

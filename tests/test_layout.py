"""The channels-last switch of calls that run the model many times (seethrough.core.layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seethrough
from seethrough.core import layout
from seethrough.core.hooks import count_hooks
from seethrough.core.layout import MIN_PIXELS, PIXELS_PER_COPY, ChannelsLast, channels_last_switch
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
    """Records, for every layout a call sets up, how many weights it switched (at restore)."""
    made: list[int] = []
    real = ChannelsLast.restore

    def restore(self):
        if self.active:
            made.append(len(self.switched))
        real(self)

    monkeypatch.setattr(ChannelsLast, "restore", restore)
    return made


class TwoScales(nn.Module):
    """A 3x3 convolution on a 16x16 map (256 output pixels), one on a 4x4 map (16 pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.big_map = nn.Conv2d(3, 8, 3, padding=1)
        self.small_map = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.big_map(x).relu()
        self.small_input = F.avg_pool2d(a, 4)
        b = self.small_map(self.small_input).relu()
        return self.fc(b.mean(dim=(2, 3)))


def run_switched(model: nn.Module, x: torch.Tensor, inputs: int) -> ChannelsLast:
    switch = channels_last_switch(model, x, inputs, list(model.modules()))
    assert switch is not None
    with torch.no_grad():
        model(x)
    return switch


def test_each_convolution_switches_when_its_work_pays_for_the_copy():
    model = TwoScales().eval()
    x = torch.rand(1, 3, 16, 16)
    before = storage(model)
    switch = run_switched(model, x, 1)  # 1 x 256 >= PIXELS_PER_COPY > 1 x 16
    assert [p for p, _ in switch.switched] == [model.big_map.weight]
    assert model.big_map.weight.is_contiguous(memory_format=CL)
    assert model.small_map.weight.is_contiguous()  # kept, and fed contiguous input
    switch.restore()
    assert_same_storage(before, model) and count_hooks(model) == 0
    one = nn.Conv2d(3, 8, 3, padding=1).eval()  # 121 output pixels: MIN_PIXELS <= 121 < 128
    x = torch.rand(1, 3, 11, 11)
    assert MIN_PIXELS <= 121 < PIXELS_PER_COPY
    switch = run_switched(one, x, 1)
    assert switch.switched == []  # 1 x 121: the copy does not pay
    switch.restore()
    switch = run_switched(one, x, 2)  # 2 x 121: it does
    assert [p for p, _ in switch.switched] == [one.weight]
    switch.restore()
    assert count_hooks(one) == 0


def test_a_small_map_keeps_the_model_layout_however_many_inputs():
    model = TwoScales().eval()
    before = storage(model)
    assert 16 < MIN_PIXELS  # small_map's 4x4 input
    switch = run_switched(model, torch.rand(1, 3, 16, 16), 10_000)
    assert [p for p, _ in switch.switched] == [model.big_map.weight]
    assert switch.decided[id(model.small_map)] is False
    switch.restore()
    assert_same_storage(before, model)
    assert count_hooks(model) == 0


def test_where_the_layout_does_not_apply():
    model = make_tiny()
    x = torch.rand(1, 3, 16, 16)
    mods = list(model.modules())
    assert channels_last_switch(model.double(), x.double(), 100, mods) is None  # no oneDNN path
    assert channels_last_switch(model.float(), x[0], 100, mods) is None  # not an image batch
    linear = nn.Linear(3, 2)
    assert channels_last_switch(linear, x, 100, list(linear.modules())) is None


def test_already_channels_last_weights_are_not_copied():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8, padding=1)).eval()
    before = storage(model)
    switch = run_switched(model, torch.rand(1, 3, 8, 8), 1)
    assert switch.switched == [] and all(switch.decided.values())  # nothing to copy: both run
    switch.restore()
    assert_same_storage(before, model)


def test_restore_puts_back_the_same_tensors_once():
    model = make_tiny()
    before = storage(model)
    switch = run_switched(model, torch.rand(1, 3, 16, 16), 10)
    conv = model.features[0].weight
    assert conv.is_contiguous(memory_format=CL) and not conv.is_contiguous()
    switch.restore()
    switch.restore()
    assert_same_storage(before, model)
    assert count_hooks(model) == 0


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
    """Flattens its convolution's weight with ``.view``, which fails on channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean(dim=(2, 3))
        return self.fc(y * self.conv.weight.view(4, -1).norm(dim=1))


def test_a_model_that_fails_in_channels_last_falls_back(monkeypatch, switches):
    model = ViewsItsWeight().eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = storage(model)
    fast = seethrough.explain(model, x, "occlusion", window=4, stride=4)
    assert switches == [1]  # tried once, failed, the rest of the call ran in the model's layout
    assert count_hooks(model) == 0
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
    assert count_hooks(model) == 0


def switched_copy(model: nn.Module, conv: nn.Parameter) -> tuple[int, torch.Tensor]:
    """Where ``conv`` sits while switched, and its value then."""
    switch = run_switched(model, torch.rand(1, 3, 16, 16), 1)
    ptr, value = conv.data_ptr(), conv.detach().clone()
    switch.restore()
    return ptr, value


def test_buffers_are_reused_never_stale_and_freed_with_the_model():
    import gc

    model = make_tiny()
    conv = model.features[0].weight
    first, _ = switched_copy(model, conv)
    with torch.no_grad():
        conv.mul_(2)  # the user changes the weight between two calls
    second, value = switched_copy(model, conv)
    assert second == first  # the same memory again
    torch.testing.assert_close(value, conv.detach())  # holding the new values
    key = id(conv)
    assert key in layout._BUFFERS
    del model, conv
    gc.collect()
    assert key not in layout._BUFFERS


def test_buffers_stop_at_their_limit(monkeypatch):
    monkeypatch.setattr(layout, "BUFFER_LIMIT", 0)
    model = make_tiny()
    before = storage(model)
    switch = run_switched(model, torch.rand(1, 3, 16, 16), 1)
    assert switch.switched and not any(id(p) in layout._BUFFERS for p, _ in switch.switched)
    switch.restore()
    assert_same_storage(before, model)

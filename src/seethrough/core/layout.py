"""Channels-last memory layout for the convolutions of a call on the CPU.

On the CPU, PyTorch's oneDNN convolutions run faster on activations stored channels-last
(``N, H, W, C`` in memory) than on the default ``N, C, H, W`` layout: measured single-threaded
on 224x224 inputs at batches 1 and 4, a forward pass takes 0.82-0.85x the time on ResNet-18 and
EfficientNet-Lite0, about 0.8x on MobileNet-V2 and 0.89x on ResNet-50, a forward and backward
0.85-0.90x on ResNet-18 (``benchmarks/perturbation_speed.py`` and ``gradient_speed.py`` print
both layouts' floors). A convolution runs channels-last when its weight is, and its output
stays channels-last for the layers after it.

Switching a convolution costs one copy of its weight, unless the weight is channels-last
already (1x1 and depthwise kernels: nothing to copy), and it gains in proportion to the
convolution's work, its output pixels times the inputs the call evaluates. So each convolution
decides at its first call, from the size of its input: it switches when ``inputs x output
pixels`` reaches :data:`PIXELS_PER_COPY`, else it stays in the model's layout and its input is
made contiguous for it. On ResNet-18 at one image the stages before ``layer4`` switch and
``layer4`` (7x7 maps, three quarters of the weights) does not: a forward and backward then takes
0.91x the time, copies included, where switching every layer gained nothing (the copy ate it).
A convolution on a small map (under :data:`MIN_PIXELS` input pixels) never switches: there
channels-last runs slower however many inputs share the copy (ResNet-18's 3x3 convolutions on
4x4 and 2x2 maps, at 64x64 inputs, took 1.2-3.8x their time; Score-CAM's family, a forward per
channel, lost up to 1.8x of its time to it).

The weights are swapped in place (``param.data``), copied into buffers kept while the model
lives (at most :data:`BUFFER_LIMIT` elements in all, 256 MB of float32; the values are copied on
every switch, so a buffer is never stale), and the very same tensors are put back afterwards.
Values never change, only their order in memory, so results agree with the default layout to
float32 rounding.

Set the environment variable ``SEETHROUGH_CHANNELS_LAST=0`` to never switch.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = [
    "ChannelsLast",
    "channels_last_switch",
    "ENV",
    "PIXELS_PER_COPY",
    "MIN_PIXELS",
    "BUFFER_LIMIT",
]

ENV = "SEETHROUGH_CHANNELS_LAST"
"""Environment variable: ``0`` (or ``false``, ``no``, ``off``) disables the switch."""

PIXELS_PER_COPY = 128
"""A convolution whose weight must be copied switches when the inputs of the call times its
output pixels per input reach this. Measured on ResNet-18, one thread: at one 224x224 image a
``layer3`` convolution (196 output pixels) gains more than its copy costs, a ``layer4`` one
(49 pixels) less."""

MIN_PIXELS = 100
"""A convolution whose weight must be copied stays in the model's layout when its input map has
fewer pixels than this, however many inputs the call evaluates: channels-last runs slower there.
Measured on ResNet-18, one thread, batches of 32: a 3x3 convolution on a 4x4 map takes 1.2-3.8x
its time in the default layout, on 2x2 3.1-3.8x, on 7x7 and 8x8 about 0.85-1.5x (1.0 at
224x224 inputs), on 14x14 and larger 0.4-0.9x."""

BUFFER_LIMIT = 64_000_000
"""Weight elements (all models together) whose channels-last buffers are kept between calls."""

_BUFFERS: dict[int, tuple[weakref.ref[nn.Parameter], torch.Tensor]] = {}
_LOCK = threading.RLock()  # re-entrant: a finalizer may run inside the locked block


class ChannelsLast:
    """The convolutions of a model for one call: each switches to channels-last (or not) at its
    first call; :meth:`restore` removes the hooks and puts every original weight back.

    Attributes:
        inputs: how many inputs the call evaluates.
        switched: ``(parameter, its tensor before the switch)`` for each switched weight.
        decided: convolution id -> whether it runs channels-last.
    """

    def __init__(self, convs: list[nn.Conv2d], inputs: int) -> None:
        self.inputs = max(1, inputs)
        self.switched: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.decided: dict[int, bool] = {}
        self.active = True
        self.handles = {id(c): c.register_forward_pre_hook(self._before) for c in convs}

    def _before(self, conv: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Forward pre-hook: decide once (a switched convolution needs its hook no more), then
        hand a kept convolution contiguous input."""
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return None
        decision = self.decided.get(id(conv))
        if decision is None:
            decision = self.decided[id(conv)] = self._decide(conv, x)  # type: ignore[arg-type]
            if decision:
                self.handles.pop(id(conv)).remove()
        if decision or x.is_contiguous():
            return None
        return (x.contiguous(), *args[1:])

    def _decide(self, conv: nn.Conv2d, x: torch.Tensor) -> bool:
        w = conv.weight
        if w.is_contiguous(memory_format=torch.channels_last):
            return True  # nothing to copy: run in whatever layout arrives
        if x.shape[-2] * x.shape[-1] < MIN_PIXELS:
            return False  # a small map runs slower channels-last, whatever the batch
        sh, sw = conv.stride
        pixels = (x.shape[-2] // sh) * (x.shape[-1] // sw)
        if self.inputs * pixels < PIXELS_PER_COPY:
            return False
        self.switched.append((w, w.data))
        w.data = _buffer(w).copy_(w.data)
        return True

    def restore(self) -> None:
        """Remove the hooks and put every original weight back (idempotent)."""
        if self.active:
            for handle in self.handles.values():
                handle.remove()
            for p, original in reversed(self.switched):
                p.data = original
            self.active = False


def _buffer(p: nn.Parameter) -> torch.Tensor:
    """A channels-last tensor shaped like ``p`` to copy its values into.

    Kept between calls while ``p`` lives (up to :data:`BUFFER_LIMIT` elements in all): a fresh
    allocation of that size costs page faults on every call (ResNet-18: 14 ms to copy its
    weights into new memory after other large work, 9 ms into kept memory). Only the memory is
    reused; the values are copied from the weight on every switch.
    """
    with _LOCK:  # models explained in other threads (the dashboard) share the buffers
        kept = _BUFFERS.get(id(p))
        if kept is not None and kept[0]() is p:
            buffer = kept[1]
            if buffer.shape == p.shape and buffer.dtype == p.dtype and buffer.device == p.device:
                return buffer
        buffer = torch.empty_like(p.data, memory_format=torch.channels_last)
        if sum(b.numel() for _, b in _BUFFERS.values()) + buffer.numel() <= BUFFER_LIMIT:
            _BUFFERS[id(p)] = (weakref.ref(p), buffer)
            weakref.finalize(p, _forget, id(p))
        return buffer


def _forget(key: int) -> None:
    """Drop the buffer of a parameter that no longer exists."""
    with _LOCK:
        _BUFFERS.pop(key, None)


def enabled() -> bool:
    """Whether the environment allows the switch (see :data:`ENV`)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def channels_last_switch(
    model: nn.Module, x: torch.Tensor, inputs: int, modules: Iterable[nn.Module]
) -> ChannelsLast | None:
    """Hook ``model``'s 2-D convolutions so that each switches to channels-last when it pays
    (see the module's text), or ``None`` where the layout does not apply.

    It applies to float32 image inputs ``(N, C, H, W)`` on a CPU with oneDNN and a model with
    2-D convolutions; a TorchScript model is left as it is.

    Args:
        model: the network.
        x: a model input (device, dtype and rank decide).
        inputs: how many inputs the call will run through the model.
        modules: ``model`` and its submodules.
    """
    if (
        x.dim() != 4
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or isinstance(model, torch.jit.ScriptModule)
        or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
        or not enabled()
    ):
        return None
    convs = [
        m
        for m in modules
        if isinstance(m, nn.Conv2d)
        and isinstance(m.weight, nn.Parameter)
        and m.weight.dim() == 4
        and m.weight.device.type == "cpu"
    ]
    return ChannelsLast(list(dict.fromkeys(convs)), inputs) if convs else None

"""Channels-last memory layout for calls that run a convolutional model many times on the CPU.

On the CPU, PyTorch's oneDNN convolutions run faster on activations stored channels-last
(``N, H, W, C`` in memory) than on the default ``N, C, H, W`` layout: measured single-threaded
on 224x224 inputs at batches 1 and 4, a forward pass takes 0.82-0.85x the time on ResNet-18 and
EfficientNet-Lite0, about 0.8x on MobileNet-V2 and 0.89x on ResNet-50, a forward and backward
0.85-0.90x on ResNet-18 (``benchmarks/perturbation_speed.py`` and ``gradient_speed.py`` print
both layouts' floors). A convolution keeps the layout of its input and weight, so switching the
convolution weights is enough to carry the whole network over.

Switching costs one copy of every convolution weight that is not already channels-last
(1x1 and depthwise kernels usually are: nothing to copy), so :func:`channels_last_switch` only
switches when the call evaluates enough inputs to pay for it. The weights are swapped in place
(``param.data``) and the very same tensors are put back afterwards; values never change, only
their order in memory, so results agree with the default layout to float32 rounding.

Set the environment variable ``SEETHROUGH_CHANNELS_LAST=0`` to never switch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["ChannelsLast", "channels_last_switch", "ENV", "COPY_PER_INPUT"]

ENV = "SEETHROUGH_CHANNELS_LAST"
"""Environment variable: ``0`` (or ``false``, ``no``, ``off``) disables the switch."""

COPY_PER_INPUT = 12_000_000
"""Weight elements the switch may copy per input the call evaluates. On one thread a 224x224
input saves about 9 ms of a 43 ms forward on ResNet-18 (10 ms of 100 with the backward), and
copying its 11 M elements costs about 8 ms (measured inside ``explain``: saliency of one image
takes 0.987x Captum's time with the switch, 1.006x without; ResNet-50, 11.3 M elements,
0.953x with it), so both switch from the first input. A model whose convolution weights are
large next to its compute (big kernels on small maps) waits for more inputs."""


class ChannelsLast:
    """Convolution weights switched to channels-last; :meth:`restore` puts the originals back.

    Attributes:
        params: the switched parameters.
        originals: their tensors before the switch (restored as they are, same objects).
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.originals = [p.data for p in params]
        self.active = True
        for p in params:
            p.data = p.data.contiguous(memory_format=torch.channels_last)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the layout of the switched model (4-D inputs only)."""
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def restore(self) -> None:
        """Put every original weight back (idempotent)."""
        if self.active:
            for p, original in zip(self.params, self.originals, strict=True):
                p.data = original
            self.active = False


def enabled() -> bool:
    """Whether the environment allows the switch (see :data:`ENV`)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def channels_last_switch(
    model: nn.Module, x: torch.Tensor, inputs: int, modules: Iterable[nn.Module]
) -> ChannelsLast | None:
    """Switch ``model``'s 2-D convolutions to channels-last when it pays, else ``None``.

    It pays for float32 image inputs ``(N, C, H, W)`` on a CPU with oneDNN, when the weights to
    copy are at most :data:`COPY_PER_INPUT` elements per input the call will evaluate. A
    TorchScript model is left as it is.

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
    weights = [
        m.weight
        for m in modules
        if isinstance(m, nn.Conv2d)
        and isinstance(m.weight, nn.Parameter)
        and m.weight.dim() == 4
        and m.weight.device.type == "cpu"
    ]
    if not weights:
        return None
    to_copy = [
        p for p in dict.fromkeys(weights) if not p.is_contiguous(memory_format=torch.channels_last)
    ]
    if sum(p.numel() for p in to_copy) > COPY_PER_INPUT * inputs:
        return None
    return ChannelsLast(to_copy)

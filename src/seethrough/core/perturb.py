"""Model evaluations on perturbed inputs: the machinery the perturbation methods, the gradient
methods' baselines and the faithfulness metrics share.

A perturbed input is ``x * m + hidden * (1 - m)`` for a mask ``m`` in [0, 1] (1 keeps a pixel,
0 replaces it by the same pixel of the ``hidden`` image). Masks come from a :class:`MaskSource`
that builds them one batch at a time with tensor operations (no Python loop over pixels), so a
run of thousands of evaluations never holds all masks at once.

The model is reached through a :class:`Evaluator`: anything with the input ``x``, a protected
``forward`` and a ``many_inputs(inputs)`` context (a method's context is one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from . import batching
from .inputs import image_parameter
from .progress import Ticker

__all__ = [
    "Evaluator",
    "MaskSource",
    "FeatureMasks",
    "PixelMasks",
    "HIDE_KEYWORDS",
    "evaluate",
    "hidden_image",
    "auto_batch_size",
    "gaussian_blur",
]

HIDE_KEYWORDS = ("mean", "blur", "noise")
"""The words a fill image (``hide``) takes besides numbers and images."""


class Evaluator(Protocol):
    """What :func:`evaluate` and :func:`auto_batch_size` need of the model: its input ``x``
    ``(N, C, H, W)``, a forward and a context announcing that many inputs to come."""

    @property
    def x(self) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def many_inputs(self, inputs: int) -> AbstractContextManager[object]: ...


class MaskSource(Protocol):
    """Masks ``(B, H, W)`` in [0, 1], built on demand one batch at a time."""

    def __len__(self) -> int: ...

    def batch(self, start: int, stop: int) -> torch.Tensor: ...


@dataclass
class FeatureMasks:
    """Masks from feature indicators: pixel ``(h, w)`` takes ``z[:, segments[h, w]]``.

    Attributes:
        z: ``(M, F)`` feature indicators or soft weights (1 = keep the feature).
        segments: ``(H, W)`` integer labels in ``0..F-1``.
    """

    z: torch.Tensor
    segments: torch.Tensor

    def __len__(self) -> int:
        return self.z.shape[0]

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Index the indicators by the label image: one gather, no loop."""
        return self.z[start:stop][:, self.segments]


@dataclass
class PixelMasks:
    """Masks given directly at pixel level, ``(M, H, W)``."""

    masks: torch.Tensor

    def __len__(self) -> int:
        return self.masks.shape[0]

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """A slice of the stored masks."""
        return self.masks[start:stop]


def auto_batch_size(ctx: Evaluator) -> int:
    """Perturbed inputs per forward for ``ctx``'s input, by the perturbation policy of
    :mod:`seethrough.core.batching` (probed on CUDA; on the CPU 4 images of 224x224, at most 64
    smaller ones)."""
    return batching.auto_batch_size(ctx.x, batching.PERTURBATION, ctx.forward)


def gaussian_blur(
    x: torch.Tensor,
    sigma: float,
    *,
    truncate: float = 3.0,
    border: Literal["replicate", "reflect"] = "replicate",
) -> torch.Tensor:
    """Separable Gaussian blur of each channel of ``x`` ``(N, C, H, W)``.

    Args:
        x: the images.
        sigma: standard deviation in pixels.
        truncate: the kernel's radius is ``max(1, ceil(truncate * sigma))`` pixels.
        border: how the borders are padded (``"replicate"`` or ``"reflect"``, as in
            :func:`torch.nn.functional.pad`).

    Returns:
        The blurred images, same shape, dtype and device as ``x``.
    """
    radius = max(1, math.ceil(truncate * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode=border)
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def hidden_image(
    x: torch.Tensor, hide: object, generator: torch.Generator | None = None, name: str = "hide"
) -> torch.Tensor:
    """The replacement image ``(1, C, H, W)`` for one input ``x`` ``(1, C, H, W)``
            (a batch of hide images is split per image by the caller).

    Args:
        x: the model input of one image.
        hide: a finite number (model-input space), ``"mean"`` (per-channel mean of ``x``),
            ``"blur"`` (Gaussian blur with sigma = max(H, W) / 16), ``"noise"`` (standard normal
            noise in model-input space, from ``generator``), or a tensor ``(C, H, W)`` /
            ``(1, C, H, W)`` with ``x``'s channels and size (see
            :func:`~seethrough.core.inputs.image_parameter`).
        generator: random generator for ``"noise"``.
        name: the parameter's name in error messages.

    Raises:
        InvalidParameterError: anything else, naming ``name``.
    """
    hide = image_parameter(name, hide, x, keywords=HIDE_KEYWORDS)
    if isinstance(hide, torch.Tensor):
        return hide.unsqueeze(0) if hide.dim() == 3 else hide
    if hide == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if hide == "blur":
        return gaussian_blur(x, max(x.shape[-2:]) / 16)
    if hide == "noise":
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        return noise.to(x.device, x.dtype)
    return torch.full_like(x, float(hide))


def evaluate(
    ctx: Evaluator,
    x: torch.Tensor,
    hidden: torch.Tensor,
    masks: MaskSource,
    score: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    ticker: Ticker | None = None,
    each: Callable[[torch.Tensor, torch.Tensor], object] | None = None,
) -> torch.Tensor:
    """Scores of every perturbation: ``score(model(x * m + hidden * (1 - m)))`` for each mask.

    Args:
        ctx: the call's context (model and output adapter).
        x: one model input ``(1, C, H, W)``.
        hidden: its replacement image ``(1, C, H, W)``.
        masks: the masks, built batch by batch.
        score: model output ``(B, ...)`` to scores ``(B, T)`` (several targets at once).
        batch_size: perturbed inputs per forward pass.
        ticker: progress counter, advanced after each batch (and the cancellation point).
        each: optional ``each(masks, scores)`` after every batch, with the batch's masks as the
            source built them ``(B, H, W)`` and its scores ``(B, T)`` (float64, CPU): a method
            that sums over its masks does it here instead of building them a second time.

    Returns:
        ``(M, T)`` scores in float64 on the CPU.
    """
    rows = []
    delta = x - hidden
    with torch.no_grad(), ctx.many_inputs(len(masks)):
        for start in range(0, len(masks), batch_size):
            stop = min(start + batch_size, len(masks))
            built = masks.batch(start, stop)
            m = built.to(x.device, x.dtype).unsqueeze(1)
            rows.append(score(ctx.forward(hidden + delta * m)).double().cpu())
            if each is not None:
                each(built, rows[-1])
            if ticker is not None:
                ticker.advance(stop - start)
    return torch.cat(rows)

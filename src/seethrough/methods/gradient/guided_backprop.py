"""Guided backpropagation and Guided Grad-CAM."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ...core.targets import ResolvedTarget
from ...errors import MethodNotApplicableError
from ...registry import register_method
from ..base import Context
from ..cam.gradcam import GradCAM
from .base import Attribution, GradientMethod, input_gradients, reduce_param

__all__ = ["GuidedBackprop", "GuidedGradCAM", "guided_relus"]

_OTHER_ACTIVATIONS = (
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.PReLU,
    nn.Softplus,
)


class _GuidedClamp(torch.autograd.Function):
    """Forward ``clamp(x, 0, upper)``; backward passes only positive gradients where ``0 < x < upper``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(min=0) if math.isinf(upper) else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * ((x > 0) & (x < ctx.upper)), None


class GuidedReLU(nn.Module):
    """Drop-in for ``nn.ReLU`` / ``nn.ReLU6`` (``upper=6``) with the guided backward rule."""

    def __init__(self, upper: float = math.inf) -> None:
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedClamp.apply(x, self.upper)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Swap every ``nn.ReLU`` / ``nn.ReLU6`` module for :class:`GuidedReLU`; restore on exit.

    Yields the number of swapped modules. Raises ``MethodNotApplicableError`` if there is none;
    warns about other activation modules, whose gradients stay unguided. ReLUs called as
    functions (``F.relu`` in a ``forward``) cannot be seen, and are not guided either.
    """
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    replacement: dict[int, nn.Module] = {}
    others: dict[str, int] = {}
    for parent in model.modules():
        for name, child in list(parent._modules.items()):  # named_children() skips repeats
            if child is not None and type(child) in (nn.ReLU, nn.ReLU6):
                upper = 6.0 if isinstance(child, nn.ReLU6) else math.inf
                swaps.append((parent, name, child))
                replacement.setdefault(id(child), GuidedReLU(upper))
            elif isinstance(child, _OTHER_ACTIVATIONS):
                others[type(child).__name__] = others.get(type(child).__name__, 0) + 1
    if not swaps:
        raise MethodNotApplicableError(
            "guided backpropagation needs nn.ReLU or nn.ReLU6 modules and this model has none "
            "(ReLUs called as functions, and other activations, cannot be guided)"
        )
    if others:
        found = ", ".join(f"{n} {k}" for k, n in sorted(others.items()))
        warnings.warn(
            f"guided backpropagation guides ReLU modules only; {found} module(s) keep their plain "
            "gradient",
            stacklevel=4,
        )
    try:
        for parent, name, child in swaps:
            setattr(parent, name, replacement[id(child)])
        yield len(swaps)
    finally:
        for parent, name, child in swaps:
            setattr(parent, name, child)


@register_method
class GuidedBackprop(GradientMethod):
    """Gradient with every ReLU passing back only positive gradients of positive inputs.

    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR workshop
    2015. At each ReLU ``y = max(x, 0)`` the backward pass becomes::

        dL/dx = ReLU(dL/dy) * [x > 0]

    (``nn.ReLU6`` also blocks where ``x >= 6``). The ReLU modules are swapped for the call and
    restored afterwards, also after an exception.
    """

    name = "guided_backprop"
    title = "Guided Backprop"
    swaps_modules = True
    paper = "Springenberg et al., ICLR workshop 2015"
    params = (reduce_param("abs_max"),)

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """One forward and one guided backward pass."""
        with guided_relus(ctx.model):
            grads, output, target = input_gradients(ctx, ctx.x, target)
        return Attribution(grads, output, target)


@register_method
class GuidedGradCAM(GradientMethod):
    """Guided backpropagation multiplied by the upsampled Grad-CAM map.

    Selvaraju et al., "Grad-CAM", ICCV 2017, section 3.1::

        a[c, h, w] = guided_backprop[c, h, w] * upsample(gradcam)[h, w]

    Composed from :class:`GuidedBackprop` and :class:`~seethrough.methods.cam.GradCAM` (its
    layer, its ReLU), which explain the same target.
    """

    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    swaps_modules = True
    paper = "Selvaraju et al., ICCV 2017"
    needs_layer = True
    params = (reduce_param("abs_max"),)

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """Grad-CAM at the layer, guided backprop at the input, multiplied."""
        cam = GradCAM().run(ctx)
        guided = GuidedBackprop().attribute(ctx, target or cam.target)
        up = F.interpolate(
            cam.map[:, None], size=ctx.x.shape[-2:], mode="bilinear", align_corners=False
        )
        return Attribution(guided.attributions * up, guided.output, guided.target)

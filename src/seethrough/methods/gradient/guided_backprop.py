"""Guided backpropagation and Guided Grad-CAM."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
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

__all__ = ["GuidedBackprop", "GuidedGradCAM", "guided_relus", "swap_modules"]

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


class _GuidedReLUFunction(torch.autograd.Function):
    """``relu(x)``; backward ``relu(grad) * [x > 0]``.

    The mask comes from the output (``[relu(x) > 0] == [x > 0]``), saved as ``torch.relu``
    saves it, so the forward may overwrite ``x`` as an in-place ``nn.ReLU`` does. The backward
    is ``threshold_backward`` (the ReLU's own backward kernel: one pass) and an in-place clamp.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool) -> torch.Tensor:  # noqa: ANN001
        if inplace:
            ctx.mark_dirty(x)
            out = x.relu_()
        else:
            out = x.relu()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0).clamp_(min=0), None


class _GuidedClampFunction(torch.autograd.Function):
    """``clamp(x, 0, upper)`` (``nn.ReLU6``: upper 6); backward ``relu(grad) * [0 < x < upper]``.

    Saves what ``hardtanh`` saves: the input, or the output when computed in place
    (``0 < clamp(x, 0, upper) < upper`` exactly when ``0 < x < upper``). The backward is
    ``hardtanh_backward`` (one pass) and an in-place clamp.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float, inplace: bool) -> torch.Tensor:  # noqa: ANN001
        ctx.upper = upper
        if inplace:
            ctx.mark_dirty(x)
            out = x.clamp_(0.0, upper)
            ctx.save_for_backward(out)
        else:
            out = x.clamp(0.0, upper)
            ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (saved,) = ctx.saved_tensors
        grad = torch.ops.aten.hardtanh_backward(grad, saved, 0.0, ctx.upper)
        return grad.clamp_(min=0), None, None


class _DeconvReLUFunction(torch.autograd.Function):
    """``clamp(x, 0, upper)``; backward ``relu(grad)``, whatever ``x`` was (the deconvnet rule:
    the forward pass's mask is ignored). Saves nothing."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float, inplace: bool) -> torch.Tensor:  # noqa: ANN001
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(0.0, upper)
        return x.clamp(0.0, upper)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        return grad.clamp(min=0), None, None


class GuidedReLU(nn.Module):
    """Drop-in for ``nn.ReLU`` / ``nn.ReLU6`` (``upper=6``) with the guided backward rule, or
    with the deconvnet rule (``deconv=True``: ``relu(grad)``, no forward mask).

    With ``inplace=True`` (as the module it replaces) it overwrites its input when that input
    is the output of another operation, never a leaf such as the model's input itself.
    """

    def __init__(
        self, upper: float = math.inf, inplace: bool = False, deconv: bool = False
    ) -> None:
        super().__init__()
        self.upper = upper
        self.inplace = inplace
        self.deconv = deconv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = self.inplace and x.grad_fn is not None
        if self.deconv:
            return _DeconvReLUFunction.apply(x, self.upper, inplace)
        if math.isinf(self.upper):
            return _GuidedReLUFunction.apply(x, inplace)
        return _GuidedClampFunction.apply(x, self.upper, inplace)


@contextmanager
def guided_relus(model: nn.Module, deconv: bool = False) -> Iterator[int]:
    """Swap every ``nn.ReLU`` / ``nn.ReLU6`` module for :class:`GuidedReLU` (in place where the
    original is; with the deconvnet rule for ``deconv=True``); restore on exit.

    Yields the number of swapped modules. Raises ``MethodNotApplicableError`` if there is none;
    warns about other activation modules, whose gradients stay unguided. ReLUs called as
    functions (``F.relu`` in a ``forward``) cannot be seen, and are not guided either.
    """
    what = "the deconvnet" if deconv else "guided backpropagation"
    others: dict[str, int] = {}
    for parent in _submodules(model):
        for child in parent._modules.values():
            if isinstance(child, _OTHER_ACTIVATIONS):
                others[type(child).__name__] = others.get(type(child).__name__, 0) + 1
    guided: dict[tuple[float, bool], GuidedReLU] = {}  # stateless: one per kind is enough

    def guide(child: nn.Module) -> nn.Module | None:
        if type(child) not in (nn.ReLU, nn.ReLU6):
            return None
        kind = (6.0 if type(child) is nn.ReLU6 else math.inf, child.inplace)
        if kind not in guided:
            guided[kind] = GuidedReLU(*kind, deconv=deconv)
        return guided[kind]

    with swap_modules(model, guide) as swapped:
        if not swapped:
            raise MethodNotApplicableError(
                f"{what} needs nn.ReLU or nn.ReLU6 modules and this model has none "
                "(ReLUs called as functions, and other activations, cannot be guided)"
            )
        if others:
            found = ", ".join(f"{n} {k}" for k, n in sorted(others.items()))
            warnings.warn(
                f"{what} guides ReLU modules only; {found} module(s) keep their plain gradient",
                stacklevel=4,
            )
        yield swapped


@contextmanager
def swap_modules(
    model: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]
) -> Iterator[int]:
    """Replace every submodule ``m`` of ``model`` for which ``replacement(m)`` is a module by
    that module (``None``: keep ``m``); put the originals back on exit, also after an exception.

    A module registered under several parents or names is replaced at each. Yields the number
    of replacements.
    """
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in _submodules(model):
        for name, child in parent._modules.items():  # named_children() skips repeats
            if child is not None:
                swaps.append((parent, name, child))
    done: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent, name, child in swaps:
            new = replacement(child)
            if new is not None:
                parent._modules[name] = new  # = setattr for a registered submodule
                done.append((parent, name, child))
        yield len(done)
    finally:
        for parent, name, child in done:
            parent._modules[name] = child


def _submodules(model: nn.Module) -> list[nn.Module]:
    """Every distinct module of ``model`` (``model.modules()`` without its names, faster)."""
    seen, stack, found = {id(model)}, [model], []
    while stack:
        module = stack.pop()
        found.append(module)
        for child in module._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return found


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
    rank = 20
    swaps_modules = True
    paper = "Springenberg et al., ICLR workshop 2015"
    params = (reduce_param("abs_max"),)
    deconv = False  # the deconvnet's rule instead (see Deconvnet)

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """One forward and one guided backward pass."""
        with guided_relus(ctx.model, deconv=self.deconv):
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
    rank = 30
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

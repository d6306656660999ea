"""FullGrad: input-gradients and the bias-gradients of every layer, summed as saliency maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Param, register_method
from ..base import Context, Method, MethodResult

_EPS = 1e-7  # added to the largest value when a map is scaled to [0, 1] (as pytorch-grad-cam)


@register_method
class FullGrad(Method):
    """Full-gradient saliency: the input-gradient term plus every layer's bias-gradients.

    Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization",
    NeurIPS 2019. A ReLU network's output decomposes exactly as
    ``y = <dy/dx, x> + sum_l sum_c sum_ij (b_l,c * dy/dz_l)[c, i, j]``, with ``z_l`` the output
    of a layer with bias ``b_l`` (a convolution's bias; a batch norm's
    ``beta - mu * gamma / sqrt(var + eps)``). The saliency map post-processes each term with
    ``psi`` = absolute value, scaling to [0, 1] (minus the minimum, over the maximum + 1e-7),
    bilinear upsampling to the input, and sums over channels::

        map = sum_channels psi(dy/dx * x) + sum_l sum_channels psi(b_l * dy/dz_l)

    ``normalize="layer"`` scales each term as a whole (over its channels and positions, as the
    paper's code); ``"channel"`` scales each channel separately (as pytorch-grad-cam's
    ``FullGrad``). The layers are the model's ``Conv2d`` and ``BatchNorm2d`` modules with a
    bias; upsampling uses ``align_corners=False`` as the other CAMs here. The map is never
    negative and is not scaled as a whole (``raw`` = ``map``). One forward and one backward
    to the input; needs no layer.
    """

    name = "fullgrad"
    title = "FullGrad"
    family = "cam"
    rank = 90
    paper = "Srinivas & Fleuret, NeurIPS 2019"
    params = (
        Param(
            "normalize",
            "layer",
            "how each term is scaled to [0, 1]: as a whole ('layer', the paper's code) or per "
            "channel ('channel', as pytorch-grad-cam)",
            str,
            choices=("layer", "channel"),
        ),
    )

    def run(self, ctx: Context) -> MethodResult:
        """One forward recording every biased layer, one backward to the input and to them."""
        biases = {
            name: bias for name, m in ctx.named_modules.items() if (bias := _bias(m)) is not None
        }
        modules = {name: ctx.named_modules[name] for name in biases}
        x = ctx.x.detach().requires_grad_(True)
        with ctx.runner.record(modules) as rec, torch.enable_grad():
            output = ctx.forward(x)
            target = ctx.resolve(output)
            outs = {name: rec.outputs[name] for name in modules if name in rec.outputs}
            grads = torch.autograd.grad(
                target(output).sum(), [x, *outs.values()], allow_unused=True
            )
        size = tuple(x.shape[-2:])
        with torch.no_grad():
            total = self._scaled(grads[0] * x, size)
            for name, g in zip(outs, grads[1:], strict=True):
                if g is not None and g.dim() == 4:
                    total = total + self._scaled(g * biases[name].view(1, -1, 1, 1), size)
        return ctx.result(total, total, output.detach(), target)

    def _scaled(self, t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """``psi(t)`` summed over channels: |t| scaled to [0, 1], upsampled, ``(N, H, W)``.

        Bilinear upsampling is linear, so the channels are summed first and one map per image
        is upsampled (not one per channel)."""
        t = t.detach().abs()
        dims = (1, 2, 3) if self.config["normalize"] == "layer" else (2, 3)
        t = t - t.amin(dim=dims, keepdim=True)
        t = (t / (t.amax(dim=dims, keepdim=True) + _EPS)).sum(dim=1, keepdim=True)
        if tuple(t.shape[-2:]) != size:
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        return t[:, 0]


def _bias(module: nn.Module) -> torch.Tensor | None:
    """The bias a layer adds to each output channel (a batch norm's in eval mode), if any."""
    if isinstance(module, nn.Conv2d) and module.bias is not None:
        return module.bias.detach()
    if (
        isinstance(module, nn.BatchNorm2d)
        and module.bias is not None
        and module.running_mean is not None
        and module.running_var is not None
    ):
        scale = module.weight / torch.sqrt(module.running_var + module.eps)
        return (module.bias - module.running_mean * scale).detach()
    return None

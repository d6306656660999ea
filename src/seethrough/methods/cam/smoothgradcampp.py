"""Smooth Grad-CAM++: Grad-CAM++ with gradients averaged over noisy copies of the input."""

from __future__ import annotations

from dataclasses import replace

import torch

from ...core import batching
from ...core.noise import normal_noise
from ...core.targets import ResolvedTarget
from ...core.tokens import tokens_to_map
from ...registry import Param, register_method
from ..base import Context
from ..params import N_SAMPLES, RELU, SEED
from .base import CAMMethod, CAMState


@register_method
class SmoothGradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ whose gradient powers are averaged over noisy copies of the input.

    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for
    Deep Convolutional Neural Network Models", 2019. With ``g_i = dy/dA`` at the noisy input
    ``x + e_i``, ``e_i ~ N(0, (noise * (max(x) - min(x)))^2)`` (SmoothGrad's noise, one draw per
    sample shared by the images of a batch), ``D_p = 1/n sum_i g_i^p`` and ``A`` the clean
    activations::

        alpha_c[i,j] = D_2 / (2 D_2 + sum_ab A_c[a,b] D_3)      (0 where the denominator is 0)
        w_c = sum_ij alpha_c[i,j] * ReLU(D_1)
        map = ReLU(sum_c w_c A_c)

    ``n_samples`` forward + backward passes (to the layer) besides the clean one, the noisy
    copies in batches. torchcam's ``SmoothGradCAMpp`` takes ``ReLU`` of the last sample's
    gradient and that sample's activations instead of ``D_1`` and the clean ``A``; where the
    gradient does not depend on the input (a linear head after the layer) the weights agree.
    """

    name = "smoothgradcam++"
    title = "Smooth Grad-CAM++"
    rank = 35
    paper = "Omeiza et al., 2019 (arXiv 1908.01224)"
    params = (
        RELU,
        replace(N_SAMPLES, default=8, help="noisy copies of the input (one backward each)"),
        Param("noise", 0.15, "noise std as a fraction of each image's value range", float, min=0),
        SEED,
    )

    clean_gradients = False  # the weights use the noisy copies' gradients only

    def weights(self, s: CAMState) -> torch.Tensor:
        """``sum_ij alpha * ReLU(D_1)`` from the averaged gradient powers.

        The ``N * n_samples`` noisy copies (image-major) go through the model in batches (see
        :data:`~seethrough.core.batching.GRADIENT`), each batch with one backward to the layer.
        """
        ctx, x, m = s.ctx, s.ctx.x, self.config["n_samples"]
        n = x.shape[0]
        generator = torch.Generator().manual_seed(self.config["seed"])
        sigma = (x.flatten(1).amax(1) - x.flatten(1).amin(1)) * self.config["noise"]
        noise = normal_noise((m, *x.shape[1:]), generator, x)
        image = torch.arange(n).repeat_interleave(m)
        sample = torch.arange(m).repeat(n)
        d1, d2, d3 = (torch.zeros_like(s.activations) for _ in range(3))
        batch = batching.auto_batch_size(x, batching.GRADIENT, ctx.forward)
        with ctx.many_inputs(n * m):
            for start in range(0, n * m, batch):
                i, k = image[start : start + batch], sample[start : start + batch]
                noisy = x[i] + sigma[i].view(-1, 1, 1, 1) * noise[k]
                g = _layer_gradients(ctx, noisy, s.target.select(i.tolist()))
                index = i.to(d1.device)
                d1.index_add_(0, index, g)
                d2.index_add_(0, index, g * g)
                d3.index_add_(0, index, g * g * g)
        d1, d2, d3 = d1 / m, d2 / m, d3 / m
        denom = 2 * d2 + s.activations.sum(dim=(2, 3), keepdim=True) * d3
        alpha = torch.where(denom != 0, d2 / torch.where(denom != 0, denom, 1), 0)
        return (alpha * torch.relu(d1)).sum(dim=(2, 3))


def _layer_gradients(ctx: Context, x: torch.Tensor, target: ResolvedTarget) -> torch.Tensor:
    """``d y_i / d A_i`` at the layer for the input ``x``, as ``(N, C, h, w)`` maps."""
    with (
        ctx.runner.graph_from(ctx.layer_module),
        ctx.runner.record({ctx.layer: ctx.layer_module}) as rec,
        torch.enable_grad(),
    ):
        scores = target(ctx.forward(x))
        acts = rec.output(ctx.layer)
        grads = CAMMethod._gradients(scores, acts, ctx.layer)
    return tokens_to_map(grads, ctx.model, ctx.layer)

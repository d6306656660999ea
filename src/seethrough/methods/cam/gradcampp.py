"""Grad-CAM++: higher-order weighting of positive gradients."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState


@register_method
class GradCAMPlusPlus(CAMMethod):
    """Positive gradients weighted per pixel by the paper's closed-form alpha.

    Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
    Convolutional Networks", WACV 2018. The paper explains ``Y = exp(y)``; for a network that is
    piecewise linear in ``A`` its higher derivatives are powers of ``g = dy/dA``, giving::

        alpha_c[i,j] = g^2 / (2 g^2 + sum_ab A_c[a,b] g^3)      (0 where the denominator is 0)
        w_c = sum_ij alpha_c[i,j] * ReLU(g_c[i,j])
        map = ReLU(sum_c w_c A_c)

    The factor ``exp(y)`` that multiplies every ``w_c`` of a sample (``dY/dA = exp(y) g``) is left
    out: it is positive and only rescales the map, and it overflows for large logits.
    """

    name = "gradcam++"
    title = "Grad-CAM++"
    rank = 30
    paper = "Chattopadhyay et al., WACV 2018"

    def weights(self, s: CAMState) -> torch.Tensor:
        """Alpha-weighted sum of positive gradients."""
        g2 = s.gradients.pow(2)
        g3 = s.gradients.pow(3)
        denom = 2 * g2 + s.activations.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1), 0)
        return (alpha * torch.relu(s.gradients)).sum(dim=(2, 3))

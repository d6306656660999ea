"""Grad-CAM: gradient-weighted class activation mapping."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState


@register_method
class GradCAM(CAMMethod):
    """Channels weighted by their spatially averaged gradient.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017. With ``Z = h * w``::

        w_c = 1/Z * sum_ij dy/dA_c[i, j]
        map = ReLU(sum_c w_c A_c)

    Example: ``explain(model, "cat.jpg", "gradcam", layer="layer4")``.
    """

    name = "gradcam"
    title = "Grad-CAM"
    rank = 20
    paper = "Selvaraju et al., ICCV 2017"

    def weights(self, s: CAMState) -> torch.Tensor:
        """Mean gradient per channel."""
        return s.gradients.mean(dim=(2, 3))

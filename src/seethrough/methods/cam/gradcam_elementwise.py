"""Grad-CAM element-wise: the ReLU taken per activation, before the sum over channels."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState


@register_method
class GradCAMElementWise(CAMMethod):
    """Each activation times its own gradient, rectified, summed over channels.

    The element-wise variant of Grad-CAM (Selvaraju et al., ICCV 2017) that pytorch-grad-cam
    ships as ``GradCAMElementWise``; it relates to HiResCAM (Draelos & Carin, 2020) as Layer-CAM
    relates to Grad-CAM: no spatial pooling, and the ReLU acts on each product::

        map = sum_c ReLU(dy/dA_c * A_c)

    so a negative product never cancels a positive one at the same position. ``raw`` is that sum
    (never negative); ``relu`` changes nothing.
    """

    name = "gradcam_elementwise"
    title = "Grad-CAM element-wise"
    rank = 65
    paper = "Selvaraju et al., ICCV 2017 (element-wise, as pytorch-grad-cam)"

    def combine(self, s: CAMState) -> torch.Tensor:
        """``sum_c ReLU(g_c * A_c)``."""
        return torch.relu(s.gradients * s.activations).sum(dim=1)

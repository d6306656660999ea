"""HiResCAM: element-wise gradient times activation."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState


@register_method
class HiResCAM(CAMMethod):
    """Gradient times activation, summed over channels, without spatial averaging.

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
    neural networks", 2020::

        map = ReLU(sum_c dy/dA_c * A_c)             (element-wise)

    For a GAP + linear head it equals CAM exactly (up to the 1/(h*w) of the pooling).
    """

    name = "hirescam"
    title = "HiResCAM"
    rank = 60
    paper = "Draelos & Carin, arXiv 2011.08891, 2020"

    def combine(self, s: CAMState) -> torch.Tensor:
        """Element-wise gradient * activation, summed over channels."""
        return (s.gradients * s.activations).sum(dim=1)

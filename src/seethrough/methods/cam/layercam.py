"""Layer-CAM: element-wise positive-gradient weighting."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState


@register_method
class LayerCAM(CAMMethod):
    """Each activation weighted by its own positive gradient.

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    IEEE TIP 2021::

        map = ReLU(sum_c ReLU(dy/dA_c) * A_c)       (element-wise, no spatial pooling)

    Works at shallow layers too, where pooled weights blur the map.
    """

    name = "layercam"
    title = "Layer-CAM"
    rank = 50
    paper = "Jiang et al., IEEE TIP 2021"

    def combine(self, s: CAMState) -> torch.Tensor:
        """Element-wise ReLU(gradient) * activation, summed over channels."""
        return (torch.relu(s.gradients) * s.activations).sum(dim=1)

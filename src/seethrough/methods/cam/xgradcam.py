"""XGrad-CAM: axiom-based gradient weighting."""

from __future__ import annotations

import torch

from ...registry import register_method
from .base import CAMMethod, CAMState


@register_method
class XGradCAM(CAMMethod):
    """Gradients weighted by the normalised activations.

    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    BMVC 2020::

        w_c = sum_ij (A_c[i,j] / sum_ab A_c[a,b]) * dy/dA_c[i,j]
        map = ReLU(sum_c w_c A_c)

    A channel whose activations sum to 0 gets weight 0.
    """

    name = "xgradcam"
    title = "XGrad-CAM"
    rank = 40
    paper = "Fu et al., BMVC 2020"

    def weights(self, s: CAMState) -> torch.Tensor:
        """Activation-normalised gradient sum per channel."""
        total = s.activations.sum(dim=(2, 3))
        num = (s.activations * s.gradients).sum(dim=(2, 3))
        return torch.where(total != 0, num / torch.where(total != 0, total, 1), 0)

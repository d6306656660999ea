"""CAM: class activation mapping from the weights of a global-average-pool + linear head."""

from __future__ import annotations

import torch
from torch import nn

from ...core.heads import gap_linear_head, linear_modules
from ...errors import MethodNotApplicableError
from ...registry import register_method
from ..base import Context
from .base import CAMMethod, CAMState


@register_method
class CAM(CAMMethod):
    """Channels weighted by the classifier's weights of the target class.

    Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016. For a model
    whose logits are ``y_k = sum_c W[k, c] * mean_ij A_c[i, j] + b_k``::

        map = ReLU(sum_c W[target, c] * A_c)

    Needs no gradient: one forward pass. The layer must feed global average pooling and one
    linear layer (checked on the actual forward pass; otherwise a ``MethodNotApplicableError``
    suggests Grad-CAM, which equals CAM up to the factor ``1/(h*w)`` on such models).
    """

    name = "cam"
    title = "CAM"
    rank = 10
    paper = "Zhou et al., CVPR 2016"
    needs_gradients = False
    record_inputs = True

    def recorded_modules(self, ctx: Context) -> dict[str, nn.Module]:
        """The layer and every linear layer (one of them must be the head)."""
        return {**linear_modules(ctx.named_modules), ctx.layer: ctx.layer_module}

    def weights(self, s: CAMState) -> torch.Tensor:
        """Rows of the head's weight matrix for the target classes."""
        if any(c is None for c in s.target.classes):
            raise MethodNotApplicableError(
                "CAM explains class indices only; use gradcam for a custom target"
            )
        head = self._head(s)
        classes = torch.tensor(s.target.classes, device=head.weight.device)
        return head.weight.detach()[classes].to(s.activations.dtype)

    def _head(self, s: CAMState) -> nn.Linear:
        head = gap_linear_head(s.recorder, s.activations, s.output)
        if head is None:
            raise MethodNotApplicableError(
                f"CAM needs layer '{s.ctx.layer}' to feed global average pooling and one linear "
                "classifier, which this model does not do: use gradcam (equal to CAM on such "
                "models)"
            )
        return head

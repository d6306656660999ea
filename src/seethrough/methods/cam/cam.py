"""CAM: class activation mapping from the weights of a global-average-pool + linear head."""

from __future__ import annotations

import torch
from torch import nn

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
    paper = "Zhou et al., CVPR 2016"
    needs_gradients = False
    record_inputs = True

    def recorded_modules(self, ctx: Context) -> dict[str, nn.Module]:
        """The layer and every linear layer (one of them must be the head)."""
        linears = {n: m for n, m in ctx.model.named_modules() if isinstance(m, nn.Linear)}
        return {**linears, ctx.layer: ctx.layer_module}

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
        pooled = s.activations.mean(dim=(2, 3))
        tol = 1e-4 * float(pooled.abs().max()) + 1e-8
        for name, module in reversed(list(self.recorded_modules(s.ctx).items())):
            head_in = s.recorder.inputs.get(name)
            if (
                isinstance(module, nn.Linear)
                and head_in is not None
                and head_in.shape == pooled.shape
                and torch.allclose(head_in.detach(), pooled, rtol=1e-4, atol=tol)
            ):
                return module
        raise MethodNotApplicableError(
            f"CAM needs layer '{s.ctx.layer}' to feed global average pooling and one linear "
            "classifier, which this model does not do: use gradcam (equal to CAM on such models)"
        )

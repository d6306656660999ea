"""Saliency: the gradient of the target score with respect to the input."""

from __future__ import annotations

import torch

from ...core.targets import ResolvedTarget
from ...registry import Param, register_method
from ..base import Context
from .base import Attribution, GradientMethod, input_gradients, reduce_param


def cross_entropy(output: torch.Tensor, target: ResolvedTarget) -> torch.Tensor:
    """``-log softmax(output)_c`` of each sample's target class."""
    return -target(output.log_softmax(dim=1))


@register_method
class Saliency(GradientMethod):
    """Gradient of the class score (or of the loss) w.r.t. the input pixels.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR workshop 2014::

        a = d y_c / d x                    (objective="score")
        a = d (-log softmax(y)_c) / d x    (objective="loss": the cross-entropy of class c)
        map[h, w] = max_c |a[c, h, w]|      (reduce="abs_max", the paper's choice)

    One forward and one backward pass.
    """

    name = "saliency"
    title = "Saliency"
    rank = 10
    paper = "Simonyan et al., ICLR workshop 2014"
    params = (
        reduce_param("abs_max"),
        Param(
            "objective",
            "score",
            "differentiate the target 'score' (logit) or the cross-entropy 'loss' of its class",
            str,
            choices=("score", "loss"),
        ),
    )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """One forward and one backward pass from the objective to the input."""
        objective = cross_entropy if self.config["objective"] == "loss" else None
        grads, output, target = input_gradients(ctx, ctx.x, target, objective)
        return Attribution(grads, output, target)

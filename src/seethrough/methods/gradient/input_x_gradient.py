"""Input x gradient: the gradient of the target score times the input."""

from __future__ import annotations

from ...core.targets import ResolvedTarget
from ...registry import register_method
from ..base import Context
from .base import Attribution, GradientMethod, input_gradients, reduce_param

__all__ = ["InputXGradient"]


@register_method
class InputXGradient(GradientMethod):
    """The input times the gradient of the target score with respect to it.

    Shrikumar et al., "Not Just a Black Box: Learning Important Features Through Propagating
    Activation Differences", arXiv 2016; Ancona et al., "Towards better understanding of
    gradient-based attribution methods for deep neural networks", ICLR 2018::

        a = x * d y_c / d x

    For a ReLU network without biases it equals DeepLIFT (Rescale) and LRP-epsilon (epsilon ->
    0) from a zero baseline, and its sum is ``y_c(x)`` (Ancona et al., section 3). The input is
    in model-input space: a normalised pixel at the dataset mean counts as 0. One forward and
    one backward pass. It passes the cascading randomization check (Adebayo et al., NeurIPS
    2018): its maps decorrelate as the upper layers are randomised.
    """

    name = "input_x_gradient"
    title = "Input x Gradient"
    rank = 15
    paper = "Shrikumar et al., 2016; Ancona et al., ICLR 2018"
    params = (reduce_param("sum"),)

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """One forward and one backward pass, times the input."""
        grads, output, target = input_gradients(ctx, ctx.x, target)
        return Attribution(grads.mul_(ctx.x), output, target)

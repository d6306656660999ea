"""Deconvnet: the gradient with every ReLU passing back the positive part of its gradient."""

from __future__ import annotations

from ...registry import register_method
from .guided_backprop import GuidedBackprop

__all__ = ["Deconvnet"]


@register_method
class Deconvnet(GuidedBackprop):
    """Backpropagation where each ReLU passes back only the positive part of the gradient.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, in the
    form of Springenberg et al. (ICLR workshop 2015, figure 1). At each ReLU ``y = max(x, 0)``
    the backward pass becomes::

        dL/dx = ReLU(dL/dy)        (the forward mask [x > 0] is ignored)

    (the same for ``nn.ReLU6``). Guided backpropagation applies both this rule and the forward
    mask; the plain gradient applies only the mask. The ReLU modules are swapped for the call
    and restored afterwards, also after an exception; ReLUs called as functions are not seen.

    Sanity: like guided backpropagation, the deconvnet largely fails the cascading
    randomization check (Adebayo et al., NeurIPS 2018): without the forward masks its map
    depends little on the upper weights, and keeps much of its form (rank correlation about
    0.5 to 0.7 on small CNNs) when the classifier and the last convolution are re-initialised,
    where saliency's falls to 0.3 or less.
    """

    name = "deconvnet"
    title = "Deconvnet"
    rank = 25
    paper = "Zeiler & Fergus, ECCV 2014"
    deconv = True

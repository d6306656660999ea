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

    Sanity (cascading randomization, Adebayo et al., NeurIPS 2018): without the forward masks
    its map depends little on the upper weights. On small random-weight CNNs it keeps much of
    its form (rank correlation 0.5 to 0.7) when the classifier and the last convolution are
    re-initialised, as guided backprop does, where saliency's falls to 0.3 or less; on the
    trained synthetic-digits CNN it loses about as much as saliency (0.7 after the classifier,
    0.35 to 0.45 through the middle layers), while guided backprop keeps 0.66 to 0.94 until
    the middle blocks are re-initialised.
    """

    name = "deconvnet"
    title = "Deconvnet"
    rank = 25
    paper = "Zeiler & Fergus, ECCV 2014"
    deconv = True

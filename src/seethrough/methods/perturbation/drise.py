"""D-RISE: RISE for a detector's box."""

from __future__ import annotations

from dataclasses import replace

import torch

from ...core.detection import (
    box_iou,
    packed_boxes,
    packed_class_scores,
    packed_labels,
    packed_scores,
    packed_valid,
)
from ...core.targets import ResolvedTarget
from ...errors import MethodNotApplicableError
from ...registry import register_method
from ...targets import BoxScore
from ..base import Context
from .base import Sample
from .rise import Rise

__all__ = ["DRise", "detection_similarity"]


def detection_similarity(output: torch.Tensor, target: BoxScore) -> torch.Tensor:
    """The D-RISE weight ``(B,)`` of each packed output ``(B, M, 7 + C)`` for a target box.

    For the target ``d_t = (L_t, P_t)`` (its corners, a one-hot vector of its class) and each
    detection ``d_j = (L_j, O_j, P_j)``::

        s(d_t, d_j) = IoU(L_t, L_j) * cos(P_t, P_j) * O_j,    weight = max_j s(d_t, d_j)

    With per-class scores, ``P_j = softmax(class_scores_j)`` and ``O_j = 1`` (a two-stage
    detector has no objectness of its final boxes), so ``cos = P_j[c] / |P_j|``; without, ``P_j``
    is the one-hot vector of the box's label and ``O_j`` its confidence. An output without
    detections weighs 0.
    """
    boxes = packed_boxes(output)
    iou = box_iou(boxes, target.box.to(boxes.device))
    classes = packed_class_scores(output)
    if classes is not None:
        probs = classes.double().softmax(dim=-1)
        similarity = probs[..., target.label] / probs.norm(dim=-1).clamp_min(1e-12)
        objectness = torch.ones_like(similarity)
    else:
        similarity = (packed_labels(output) == target.label).double()
        objectness = packed_scores(output).double()
    s = iou.double() * similarity * objectness
    s = torch.where(packed_valid(output), s, torch.zeros_like(s))
    return s.amax(dim=1) if s.shape[1] else s.new_zeros(s.shape[0])


@register_method
class DRise(Rise):
    """RISE's random masks weighted by how well each masked image still finds the box.

    Petsiuk et al., "Black-box Explanations for Object Detectors via Saliency Maps", CVPR
    2021. Masks ``M_i`` as in RISE (a ``cells x cells`` grid kept with probability ``p_keep``,
    upsampled and shifted); the weight of a mask is the similarity of the explained box with
    the best matching detection of the masked image (:func:`detection_similarity`)::

        map = 1 / (N p_keep) * sum_i max_j s(d_t, d_j(x * M_i + hidden * (1 - M_i))) M_i

    Applies to detectors only: the target is a :class:`~seethrough.targets.Box` (by default
    the top box).
    """

    name = "drise"
    title = "D-RISE"
    rank = 45
    tasks = ("detection",)
    paper = "Petsiuk et al., CVPR 2021"
    params = (replace(Rise.params[0], default=1000), *Rise.params[1:])

    def _sample(
        self,
        ctx: Context,
        i: int,
        output: torch.Tensor,
        target: ResolvedTarget,
        hide: float | str | torch.Tensor,
    ) -> Sample:
        """RISE's sample, scored by the D-RISE similarity of the image's box."""
        fn = target.fns[i]
        if not isinstance(fn, BoxScore):
            raise MethodNotApplicableError(
                "drise explains a detector's box: use it on a detector (its target a Box); for "
                "a classifier or a segmenter use rise"
            )
        sample = super()._sample(ctx, i, output, target, hide)
        sample.score = lambda out: detection_similarity(out, fn)[:, None]
        return sample

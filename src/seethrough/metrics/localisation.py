"""Localisation: does the map point at the object a ground-truth mask marks?

Maps are any real-valued ``(H, W)`` arrays. The ground truth (``mask``) is a region at the
map's resolution, given as any of (see :func:`~seethrough.metrics.base.as_region`):

- an ``(H, W)`` array whose non-zero pixels are the object (an instance or a class mask);
- a box ``(x0, y0, x1, y1)`` in pixels: the pixels whose centres lie in it (per box: "is
  the map of this box inside it");
- a :class:`~seethrough.targets.Box` with corners or a :class:`~seethrough.targets.Mask`
  with ``pixels``.

Without ``mask``, an explanation of a detector's box or a segmenter's class mask is scored
against the region it explains (:attr:`Explanation.region <seethrough.Explanation.region>`):
the box is its own ground truth ("does the map of box k lie in box k"). For a map without
its explanation, :func:`~seethrough.metrics.explained_region` gives the pixels of the box a
target binds to (the predicted box) or of the class's predicted mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InvalidParameterError
from ..registry import register_metric
from .base import as_map, rank_pixels, truth_region

__all__ = ["iou", "iou_sweep", "IoUSweep", "binarize", "pointing_game", "energy_pointing_game"]


def _normalised(a: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] (a constant map becomes all zeros)."""
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def binarize(
    saliency: Any, *, threshold: float | None = None, top: float | None = None
) -> np.ndarray:
    """The salient region of a map as a boolean array.

    Args:
        saliency: ``(H, W)`` map.
        threshold: keep pixels whose min-max normalised value is ``>= threshold`` (in [0, 1]).
        top: keep the ``top`` fraction of pixels with the highest values (in (0, 1]); ties at
            the cut are broken by position so exactly ``round(top * H * W)`` pixels are kept.

    Exactly one of ``threshold`` and ``top`` may be given; with neither, ``threshold=0.5``.
    """
    a = as_map(saliency)
    if threshold is not None and top is not None:
        raise InvalidParameterError("give either threshold or top, not both")
    if top is not None:
        if not 0 < top <= 1:
            raise InvalidParameterError(f"top={top}: a fraction of pixels in (0, 1]")
        return rank_pixels(a) < max(1, int(round(top * a.size)))
    threshold = 0.5 if threshold is None else threshold
    if not 0 <= threshold <= 1:
        raise InvalidParameterError(
            f"threshold={threshold}: a value in [0, 1] of the normalised map"
        )
    return _normalised(a) >= threshold


def _iou(region: np.ndarray, mask: np.ndarray) -> float:
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 1.0


@register_metric(
    title="IoU",
    category="localisation",
    higher_is_better=True,
    needs=("mask",),
    range=(0, 1),
    rank=10,
)
def iou(
    saliency: Any, mask: Any = None, *, threshold: float | None = None, top: float | None = None
) -> float:
    """Intersection over union of the thresholded map and the ground-truth mask.

    ``|R & M| / |R | M|`` where ``R`` is :func:`binarize` ``(saliency, threshold, top)``: by
    value (pixels at or above ``threshold`` of the min-max normalised map, default 0.5) or by
    rank (the ``top`` fraction of pixels). 1 for a map that is high exactly on the object, 0 for
    one high only off it. An empty mask and an empty region give 1.

    Example:
        >>> m = np.zeros((4, 4)); m[:2] = 1
        >>> iou(m, m), iou(1 - m, m)
        (1.0, 0.0)
    """
    a = as_map(saliency)
    return _iou(binarize(a, threshold=threshold, top=top), truth_region(saliency, mask, a.shape))


@dataclass
class IoUSweep:
    """IoU at each threshold of a sweep.

    Attributes:
        by: ``"value"`` (thresholds on the normalised map) or ``"top"`` (fractions of pixels).
        thresholds: the thresholds, ascending.
        ious: IoU at each threshold.
    """

    by: str
    thresholds: np.ndarray
    ious: np.ndarray

    @property
    def best(self) -> float:
        """The highest IoU of the sweep."""
        return float(self.ious.max())

    @property
    def best_threshold(self) -> float:
        """The threshold that gives :attr:`best` (the lowest one on ties)."""
        return float(self.thresholds[int(self.ious.argmax())])

    @property
    def mean(self) -> float:
        """Mean IoU over the sweep: a threshold-free summary."""
        return float(self.ious.mean())


@register_metric(
    title="IoU sweep",
    category="localisation",
    higher_is_better=True,
    needs=("mask",),
    range=(0, 1),
    rank=20,
)
def iou_sweep(
    saliency: Any, mask: Any = None, thresholds: Any = None, *, by: str = "value"
) -> IoUSweep:
    """:func:`iou` at many thresholds: a threshold-free view of localisation.

    ``IoU(t)`` for ``t`` in ``thresholds`` (default 0.05, 0.10, ..., 0.95) on the min-max
    normalised map (``by="value"``) or as fractions of the most salient pixels (``by="top"``).
    The result keeps every value; ``.mean`` (the number tables report), ``.best`` and
    ``.best_threshold`` summarise it.
    """
    a = as_map(saliency)
    m = truth_region(saliency, mask, a.shape)
    if by not in ("value", "top"):
        raise InvalidParameterError(f"by={by!r}: choose 'value' or 'top'")
    ts = np.arange(1, 20) / 20 if thresholds is None else np.sort(np.asarray(thresholds, float))
    if ts.size == 0:
        raise InvalidParameterError("thresholds is empty")
    key = "threshold" if by == "value" else "top"
    ious = np.array([_iou(binarize(a, **{key: float(t)}), m) for t in ts])
    return IoUSweep(by, ts, ious)


@register_metric(
    title="Pointing game",
    category="localisation",
    higher_is_better=True,
    needs=("mask",),
    range=(0, 1),
    rank=30,
)
def pointing_game(saliency: Any, mask: Any = None, *, tolerance: float = 0) -> float:
    """1 if the map's maximum falls on the object (within ``tolerance`` pixels), else 0.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016: a hit when the
    most salient pixel lies within ``tolerance`` pixels (Euclidean) of the mask (the paper uses
    15 px at 224x224). When several pixels share the maximum, the result is the fraction of
    them that hit, so a constant map scores the mask's (dilated) share of the image, not 1.
    """
    a = as_map(saliency)
    m = truth_region(saliency, mask, a.shape)
    if tolerance < 0:
        raise InvalidParameterError(f"tolerance={tolerance}: must be >= 0")
    if not m.any():
        raise InvalidParameterError("the mask is empty: the pointing game needs an object")
    if tolerance > 0:
        m = ndimage.distance_transform_edt(~m) <= tolerance
    peaks = a == a.max()
    return float(m[peaks].mean())


@register_metric(
    title="Energy pointing game",
    category="localisation",
    higher_is_better=True,
    needs=("mask",),
    range=(0, 1),
    rank=40,
)
def energy_pointing_game(saliency: Any, mask: Any = None) -> float:
    """Share of the map's positive energy that falls on the object.

    Wang et al., "Score-CAM", CVPR-W 2020: ``sum(S+ * M) / sum(S+)`` with ``S+ = max(S, 0)``
    (negative evidence is not energy). 1 when all of it is on the object; the object's area
    share for a constant map. A map with no positive value gives 0.
    """
    a = np.clip(as_map(saliency), 0, None)
    m = truth_region(saliency, mask, a.shape)
    total = a.sum()
    return float(a[m].sum() / total) if total > 0 else 0.0

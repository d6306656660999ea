"""Views of per-segment weights (LIME, Kernel SHAP): top superpixels and signed regions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidParameterError
from .overlay import boundaries, to_rgb_uint8

__all__ = ["paint_segments", "top_segments", "signed_segments", "POSITIVE_COLOR", "NEGATIVE_COLOR"]

POSITIVE_COLOR = (0, 160, 60)  # regions that push toward the explained class
NEGATIVE_COLOR = (215, 40, 40)  # regions that push toward other classes


def _checked(
    segments: ArrayLike, weights: ArrayLike
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    seg = np.asarray(segments)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise InvalidParameterError(
            f"segments must be an integer (H, W) array, got {seg.dtype} {seg.shape}"
        )
    if seg.size and (seg.min() < 0 or seg.max() >= len(w)):
        raise InvalidParameterError(
            f"segments hold labels 0..{seg.max()} but there are {len(w)} weights"
        )
    return seg.astype(np.intp), w


def paint_segments(segments: ArrayLike, weights: ArrayLike) -> NDArray[np.float32]:
    """The map whose pixels carry their segment's weight: ``map[h, w] = weights[segments[h, w]]``."""
    seg, w = _checked(segments, weights)
    return w[seg].astype(np.float32)


def top_segments(
    image: ArrayLike,
    segments: ArrayLike,
    weights: ArrayLike,
    k: int = 5,
    *,
    dim: float = 0.25,
    color: Sequence[int] = (255, 255, 0),
) -> NDArray[np.uint8]:
    """The ``k`` segments with the largest positive weights shown, the rest dimmed, with borders.

    Args:
        image: the image the segments label.
        segments: integer labels ``(H, W)``.
        weights: one weight per label.
        k: how many segments to show (fewer if fewer are positive).
        dim: brightness factor of the hidden part, in [0, 1].
        color: border colour of the shown segments.
    """
    if not 0.0 <= dim <= 1.0:
        raise InvalidParameterError(f"dim must be in [0, 1], got {dim}")
    seg, w = _checked(segments, weights)
    rgb = to_rgb_uint8(image)
    order = [i for i in np.argsort(-w, kind="stable")[: max(k, 0)] if w[i] > 0]
    keep = np.isin(seg, order)
    out = np.where(keep[..., None], rgb, np.rint(rgb * dim)).astype(np.uint8)
    shown = np.where(keep, seg + 1, 0)  # 0 = background: borders are drawn inside shown segments
    return boundaries(out, shown, color=color, mode="inner") if order else out


def signed_segments(
    image: ArrayLike,
    segments: ArrayLike,
    weights: ArrayLike,
    *,
    alpha: float = 0.55,
    positive: Sequence[int] = POSITIVE_COLOR,
    negative: Sequence[int] = NEGATIVE_COLOR,
    border: Sequence[int] | None = (255, 255, 255),
) -> NDArray[np.uint8]:
    """Segments tinted by sign: ``positive`` colour toward the class, ``negative`` against it.

    The tint's opacity is ``alpha * |w| / max|w|``, so strong segments stand out and weights
    near zero leave the image as it is.
    """
    seg, w = _checked(segments, weights)
    rgb = to_rgb_uint8(image).astype(np.float64)
    scale = np.abs(w).max()
    strength = (np.abs(w) / scale if scale > 0 else np.zeros_like(w))[seg][..., None] * alpha
    tint = np.where(
        (w[seg] >= 0)[..., None], np.asarray(positive, float), np.asarray(negative, float)
    )
    out = np.clip(np.rint((1 - strength) * rgb + strength * tint), 0, 255).astype(np.uint8)
    return boundaries(out, seg + 1, color=border, mode="inner") if border is not None else out

"""Features for perturbation methods: superpixels (SLIC, quickshift, Felzenszwalb) or a grid."""

from __future__ import annotations

import math

import numpy as np

from ...core.kinds import Segments
from ...errors import InvalidParameterError
from ...registry import Param

__all__ = ["segment", "SEGMENTERS", "SEGMENTS", "SEGMENT_PARAMS"]

SEGMENTERS = ("slic", "quickshift", "felzenszwalb", "grid")

SEGMENTS = Segments.of(SEGMENTERS)
"""The kind of ``segments``: one of :data:`SEGMENTERS` or an integer label array ``(H, W)``."""

_SEGMENTS_PARAM = Param(
    "segments",
    "slic",
    "features to perturb: 'slic', 'quickshift', 'felzenszwalb', 'grid', or an integer "
    "(H, W) label array at input resolution",
    SEGMENTS,
)

SEGMENT_PARAMS = (
    _SEGMENTS_PARAM,
    Param("n_segments", 50, "about how many superpixels (slic) or grid cells (grid)", int, min=1),
    Param(
        "compactness", 10.0, "slic: colour vs space trade-off (higher = more square)", float, min=0
    ),
    Param("kernel_size", 4.0, "quickshift: width of the Gaussian density kernel", float, min=0),
    Param("scale", 100.0, "felzenszwalb: higher = larger segments", float, min=0),
)


def segment(
    image: np.ndarray,
    segments: object = "slic",
    *,
    n_segments: int = 50,
    compactness: float = 10.0,
    kernel_size: float = 4.0,
    scale: float = 100.0,
) -> np.ndarray:
    """Label the image's pixels with features ``0..F-1`` (int32, ``(H, W)``).

    Args:
        image: uint8 ``(H, W, 3)``, the image the model sees.
        segments: a segmenter name or integer labels ``(H, W)`` (numpy array, tensor or nested
            list; relabelled to ``0..F-1``), checked by :data:`SEGMENTS`.
        n_segments: target number of superpixels (slic) or cells (grid: a square-ish grid of
            about that many cells).
        compactness: SLIC compactness.
        kernel_size: quickshift kernel size (max_dist 200, ratio 0.2, as the ``lime`` package).
        scale: Felzenszwalb scale (sigma 0.8, min_size 20).
    """
    h, w = image.shape[:2]
    segments = _SEGMENTS_PARAM.validate(segments)
    if isinstance(segments, np.ndarray):
        labels = segments
        if labels.shape != (h, w):
            raise InvalidParameterError(
                f"segments array must be integer labels of shape {(h, w)} (the model input), got "
                f"{labels.dtype} {labels.shape}"
            )
    elif segments == "grid":
        labels = _grid(h, w, n_segments)
    elif segments == "slic":
        from skimage.segmentation import slic

        labels = slic(image, n_segments=n_segments, compactness=compactness, start_label=0)
    elif segments == "quickshift":
        from skimage.segmentation import quickshift

        labels = quickshift(image, kernel_size=kernel_size, max_dist=200, ratio=0.2, rng=0)
    elif segments == "felzenszwalb":
        from skimage.segmentation import felzenszwalb

        labels = felzenszwalb(image, scale=scale, sigma=0.8, min_size=20)
    else:  # a name in SEGMENTERS without a branch here
        raise NotImplementedError(f"segmenter {segments!r}")
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(h, w).astype(np.int32)


def _grid(h: int, w: int, n: int) -> np.ndarray:
    """About ``n`` rectangular cells, as square as the aspect ratio allows."""
    rows = max(1, round(math.sqrt(n * h / w)))
    cols = max(1, round(n / rows))
    r = np.minimum(np.arange(h) * rows // h, rows - 1)
    c = np.minimum(np.arange(w) * cols // w, cols - 1)
    return r[:, None] * cols + c[None, :]

"""Blend explanation heatmaps and segment borders onto images.

Pure functions: NumPy in, ``uint8`` RGB out. Nothing here imports torch or pyplot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Colormap
from numpy.typing import ArrayLike, NDArray
from skimage.segmentation import find_boundaries

from ..errors import InvalidImageError, InvalidParameterError, suggest
from .color import (
    NORMALIZE_MODES,
    NormalizeMode,
    _as_real_map,
    _check_real,
    colorize,
    normalize_map,
    resize_map,
)

__all__ = ["overlay", "boundaries", "to_rgb_uint8", "DEFAULT_CMAP", "DEFAULT_SIGNED_CMAP"]

DEFAULT_CMAP = "jet"
DEFAULT_SIGNED_CMAP = "RdBu_r"
BOUNDARY_MODES: tuple[str, ...] = ("thick", "inner", "outer")


def to_rgb_uint8(image: ArrayLike) -> NDArray[np.uint8]:
    """Convert an image array to ``uint8`` RGB ``(H, W, 3)``.

    Accepts ``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA (alpha is
    dropped). ``uint8`` is used as is; other integer types must lie in ``[0, 255]``; floats must
    lie in ``[0, 1]`` and are scaled by 255 and rounded.

    Args:
        image: The image array.

    Returns:
        A new ``uint8`` array ``(H, W, 3)``.

    Raises:
        InvalidImageError: for a bad shape, dtype, non-finite or out-of-range values.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., :3] if arr.shape[2] != 1 else np.repeat(arr, 3, axis=2)
    elif arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    else:
        raise InvalidImageError(
            f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {arr.shape}."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError(f"image is empty (shape {arr.shape}).")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind in "iu":
        if arr.min() < 0 or arr.max() > 255:
            raise InvalidImageError(
                f"integer image values must lie in [0, 255], got [{arr.min()}, {arr.max()}]."
            )
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InvalidImageError("image contains NaN or infinite values.")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidImageError(
                f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
                "pass uint8 for 0-255 images."
            )
        return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise InvalidImageError(f"image dtype {arr.dtype} is not supported (use uint8 or float).")


def _resolve_scale(
    *,
    signed: bool,
    normalize: str,
    cmap: str | Colormap | None,
    vmin: float | None,
    vmax: float | None,
) -> tuple[str, str | Colormap, float, float]:
    """Decide the normalization mode, colormap and colour limits of an overlay.

    Returns ``(mode, cmap, vmin, vmax)``. Shared by :func:`overlay` and the figure code so that
    colorbars always describe exactly the colours drawn.
    """
    if normalize not in NORMALIZE_MODES:
        raise InvalidParameterError(
            f"Unknown normalize mode {normalize!r}; expected one of {', '.join(NORMALIZE_MODES)}."
            + suggest(str(normalize), NORMALIZE_MODES)
        )
    if not isinstance(signed, (bool, np.bool_)):
        raise InvalidParameterError(f"signed must be True or False, got {signed!r}.")
    mode = "signed" if signed and normalize != "none" else normalize
    centred = bool(signed) or mode == "signed"
    if cmap is None:
        cmap = DEFAULT_SIGNED_CMAP if centred else DEFAULT_CMAP
    lo = (-1.0 if centred else 0.0) if vmin is None else _check_real(vmin, "vmin")
    hi = 1.0 if vmax is None else _check_real(vmax, "vmax")
    if lo >= hi:
        raise InvalidParameterError(f"vmin must be < vmax, got vmin={lo}, vmax={hi}.")
    return mode, cmap, lo, hi


def overlay(
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    cmap: str | Colormap | None = None,
    alpha: float = 0.5,
    normalize: NormalizeMode | str = "minmax",
    signed: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
) -> NDArray[np.uint8]:
    """Blend a colour-mapped heatmap onto an image.

    The heatmap is bilinearly resized to the image size if needed (:func:`resize_map`), then
    normalized (:func:`normalize_map`), colour-mapped (:func:`colorize`) and blended per pixel as
    ``round((1 - alpha) * image + alpha * colour)``. So ``alpha=0`` returns the image unchanged
    and ``alpha=1`` the pure colormap colours.

    Args:
        image: ``uint8`` ``(H, W, 3)``; also ``(H, W)`` grey, RGBA, or float in ``[0, 1]``
            (see :func:`to_rgb_uint8`).
        heatmap: Real-valued 2-D map ``(h, w)``, any range.
        cmap: Colormap name or object. ``None`` (default) means ``"jet"``, or ``"RdBu_r"`` when
            ``signed=True``.
        alpha: Heatmap opacity in ``[0, 1]``.
        normalize: Normalization mode (``"minmax"``, ``"abs"``, ``"signed"``, ``"none"``). With
            ``"none"`` the values are used as given and clipped to ``[vmin, vmax]``.
        signed: Treat the map as signed evidence: normalize with ``"signed"`` (unless
            ``normalize="none"``) and centre the colour scale at 0, so a 0 value gets the
            colormap's middle colour.
        vmin: Colour-scale lower limit on the normalized map; default 0 (``-1`` when signed or
            ``normalize="signed"``).
        vmax: Colour-scale upper limit on the normalized map; default 1.

    Returns:
        A new ``uint8`` array ``(H, W, 3)``.

    Raises:
        InvalidParameterError: for a bad alpha, colormap, mode, limits or heatmap.
        InvalidImageError: for an image that cannot be converted.
    """
    alpha = _check_real(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise InvalidParameterError(f"alpha must lie in [0, 1], got {alpha}.")
    mode, cmap, lo, hi = _resolve_scale(
        signed=signed, normalize=normalize, cmap=cmap, vmin=vmin, vmax=vmax
    )
    rgb = to_rgb_uint8(image)
    hm = _as_real_map(heatmap, name="heatmap", ndim=2)
    if hm.shape != rgb.shape[:2]:
        hm = resize_map(hm, rgb.shape[:2]).astype(np.float64)
    norm = normalize_map(hm, mode)
    colour = colorize(norm, cmap, vmin=lo, vmax=hi)
    if alpha == 0.0:
        return rgb.copy()
    if alpha == 1.0:
        return colour
    blended = (1.0 - alpha) * rgb.astype(np.float64) + alpha * colour.astype(np.float64)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def boundaries(
    image: ArrayLike,
    segments: ArrayLike,
    color: Sequence[int] = (255, 255, 0),
    *,
    mode: str = "thick",
) -> NDArray[np.uint8]:
    """Draw the borders between labelled segments (e.g. superpixels) onto an image.

    Border pixels are found with ``skimage.segmentation.find_boundaries(segments, mode=mode)``
    and painted ``color``; all other pixels keep the image's value.

    Args:
        image: Image accepted by :func:`to_rgb_uint8`, ``(H, W, ...)``.
        segments: Integer label array ``(H, W)``, one label per segment.
        color: RGB border colour, three integers in ``[0, 255]``.
        mode: ``find_boundaries`` mode: ``"thick"`` (default; pixels on both sides of a border),
            ``"inner"`` or ``"outer"`` (see scikit-image; they differ only next to label 0).

    Returns:
        A new ``uint8`` array ``(H, W, 3)``.

    Raises:
        InvalidParameterError: for bad segments, a shape mismatch, a bad colour or mode.
        InvalidImageError: for an image that cannot be converted.
    """
    rgb = to_rgb_uint8(image)
    seg = np.asarray(segments)
    if seg.dtype.kind not in "biu":
        raise InvalidParameterError(f"segments must be an integer label array, got {seg.dtype}.")
    if seg.shape != rgb.shape[:2]:
        raise InvalidParameterError(
            f"segments shape {seg.shape} does not match image shape {rgb.shape[:2]}."
        )
    if mode not in BOUNDARY_MODES:
        raise InvalidParameterError(
            f"Unknown boundary mode {mode!r}; expected one of {', '.join(BOUNDARY_MODES)}."
            + suggest(str(mode), BOUNDARY_MODES)
        )
    try:
        col = [int(c) for c in color]
        valid = len(col) == 3 and all(
            c == o and 0 <= c <= 255 for c, o in zip(col, color, strict=True)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InvalidParameterError(f"color must be three integers in [0, 255], got {color!r}.")
    mask = find_boundaries(seg, mode=mode)
    out = rgb.copy()
    out[mask] = np.asarray(col, dtype=np.uint8)
    return out

"""Value normalization, colormapping and resizing of 2-D explanation maps.

Pure functions: NumPy in, NumPy out, no global state. Nothing here imports torch or pyplot.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Literal

import matplotlib
import numpy as np
from matplotlib.colors import Colormap
from numpy.typing import ArrayLike, NDArray
from skimage.transform import resize as _sk_resize

from ..errors import InvalidParameterError, suggest

__all__ = [
    "NormalizeMode",
    "NORMALIZE_MODES",
    "normalize_map",
    "colorize",
    "resize_map",
    "get_cmap",
]

NormalizeMode = Literal["minmax", "abs", "signed", "none"]
NORMALIZE_MODES: tuple[str, ...] = ("minmax", "abs", "signed", "none")


def _as_real_map(
    m: ArrayLike, *, name: str = "map", ndim: int | None = None
) -> NDArray[np.float64]:
    """Return ``m`` as a finite float64 array, raising InvalidParameterError otherwise."""
    try:
        arr = np.asarray(m)
    except Exception as exc:  # e.g. ragged nested lists
        raise InvalidParameterError(f"{name} cannot be converted to an array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise InvalidParameterError(f"{name} must hold real numbers, got dtype {arr.dtype}.")
    if arr.size == 0:
        raise InvalidParameterError(f"{name} is empty (shape {arr.shape}).")
    if ndim is not None and arr.ndim != ndim:
        raise InvalidParameterError(f"{name} must be {ndim}-D, got shape {arr.shape}.")
    out = arr.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        n_bad = int((~np.isfinite(out)).sum())
        raise InvalidParameterError(f"{name} contains {n_bad} NaN or infinite value(s).")
    return out


def _check_real(value: object, name: str) -> float:
    """Return ``value`` as a finite float, raising InvalidParameterError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.integer, np.floating)):
        raise InvalidParameterError(f"{name} must be a real number, got {value!r}.")
    out = float(value)  # type: ignore[arg-type]
    if not np.isfinite(out):
        raise InvalidParameterError(f"{name} must be finite, got {value!r}.")
    return out


def get_cmap(cmap: str | Colormap) -> Colormap:
    """Look up a matplotlib colormap by name (or pass a :class:`Colormap` through).

    Args:
        cmap: A registered colormap name such as ``"jet"``, ``"viridis"`` or ``"RdBu_r"``, or a
            colormap object.

    Returns:
        The colormap object (a copy owned by the caller for names).

    Raises:
        InvalidParameterError: if the name is not a registered colormap.
    """
    if isinstance(cmap, Colormap):
        return cmap
    if not isinstance(cmap, str):
        raise InvalidParameterError(f"cmap must be a colormap name, got {cmap!r}.")
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise InvalidParameterError(
            f"Unknown colormap {cmap!r}." + suggest(cmap, list(matplotlib.colormaps))
        ) from None


def normalize_map(
    m: ArrayLike, mode: NormalizeMode | str = "minmax", eps: float = 1e-12
) -> NDArray[np.float32]:
    """Rescale an explanation map for display.

    Args:
        m: Real-valued map of any shape (usually ``(H, W)``).
        mode: ``"minmax"`` maps ``[min, max]`` linearly onto ``[0, 1]``; ``"abs"`` gives
            ``|m| / max|m|`` in ``[0, 1]``; ``"signed"`` gives ``m / max|m|`` in ``[-1, 1]``
            (0 stays 0, signs are kept); ``"none"`` returns the values unchanged (as float32).
        eps: Degeneracy threshold. If the denominator (``max - min`` for ``"minmax"``, ``max|m|``
            for ``"abs"``/``"signed"``) is ``<= eps`` the result is all zeros instead of NaN/inf.
            So a constant map gives zeros under ``"minmax"`` and an all-zero map gives zeros
            under every mode. (A constant *non-zero* map under ``"abs"``/``"signed"`` gives
            ``1`` or ``-1``: its sign is information.)

    Returns:
        A new float32 array of the same shape.

    Raises:
        InvalidParameterError: for an unknown mode, a negative/non-finite ``eps``, an empty or
            non-real array, or NaN/infinite values.
    """
    if mode not in NORMALIZE_MODES:
        raise InvalidParameterError(
            f"Unknown normalize mode {mode!r}; expected one of {', '.join(NORMALIZE_MODES)}."
            + suggest(str(mode), NORMALIZE_MODES)
        )
    eps = _check_real(eps, "eps")
    if eps < 0:
        raise InvalidParameterError(f"eps must be >= 0, got {eps}.")
    arr = _as_real_map(m)

    if mode == "none":
        return arr.astype(np.float32)
    if mode == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
        span = hi - lo
        if span <= eps:
            return np.zeros(arr.shape, dtype=np.float32)
        return np.clip((arr - lo) / span, 0.0, 1.0).astype(np.float32)

    peak = float(np.abs(arr).max())
    if peak <= eps:
        return np.zeros(arr.shape, dtype=np.float32)
    if mode == "abs":
        return np.clip(np.abs(arr) / peak, 0.0, 1.0).astype(np.float32)
    return np.clip(arr / peak, -1.0, 1.0).astype(np.float32)  # "signed"


def colorize(
    m: ArrayLike,
    cmap: str | Colormap = "jet",
    vmin: float | None = None,
    vmax: float | None = None,
) -> NDArray[np.uint8]:
    """Map a 2-D array of values to RGB colours with a matplotlib colormap.

    Values are mapped linearly so that ``vmin`` gets the colormap's first colour and ``vmax`` its
    last; values outside ``[vmin, vmax]`` are clipped. A ``None`` limit is taken from the data
    (like ``imshow``). If the resulting range is empty (constant data, no limits) every pixel gets
    the first colour.

    Args:
        m: Real-valued 2-D array ``(H, W)``.
        cmap: Colormap name (``matplotlib.colormaps``) or object.
        vmin: Value mapped to the bottom colour; ``None`` means ``m.min()``.
        vmax: Value mapped to the top colour; ``None`` means ``m.max()``.

    Returns:
        ``uint8`` array ``(H, W, 3)`` (alpha dropped, channels rounded from ``[0, 1]`` floats).

    Raises:
        InvalidParameterError: for an unknown colormap, a non-2-D or non-finite map, or
            ``vmin >= vmax`` when both are given.
    """
    colormap = get_cmap(cmap)
    arr = _as_real_map(m, name="map", ndim=2)
    lo = float(arr.min()) if vmin is None else _check_real(vmin, "vmin")
    hi = float(arr.max()) if vmax is None else _check_real(vmax, "vmax")
    if vmin is not None and vmax is not None and lo >= hi:
        raise InvalidParameterError(f"vmin must be < vmax, got vmin={lo}, vmax={hi}.")
    span = hi - lo
    if span > 0:
        t = np.clip((arr - lo) / span, 0.0, 1.0)
    else:
        t = np.zeros_like(arr)
    rgba = np.asarray(colormap(t), dtype=np.float64)
    return np.clip(np.rint(rgba[..., :3] * 255.0), 0, 255).astype(np.uint8)


def resize_map(m: ArrayLike, shape: Sequence[int]) -> NDArray[np.float32]:
    """Bilinearly resize a 2-D map to ``shape = (H, W)``.

    Uses ``skimage.transform.resize`` with ``order=1``, no anti-aliasing, ``preserve_range`` and
    edge padding, so values never leave the input's ``[min, max]`` range and a constant map stays
    constant. Pixel centres are aligned (no half-pixel shift of a peak).

    Args:
        m: Real-valued 2-D map ``(h, w)``.
        shape: Target ``(H, W)``, both positive integers.

    Returns:
        float32 array of shape ``(H, W)`` (a copy even when no resize is needed).

    Raises:
        InvalidParameterError: for a non-2-D or non-finite map or a bad target shape.
    """
    arr = _as_real_map(m, name="map", ndim=2)
    try:
        target = tuple(int(s) for s in shape)
        ok = len(target) == 2 and all(t == s for t, s in zip(target, shape, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok or any(t <= 0 for t in target):
        raise InvalidParameterError(f"shape must be two positive integers (H, W), got {shape!r}.")
    if arr.shape == target:
        return arr.astype(np.float32)
    out = _sk_resize(arr, target, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    return np.asarray(out, dtype=np.float32)

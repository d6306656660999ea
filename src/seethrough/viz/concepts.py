"""Views of concept and feature-map explanations (DFF, feature maps).

Pure functions: NumPy in, ``uint8`` images or :class:`matplotlib.figure.Figure` out (object
oriented API, Agg backend, no pyplot), so they are safe to call from several threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidParameterError
from .color import _as_real_map, _check_real, colorize, normalize_map, resize_map
from .figures import Panel, grid_figure
from .overlay import to_rgb_uint8

__all__ = [
    "concept_colors",
    "concept_entries",
    "concept_overlay",
    "concept_legend",
    "feature_grid",
]

Colors = Sequence[str | Sequence[float]] | None


def concept_colors(k: int, colors: Colors = None) -> NDArray[np.float64]:
    """``k`` distinct RGB colours in [0, 1] ``(k, 3)``: ``colors`` (any matplotlib colour specs,
    cycled) or the qualitative palette tab10 (tab20 beyond 10 concepts)."""
    if colors is None:
        colors = matplotlib.colormaps["tab10" if k <= 10 else "tab20"].colors
    specs = list(colors)
    if not specs:
        raise InvalidParameterError("colors must hold at least one colour")
    try:
        return np.array([to_rgb(specs[i % len(specs)]) for i in range(k)], dtype=np.float64)
    except ValueError as exc:
        raise InvalidParameterError(f"bad colour in colors: {exc}") from None


def _concept_stack(concepts: ArrayLike, shape: tuple[int, int]) -> NDArray[np.float64]:
    """Heatmaps ``(K, h, w)`` resized to ``shape``, negatives clipped, each scaled to max 1."""
    maps = _as_real_map(concepts, name="concepts", ndim=3)
    resized = np.stack([resize_map(np.clip(m, 0, None), shape) for m in maps]).astype(np.float64)
    peak = resized.max(axis=(1, 2), keepdims=True)
    return np.divide(resized, peak, out=np.zeros_like(resized), where=peak > 0)


def concept_overlay(
    image: ArrayLike, concepts: ArrayLike, *, alpha: float = 0.6, colors: Colors = None
) -> NDArray[np.uint8]:
    """Paint each pixel with the colour of its strongest concept, as strong as that concept.

    With ``c_k`` the heatmaps upsampled to the image and scaled to a maximum of 1 per concept,
    ``k* = argmax_k c_k`` and ``s = c_k*`` at each pixel::

        out = (1 - alpha * s) * image + alpha * s * colour[k*]

    Args:
        image: the image ``(H, W, 3)`` (anything :func:`~seethrough.viz.overlay.to_rgb_uint8`
            accepts).
        concepts: non-negative concept heatmaps ``(K, h, w)`` (e.g. DFF's ``concepts`` extra).
        alpha: opacity of the colours where a concept is at its maximum, in [0, 1].
        colors: one colour per concept (matplotlib specs); default tab10.

    Returns:
        uint8 ``(H, W, 3)``.
    """
    base = to_rgb_uint8(image).astype(np.float64)
    a = _check_real(alpha, "alpha")
    if not 0.0 <= a <= 1.0:
        raise InvalidParameterError(f"alpha must lie in [0, 1], got {alpha!r}")
    maps = _concept_stack(concepts, base.shape[:2])
    palette = concept_colors(len(maps), colors) * 255.0
    strongest = maps.argmax(axis=0)
    weight = a * np.take_along_axis(maps, strongest[None], axis=0)[0][..., None]
    out = (1.0 - weight) * base + weight * palette[strongest]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def concept_entries(
    labels: ArrayLike | None,
    scores: ArrayLike | None,
    colors: Colors = None,
    *,
    k: int | None = None,
) -> list[tuple[str, str]]:
    """One ``(colour, text)`` pair per concept: its colour as ``#rrggbb`` and its top categories
    with their scores (``"1: tabby 0.35, tiger cat 0.20"``), for legends and tables.

    Args:
        labels: category names ``(K, top)`` (DFF's ``concept_labels``), or ``None`` when the
            model has no classifier head to name the concepts (then give ``k``).
        scores: their probabilities ``(K, top)`` (DFF's ``concept_scores``), or ``None``.
        colors: the colours given to :func:`concept_overlay`; default tab10.
        k: the number of concepts when there are no labels (``"concept 1"``, ...).
    """
    if labels is None or scores is None:
        if k is None:
            raise InvalidParameterError("concept_entries needs labels and scores, or k")
        palette = concept_colors(k, colors)
        return [(to_hex(palette[i]), f"{i + 1}: concept {i + 1}") for i in range(k)]
    names = np.asarray(labels, dtype=np.str_)
    values = _as_real_map(scores, name="scores", ndim=2)
    if names.ndim != 2 or names.shape != values.shape:
        raise InvalidParameterError(
            f"labels {names.shape} and scores {values.shape} must both be (K, top)"
        )
    palette = concept_colors(names.shape[0], colors)
    return [
        (
            to_hex(palette[i]),
            f"{i + 1}: " + ", ".join(f"{n} {s:.2f}" for n, s in zip(row, vals, strict=True)),
        )
        for i, (row, vals) in enumerate(zip(names, values, strict=True))
    ]


def concept_legend(
    labels: ArrayLike, scores: ArrayLike, colors: Colors = None, *, title: str = "Concepts"
) -> Figure:
    """One row per concept: its colour swatch, then its top categories with their scores.

    Args:
        labels: category names ``(K, top)`` (DFF's ``concept_labels``).
        scores: their probabilities ``(K, top)`` (DFF's ``concept_scores``).
        colors: the colours given to :func:`concept_overlay`; default tab10.
        title: figure title ("" for none).

    Returns:
        A :class:`~matplotlib.figure.Figure` whose height grows with K.
    """
    entries = concept_entries(labels, scores, colors)
    k = len(entries)
    fig = Figure(figsize=(6.0, 0.45 * k + (0.5 if title else 0.2)), layout="tight")
    ax = fig.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(k, 0)
    ax.set_axis_off()
    for i, (colour, text) in enumerate(entries):
        ax.add_patch(Rectangle((0.05, i + 0.15), 0.6, 0.7, color=colour))
        ax.text(0.9, i + 0.5, text, va="center", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    return fig


def feature_grid(
    channels: ArrayLike,
    indices: ArrayLike,
    image: ArrayLike | None = None,
    *,
    ncols: int | None = None,
    cmap: str = "viridis",
) -> Figure:
    """A grid of channel maps ``(k, h, w)``, each titled with its channel index.

    Args:
        channels: the maps (the ``channels`` extra of ``feature_maps``).
        indices: their channel indices ``(k,)``.
        image: optional image ``(H, W, 3)``: each map is then drawn over it (upsampled).
        ncols: columns; default ``ceil(sqrt(k))``.
        cmap: colormap of the maps.

    Returns:
        A :class:`~matplotlib.figure.Figure` (see :func:`~seethrough.viz.figures.grid_figure`).
    """
    maps = _as_real_map(channels, name="channels", ndim=3)
    idx = np.asarray(indices).reshape(-1)
    if len(idx) != len(maps):
        raise InvalidParameterError(f"{len(maps)} channel maps but {len(idx)} indices")
    panels = [
        Panel(image, f"channel {int(i)}", heatmap=m, cmap=cmap)
        if image is not None
        else Panel(colorize(normalize_map(m), cmap, 0.0, 1.0), f"channel {int(i)}")
        for m, i in zip(maps, idx, strict=True)
    ]
    cols = ncols if ncols is not None else math.ceil(math.sqrt(len(panels)))
    return grid_figure(panels, ncols=cols, tile_size=1.8)

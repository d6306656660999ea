"""Matplotlib figures for explanations: panel grids, prediction bars, colorbar legends.

Everything uses the object-oriented API (:class:`matplotlib.figure.Figure` rendered by the Agg
backend), never ``pyplot``'s global figure manager, so figures can be built concurrently (one
figure per thread) in a web server. Nothing here calls ``plt.show``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from seethrough.errors import InvalidParameterError
from seethrough.viz.color import _check_real, get_cmap
from seethrough.viz.overlay import _resolve_scale, overlay, to_rgb_uint8

__all__ = [
    "Panel",
    "grid_figure",
    "prediction_bar_chart",
    "colorbar_legend",
    "curve_figure",
    "figure_to_array",
    "save_figure",
    "save_png",
]

SIGNED_LOW_LABEL = "against"
SIGNED_HIGH_LABEL = "toward the class"
_TITLE_LINE_INCHES = 0.22
_COLORBAR_INCHES = 0.75


@dataclass
class Panel:
    """One tile of a :func:`grid_figure`.

    Attributes:
        image: The image (anything :func:`~seethrough.viz.overlay.to_rgb_uint8` accepts).
        title: Tile title; may span several lines (``"Grad-CAM\\nEgyptian cat 0.54\\n0.031 s"``).
        heatmap: Optional 2-D explanation map; when given the tile shows
            ``overlay(image, heatmap, ...)`` instead of the bare image.
        cmap: Colormap; ``None`` means ``"jet"`` (``"RdBu_r"`` when ``signed``).
        alpha: Heatmap opacity in ``[0, 1]``.
        signed: Signed map: normalize with ``"signed"`` and centre the colours at 0.
        colorbar: Draw a colorbar under the tile (needs ``heatmap``).
        vmin: Colour-scale lower limit on the normalized map (default 0, or -1 when signed).
        vmax: Colour-scale upper limit on the normalized map (default 1).
        normalize: Normalization mode passed to :func:`~seethrough.viz.overlay.overlay`.
    """

    image: np.ndarray
    title: str = ""
    heatmap: np.ndarray | None = None
    cmap: str | Colormap | None = None
    alpha: float = 0.5
    signed: bool = False
    colorbar: bool = False
    vmin: float | None = None
    vmax: float | None = None
    normalize: str = "minmax"

    def render(self) -> NDArray[np.uint8]:
        """Return the tile's pixels: the overlay if a heatmap is set, else the image (uint8 RGB)."""
        if self.heatmap is None:
            return to_rgb_uint8(self.image)
        return overlay(
            self.image,
            self.heatmap,
            cmap=self.cmap,
            alpha=self.alpha,
            normalize=self.normalize,
            signed=self.signed,
            vmin=self.vmin,
            vmax=self.vmax,
        )


def _fmt(v: float) -> str:
    return f"{v:+.3g}" if v < 0 else f"{v:.3g}"


def _add_colorbar(fig: Figure, ax: Any, panel: Panel) -> Colorbar:
    """Attach a horizontal colorbar describing ``panel``'s colour scale under ``ax``."""
    mode, cmap, lo, hi = _resolve_scale(
        signed=panel.signed,
        normalize=panel.normalize,
        cmap=panel.cmap,
        vmin=panel.vmin,
        vmax=panel.vmax,
    )
    mappable = ScalarMappable(norm=Normalize(vmin=lo, vmax=hi), cmap=get_cmap(cmap))
    cbar = fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.06, pad=0.03)
    centred = panel.signed or mode == "signed"
    if centred and lo < 0.0 < hi:
        cbar.set_ticks([lo, 0.0, hi])
        cbar.set_ticklabels(
            [f"{_fmt(lo)}\n{SIGNED_LOW_LABEL}", "0", f"{_fmt(hi)}\n{SIGNED_HIGH_LABEL}"]
        )
    else:
        mid = (lo + hi) / 2.0
        cbar.set_ticks([lo, mid, hi])
        cbar.set_ticklabels([_fmt(lo), _fmt(mid), _fmt(hi)])
    what = "raw value" if mode == "none" else f"{mode}-normalized"
    cbar.set_label(f"{what} [{_fmt(lo)}, {_fmt(hi)}]", fontsize=7)
    cbar.ax.tick_params(labelsize=7)
    return cbar


def grid_figure(
    panels: Sequence[Panel],
    *,
    ncols: int | None = None,
    tile_size: float = 3.2,
    suptitle: str | None = None,
) -> Figure:
    """Lay out image/overlay tiles in a grid, left to right then top to bottom.

    Args:
        panels: The tiles (at least one).
        ncols: Number of columns; default ``min(len(panels), 4)``.
        tile_size: Width (and image height) of one tile in inches.
        suptitle: Optional title over the whole figure.

    Returns:
        A :class:`~matplotlib.figure.Figure` with tight layout and all axes off. Its size grows
        with the number of columns/rows, the number of title lines and the presence of colorbars.

    Raises:
        InvalidParameterError: for no panels, a non-Panel item, or a bad ``ncols``/``tile_size``.
    """
    panels = list(panels)
    if not panels:
        raise InvalidParameterError("grid_figure needs at least one panel.")
    for i, p in enumerate(panels):
        if not isinstance(p, Panel):
            raise InvalidParameterError(f"panels[{i}] is {type(p).__name__}, expected Panel.")
        if p.colorbar and p.heatmap is None:
            raise InvalidParameterError(f"panels[{i}] asks for a colorbar but has no heatmap.")
    n = len(panels)
    if ncols is None:
        ncols = min(n, 4)
    elif isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise InvalidParameterError(f"ncols must be a positive integer, got {ncols!r}.")
    ncols = int(min(ncols, n))
    tile = _check_real(tile_size, "tile_size")
    if tile <= 0:
        raise InvalidParameterError(f"tile_size must be > 0, got {tile_size!r}.")
    nrows = math.ceil(n / ncols)

    # Render every tile before building the figure so a bad panel fails fast.
    tiles = [p.render() for p in panels]

    title_lines = max((len(p.title.splitlines()) for p in panels if p.title), default=0)
    extra = title_lines * _TITLE_LINE_INCHES + (
        _COLORBAR_INCHES if any(p.colorbar for p in panels) else 0.0
    )
    height = nrows * (tile + extra) + (0.4 if suptitle else 0.0)
    fig = Figure(figsize=(ncols * tile, height), layout="tight")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for idx, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if idx >= n:
            continue
        panel = panels[idx]
        ax.imshow(tiles[idx], interpolation="nearest")
        if panel.title:
            ax.set_title(panel.title, fontsize=9)
        if panel.colorbar:
            _add_colorbar(fig, ax, panel)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def _as_prediction(item: Any, i: int) -> tuple[str, float]:
    if hasattr(item, "label") and hasattr(item, "probability"):
        label, prob = item.label, item.probability
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        label, prob = item[0], item[1]
    else:
        raise InvalidParameterError(
            f"predictions[{i}] must be a (label, probability) pair or have .label and "
            f".probability, got {item!r}."
        )
    try:
        p = float(prob)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"predictions[{i}] probability is not a number: {prob!r}."
        ) from None
    if not math.isfinite(p) or p < -1e-6 or p > 1.0 + 1e-6:
        raise InvalidParameterError(
            f"predictions[{i}] probability must lie in [0, 1], got {prob!r}."
        )
    return str(label), min(max(p, 0.0), 1.0)


def prediction_bar_chart(
    predictions: Iterable[Any] | Mapping[str, float], *, title: str = "Top predictions"
) -> Figure:
    """Horizontal bar chart of class probabilities, the most probable class on top.

    Args:
        predictions: ``(label, probability)`` pairs, objects with ``.label`` and
            ``.probability`` (such as the library's ``Prediction(index, label, probability)``
            NamedTuple), or a ``{label: probability}`` mapping. They are sorted by probability,
            highest first.
        title: Chart title.

    Returns:
        A :class:`~matplotlib.figure.Figure`; the x axis spans 0 to 1 and each bar ends with its
        probability written as a number.

    Raises:
        InvalidParameterError: for no predictions, a malformed item or a probability outside
            ``[0, 1]``.
    """
    items = list(predictions.items()) if isinstance(predictions, Mapping) else list(predictions)
    if not items:
        raise InvalidParameterError("prediction_bar_chart needs at least one prediction.")
    rows = [_as_prediction(item, i) for i, item in enumerate(items)]
    rows.sort(key=lambda r: r[1], reverse=True)
    labels = [r[0] for r in rows]
    probs = [r[1] for r in rows]

    fig = Figure(figsize=(5.5, 0.9 + 0.38 * len(rows)), layout="tight")
    ax = fig.subplots()
    y = np.arange(len(rows))
    ax.barh(y, probs, color="#4C72B0", height=0.7)
    ax.set_yticks(y, labels=labels, fontsize=9)
    ax.invert_yaxis()  # first (highest) row at the top
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("probability")
    for yi, p in zip(y, probs, strict=True):
        text = f"{p:.3f}"
        if p > 0.85:  # no room after the bar inside [0, 1]: write it inside, right-aligned
            ax.text(p - 0.01, yi, text, va="center", ha="right", fontsize=8, color="white")
        else:
            ax.text(p + 0.01, yi, text, va="center", ha="left", fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    return fig


def colorbar_legend(
    cmap: str | Colormap = "jet",
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
    label: str = "",
    ticks_labels: Sequence[str] | Sequence[tuple[float, str]] | None = None,
    orientation: str = "horizontal",
) -> Figure:
    """A standalone colorbar strip, e.g. to show once beside a grid of overlays.

    Args:
        cmap: Colormap name or object.
        vmin: Value at the bar's low end.
        vmax: Value at the bar's high end.
        label: Axis label of the bar.
        ticks_labels: ``None`` for matplotlib's numeric ticks; a sequence of strings, spread
            evenly from ``vmin`` to ``vmax`` (e.g. ``["against", "neutral", "toward"]``); or
            ``(value, text)`` pairs placing each text at its value.
        orientation: ``"horizontal"`` or ``"vertical"``.

    Returns:
        A small :class:`~matplotlib.figure.Figure` holding only the colorbar.

    Raises:
        InvalidParameterError: for an unknown colormap or orientation, ``vmin >= vmax``, or
            malformed ``ticks_labels``.
    """
    colormap = get_cmap(cmap)
    lo, hi = _check_real(vmin, "vmin"), _check_real(vmax, "vmax")
    if lo >= hi:
        raise InvalidParameterError(f"vmin must be < vmax, got vmin={lo}, vmax={hi}.")
    if orientation not in ("horizontal", "vertical"):
        raise InvalidParameterError(
            f"orientation must be 'horizontal' or 'vertical', got {orientation!r}."
        )
    ticks: list[float] | None = None
    texts: list[str] | None = None
    if ticks_labels is not None:
        tl = list(ticks_labels)
        if not tl:
            raise InvalidParameterError("ticks_labels must not be empty (use None for defaults).")
        if all(isinstance(t, str) for t in tl):
            texts = [str(t) for t in tl]
            ticks = [lo] if len(texts) == 1 else list(np.linspace(lo, hi, len(texts)))
        elif all(isinstance(t, Sequence) and not isinstance(t, str) and len(t) == 2 for t in tl):
            ticks = [_check_real(t[0], "tick value") for t in tl]  # type: ignore[index]
            texts = [str(t[1]) for t in tl]  # type: ignore[index]
        else:
            raise InvalidParameterError(
                "ticks_labels must be a sequence of strings or of (value, text) pairs."
            )

    figsize = (5.0, 0.9) if orientation == "horizontal" else (1.3, 4.0)
    fig = Figure(figsize=figsize, layout="tight")
    cax = fig.subplots()
    mappable = ScalarMappable(norm=Normalize(vmin=lo, vmax=hi), cmap=colormap)
    cbar = fig.colorbar(mappable, cax=cax, orientation=orientation)
    if ticks is not None and texts is not None:
        cbar.set_ticks(ticks)
        cbar.set_ticklabels(texts)
    if label:
        cbar.set_label(label)
    return fig


def curve_figure(
    values: ArrayLike, *, title: str = "", xlabel: str = "step", ylabel: str = "loss"
) -> Figure:
    """A small line plot of one curve (e.g. feature inversion's loss per step), log-scaled in y
    when the values are positive and span more than two decades.

    Raises:
        InvalidParameterError: for an empty curve or one with no finite value.
    """
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = y[np.isfinite(y)]
    if finite.size == 0:
        raise InvalidParameterError("curve_figure needs at least one finite value.")
    fig = Figure(figsize=(5.0, 2.4), layout="tight")
    ax = fig.subplots()
    ax.plot(np.arange(1, len(y) + 1), y, color="#4C72B0", linewidth=1.5)
    if finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def figure_to_array(fig: Figure, dpi: float = 100) -> NDArray[np.uint8]:
    """Render a figure with the Agg backend to a ``uint8`` RGB array ``(H, W, 3)``.

    The figure is not modified (no canvas swap, no dpi change), so this is safe for figures
    from any backend.

    Args:
        fig: The figure.
        dpi: Dots per inch; the array is about ``figsize * dpi`` pixels.

    Returns:
        A new ``uint8`` array ``(H, W, 3)``.

    Raises:
        InvalidParameterError: for a non-Figure or a non-positive dpi.
    """
    if not isinstance(fig, Figure):
        raise InvalidParameterError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    d = _check_real(dpi, "dpi")
    if d <= 0:
        raise InvalidParameterError(f"dpi must be > 0, got {dpi!r}.")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=d)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _prepare_path(path: str | PathLike[str]) -> Path:
    p = Path(path)
    if p.exists() and p.is_dir():
        raise InvalidParameterError(f"{p} is a directory, expected a file path.")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def save_figure(fig: Figure, path: str | PathLike[str], dpi: float = 120) -> Path:
    """Save a figure as PNG (Agg), creating parent directories.

    Args:
        fig: The figure.
        path: Destination file; written as PNG whatever its suffix.
        dpi: Dots per inch.

    Returns:
        The path written.

    Raises:
        InvalidParameterError: for a non-Figure, a non-positive dpi or a directory path.
    """
    if not isinstance(fig, Figure):
        raise InvalidParameterError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    d = _check_real(dpi, "dpi")
    if d <= 0:
        raise InvalidParameterError(f"dpi must be > 0, got {dpi!r}.")
    p = _prepare_path(path)
    fig.savefig(p, format="png", dpi=d)
    return p


def save_png(array: ArrayLike, path: str | PathLike[str]) -> Path:
    """Write an image array as an RGB PNG with PIL, creating parent directories.

    Args:
        array: ``uint8`` ``(H, W, 3)`` (also anything :func:`~seethrough.viz.overlay.to_rgb_uint8`
            accepts: grey, RGBA with alpha dropped, float in ``[0, 1]``).
        path: Destination file; written as PNG whatever its suffix.

    Returns:
        The path written.

    Raises:
        InvalidImageError: for an array that is not an image.
        InvalidParameterError: for a directory path.
    """
    rgb = to_rgb_uint8(array)
    p = _prepare_path(path)
    Image.fromarray(rgb).save(p, format="PNG")
    return p

"""Matplotlib figures for explanations: panel grids, prediction bars, colorbar legends.

Everything uses the object-oriented API (:class:`matplotlib.figure.Figure` rendered by the Agg
backend), never ``pyplot``'s global figure manager, so figures can be built concurrently (one
figure per thread) in a web server. Nothing here calls ``plt.show``.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from .._io import write_atomically
from ..errors import InvalidParameterError
from .color import _check_real, get_cmap
from .overlay import _resolve_scale, overlay, to_rgb_uint8

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
_MARGIN_INCHES = 0.06  # white space between a grid's content and each edge
_GAP_INCHES = 0.16  # between two tiles, across and down
_BELOW_GAP_INCHES = 0.06  # between an image and its colour bar or legend
_COLORBAR_INCHES = 0.12  # the colour bar's height
_TITLE_POINTS = 9
_TITLE_PAD_POINTS = 4.0
_SMALL_POINTS = 7


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
        legend: Optional ``(colour, text)`` pairs (any matplotlib colour) drawn as a legend
            under the tile, one swatch and line of text each (e.g. DFF's concepts).
        region: Optional box or mask drawn as an outline over the tile (anything
            :func:`~seethrough.viz.detection.draw_region` takes: an explanation's ``region``).
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
    legend: Sequence[tuple[Any, str]] | None = None
    region: Any = None

    def render(self) -> NDArray[np.uint8]:
        """Return the tile's pixels: the overlay if a heatmap is set, else the image (uint8 RGB),
        with the region's outline on top."""
        pixels = self._pixels()
        if self.region is None:
            return pixels
        from .detection import draw_region

        return draw_region(pixels, self.region)

    def _pixels(self) -> NDArray[np.uint8]:
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


def _add_colorbar(fig: Figure, cax: Any, panel: Panel) -> Colorbar:
    """Draw a horizontal colorbar describing ``panel``'s colour scale in ``cax``.

    The end labels are aligned to the bar's ends (not centred on them), so they stay within
    the tile's width.
    """
    mode, cmap, lo, hi = _resolve_scale(
        signed=panel.signed,
        normalize=panel.normalize,
        cmap=panel.cmap,
        vmin=panel.vmin,
        vmax=panel.vmax,
    )
    mappable = ScalarMappable(norm=Normalize(vmin=lo, vmax=hi), cmap=get_cmap(cmap))
    cbar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
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
    cbar.set_label(f"{what} [{_fmt(lo)}, {_fmt(hi)}]", fontsize=_SMALL_POINTS)
    cbar.ax.tick_params(labelsize=_SMALL_POINTS)
    labels = cbar.ax.get_xticklabels()
    labels[0].set_horizontalalignment("left")
    labels[-1].set_horizontalalignment("right")
    return cbar


def _add_legend(ax: Any, panel: Panel, below: float, tile: float) -> Any:
    """Draw ``panel.legend`` (colour swatch, text) under ``ax``, ``below`` inches under its
    bottom edge, its text wrapped to about the tile's width."""
    assert panel.legend is not None
    chars = max(16, int(tile * 72 / (0.55 * _SMALL_POINTS)) - 4)
    handles = [
        Patch(facecolor=colour, edgecolor="none", label=textwrap.fill(str(text), chars))
        for colour, text in panel.legend
    ]
    height = ax.get_position().height * ax.figure.get_figheight()
    return ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.0, -below / height),
        fontsize=_SMALL_POINTS,
        frameon=False,
        borderpad=0.0,
        borderaxespad=0.0,
        handlelength=1.2,
        handletextpad=0.5,
        labelspacing=0.3,
    )


@dataclass
class _Cell:
    """One laid-out tile: its image axes, colour bar, size and what sticks out of it (inches)."""

    ax: Any
    cax: Any | None
    width: float
    height: float
    left: float = 0.0
    right: float = 0.0
    top: float = 0.0
    bottom: float = 0.0

    def place(self, fig: Figure, x: float, y: float) -> None:
        """Put the image's bottom left corner at ``(x, y)`` inches (its colour bar follows)."""
        fw, fh = fig.get_size_inches()
        self.ax.set_position((x / fw, y / fh, self.width / fw, self.height / fh))
        if self.cax is not None:
            cy = y - _BELOW_GAP_INCHES - _COLORBAR_INCHES
            self.cax.set_position((x / fw, cy / fh, self.width / fw, _COLORBAR_INCHES / fh))

    def measure(self, fig: Figure, renderer: Any) -> None:
        """Read how far titles, colour bar and legend reach beyond the image, in inches."""
        dpi = fig.dpi
        box = self.ax.get_window_extent(renderer)
        parts = [self.ax.get_tightbbox(renderer)]
        if self.cax is not None:
            parts.append(self.cax.get_tightbbox(renderer))
        x0 = min(p.x0 for p in parts if p is not None)
        x1 = max(p.x1 for p in parts if p is not None)
        y0 = min(p.y0 for p in parts if p is not None)
        y1 = max(p.y1 for p in parts if p is not None)
        self.left = max(0.0, (box.x0 - x0) / dpi)
        self.right = max(0.0, (x1 - box.x1) / dpi)
        self.bottom = max(0.0, (box.y0 - y0) / dpi)
        self.top = max(0.0, (y1 - box.y1) / dpi)


def grid_figure(
    panels: Sequence[Panel],
    *,
    ncols: int | None = None,
    tile_size: float = 3.2,
    suptitle: str | None = None,
) -> Figure:
    """Lay out image/overlay tiles in a grid, left to right then top to bottom.

    Every title, colour bar and legend is measured (Agg's text metrics) before the figure gets
    its size, so nothing is cut at the edges and no empty band is left: the content sits
    0.06 inch from each edge. The images of a row share their top edge (and, for
    images of one shape, their bottom edge), whether or not a tile has a colour bar or legend.

    Args:
        panels: The tiles (at least one).
        ncols: Number of columns; default ``min(len(panels), 4)``.
        tile_size: Width (and image height) of one tile in inches: an image fits a square of
            this side.
        suptitle: Optional title over the whole figure.

    Returns:
        A :class:`~matplotlib.figure.Figure` with all axes off, one image axes per panel (plus
        one per colour bar). Its size follows the columns, rows, titles, colour bars and legends.

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

    fig = Figure(figsize=(ncols * tile + 1.0, nrows * (tile + 1.0) + 1.0), layout="none")
    renderer = FigureCanvasAgg(fig).get_renderer()
    cells: list[_Cell] = []
    for panel, pixels in zip(panels, tiles, strict=True):
        h, w = pixels.shape[:2]
        scale = tile / max(h, w)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        ax.imshow(pixels, interpolation="nearest", aspect="auto")
        cax = fig.add_axes((0.0, 0.0, 1.0, 1.0)) if panel.colorbar else None
        cell = _Cell(ax, cax, w * scale, h * scale)
        cells.append(cell)
        cell.place(fig, 0.5, fig.get_figheight() / 2)  # where it is measured: size is what counts
        if panel.title:
            ax.set_title(panel.title, fontsize=_TITLE_POINTS, pad=_TITLE_PAD_POINTS, va="bottom")
        below = _BELOW_GAP_INCHES
        if cax is not None:
            _add_colorbar(fig, cax, panel)
            bar = cax.get_tightbbox(renderer)
            below += (ax.get_window_extent(renderer).y0 - bar.y0) / fig.dpi
        if panel.legend:
            _add_legend(ax, panel, below, tile)
        cell.measure(fig, renderer)

    rows = [cells[r * ncols : (r + 1) * ncols] for r in range(nrows)]
    columns = [cells[c::ncols] for c in range(ncols)]  # an image narrower than a tile is centred
    lefts = [max(0.0, *(x.left - (tile - x.width) / 2 for x in col)) for col in columns]
    rights = [max(0.0, *(x.right - (tile - x.width) / 2 for x in col)) for col in columns]
    xs = [_MARGIN_INCHES + lefts[0]]
    for c in range(1, ncols):
        xs.append(xs[-1] + tile + max(_GAP_INCHES, rights[c - 1] + lefts[c] + _GAP_INCHES / 2))
    width = xs[-1] + tile + rights[-1] + _MARGIN_INCHES

    tops = [max(c.top for c in row) for row in rows]
    images = [max(c.height for c in row) for row in rows]
    bottoms = [max(c.bottom for c in row) for row in rows]
    head = None
    head_height = 0.0
    if suptitle:
        head = fig.suptitle(suptitle, fontsize=11, va="top")
        head_height = head.get_window_extent(renderer).height / fig.dpi + _GAP_INCHES / 2
    height = (
        2 * _MARGIN_INCHES
        + head_height
        + sum(tops)
        + sum(images)
        + sum(bottoms)
        + _GAP_INCHES * (nrows - 1)
    )
    fig.set_size_inches(width, height)
    if head is not None:
        head.set_y(1.0 - _MARGIN_INCHES / height)
    y = height - _MARGIN_INCHES - head_height  # the top of the current row
    for r, row in enumerate(rows):
        image_top = y - tops[r]
        for c, cell in enumerate(row):
            cell.place(fig, xs[c] + (tile - cell.width) / 2, image_top - cell.height)
        y = image_top - images[r] - bottoms[r] - _GAP_INCHES
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
    """Save a figure as PNG (Agg), creating parent directories; written atomically.

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
    return write_atomically(p, lambda tmp: fig.savefig(tmp, format="png", dpi=d))


def save_png(array: ArrayLike, path: str | PathLike[str]) -> Path:
    """Write an image array as an RGB PNG with PIL, creating parent directories; atomically.

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
    return write_atomically(p, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))

"""The report of a recorded training run: what the model looked at, epoch by epoch.

:func:`build_report` reads a run directory (:func:`~seethrough.training.run.read_run`) and
writes, each file atomically::

    OUT/report.html                   one self-contained page (images embedded as base64)
    OUT/report/metrics.png            the metrics vs epoch, beside the user's loss and accuracy
    OUT/report/strip-00-NAME.gif      per probe: an animated strip, one frame per recorded epoch
    OUT/report/sheet-00-NAME.png      per probe: a contact sheet, methods x epochs

A *tile* is a map laid over its probe image with :func:`seethrough.viz.overlay` (``jet``,
``alpha=0.5``, the map's values as recorded: ``normalize="none"``, so a weak map stays weak),
enlarged by a whole factor to at least :data:`MIN_TILE` pixels (nearest neighbour: every
pixel of the overlay becomes a block; larger probes are shrunk to :data:`MAX_TILE`), with a
caption band below it. Frame ``k`` of a strip is
the probe image (captioned with the epoch) followed by each method's tile at the ``k``-th
recorded epoch; row ``r`` of a contact sheet is the probe image (captioned with method ``r``)
followed by that method's tile at every recorded epoch.

The "attention settled" marker is :meth:`~seethrough.training.run.Run.settled_epoch`: the first
epoch from which consecutive maps of the first method correlate above the run's threshold
(Pearson, mean over the probes) to the end of the run.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from .._io import write_atomically, write_text_atomically
from ..errors import InvalidParameterError, SeethroughError
from ..viz import overlay, save_figure, save_png, to_rgb_uint8
from .run import (
    COST_METRIC,
    DEFAULT_SETTLE,
    MASK_METRICS,
    PROBE_METRICS,
    Run,
    maps_path,
    read_run,
)

__all__ = [
    "REPORT_FILE",
    "REPORT_DIR",
    "MIN_TILE",
    "MAX_TILE",
    "CAPTION_HEIGHT",
    "Picture",
    "build_report",
    "picture",
    "tile",
    "strip_frames",
    "contact_sheet",
    "metrics_figure",
    "metric_panels",
    "epoch_pictures",
    "report_html",
]

REPORT_FILE = "report.html"
REPORT_DIR = "report"
MIN_TILE = 96
"""Least longer side, in pixels, of a tile's picture: smaller probes are enlarged by a whole
factor (nearest neighbour, so each pixel of the overlay becomes a block)."""
MAX_TILE = 160
"""Most longer side: larger probes are shrunk (bilinear), so a sheet of many epochs stays
readable."""
CAPTION_HEIGHT = 14
"""Height in pixels of the caption band under each tile."""
FRAME_MS = 600
"""How long a strip shows each epoch (the last one three times as long)."""
_ALPHA = 0.5
_CMAP = "jet"
_METRIC_TITLES = {
    "pointing_game": "pointing game",
    "iou": "IoU with the mask",
    "energy": "energy in the mask",
    "confidence": "confidence (probes)",
    "correct": "accuracy (probes)",
}
_FRACTIONS = frozenset(_METRIC_TITLES.values())
"""Panels whose values lie in [0, 1]: drawn on that whole scale, so a flat line reads as such."""

Picture = NDArray[np.uint8]
"""A tile's picture without its caption: ``(h, w, 3)`` uint8 at display size."""


def picture(image: NDArray[np.uint8], heatmap: NDArray[np.floating] | None = None) -> Picture:
    """``heatmap`` laid over ``image`` with :func:`seethrough.viz.overlay` (the map's values as
    recorded, in ``[0, 1]``: ``normalize="none"``), or the bare image when ``None``, brought to
    display size: a longer side under :data:`MIN_TILE` is enlarged by the whole factor
    ``ceil(MIN_TILE / side)``, one over :data:`MAX_TILE` shrunk to it."""
    shown = (
        to_rgb_uint8(image)
        if heatmap is None
        else overlay(image, heatmap, cmap=_CMAP, alpha=_ALPHA, normalize="none")
    )
    h, w = shown.shape[:2]
    longer = max(h, w)
    if longer > MAX_TILE:
        size = (max(1, round(w * MAX_TILE / longer)), max(1, round(h * MAX_TILE / longer)))
        return np.asarray(Image.fromarray(shown).resize(size, Image.Resampling.BILINEAR))
    s = math.ceil(MIN_TILE / longer)
    return np.repeat(np.repeat(shown, s, axis=0), s, axis=1)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=CAPTION_HEIGHT - 3)


def _fit(text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``text`` in ASCII (every font draws it), cut with "..." to fit ``width`` pixels."""
    text = text.encode("ascii", "replace").decode("ascii")
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def tile(shown: Picture, caption: str) -> NDArray[np.uint8]:
    """A tile: a :func:`picture` over a white band of :data:`CAPTION_HEIGHT` pixels with
    ``caption`` written in it."""
    band = Image.new("RGB", (shown.shape[1], CAPTION_HEIGHT), "white")
    font = _font()
    text = _fit(caption, shown.shape[1] - 4, font)
    ImageDraw.Draw(band).text((2, 1), text, fill="black", font=font)
    return np.concatenate([shown, np.asarray(band)], axis=0)


def strip_frames(
    probe: Picture,
    pictures: Sequence[Sequence[Picture]],
    epochs: Sequence[int],
    methods: Sequence[str],
) -> list[NDArray[np.uint8]]:
    """The frames of one probe's strip, one per epoch: the probe's picture captioned
    ``epoch E``, then ``pictures[k][j]`` (method ``j``'s map at ``epochs[k]``, see
    :func:`picture`) captioned with the method."""
    return [
        np.concatenate(
            [tile(probe, f"epoch {epoch}")]
            + [tile(p, m) for p, m in zip(row, methods, strict=True)],
            axis=1,
        )
        for epoch, row in zip(epochs, pictures, strict=True)
    ]


def contact_sheet(
    probe: Picture,
    pictures: Sequence[Sequence[Picture]],
    epochs: Sequence[int],
    methods: Sequence[str],
) -> NDArray[np.uint8]:
    """One probe's contact sheet: a row per method (the probe's picture captioned with the
    method, then ``pictures[k][j]`` captioned ``epoch E`` for each epoch): ``len(methods)``
    tiles down, ``1 + len(epochs)`` across."""
    rows = []
    for j, m in enumerate(methods):
        tiles = [tile(probe, m)]
        tiles += [tile(row[j], f"epoch {e}") for e, row in zip(epochs, pictures, strict=True)]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def _save_gif(frames: Sequence[NDArray[np.uint8]], path: Path) -> Path:
    """An animated GIF, one frame per array (each with its own 256-colour palette), looping;
    the last frame is held three times as long."""
    pictures = [Image.fromarray(f) for f in frames]
    durations = [FRAME_MS] * (len(pictures) - 1) + [3 * FRAME_MS]

    def write(p: Path) -> None:
        pictures[0].save(
            p,
            format="GIF",
            save_all=True,
            append_images=pictures[1:],
            duration=durations,
            loop=0,
            disposal=1,
        )

    return write_atomically(path, write)


def _user_metrics(run: Run) -> list[str]:
    """The run-wide metrics the user passed to ``record`` (``loss``, ``accuracy``...)."""
    found = {r.metric for r in run.rows if not r.image and not r.method} - {COST_METRIC}
    first = ("loss", "accuracy")  # the usual pair first, then the others by name
    return sorted(found, key=lambda m: (first.index(m) if m in first else len(first), m))


def metric_panels(run: Run) -> list[tuple[str, dict[str, dict[int, float]]]]:
    """The metrics vs epoch, one panel per chart of the report's plot (:func:`metrics_figure`)
    and of the dashboard's training-run view.

    Panels, in order, each left out when the run has no value for it: per mask metric
    (pointing game, IoU, energy in the mask, with masks) one line per method, the mean over
    the probes of each epoch (:meth:`~seethrough.training.run.Run.mean_series`); the probes'
    mean confidence and, with labels, their accuracy; then each metric the user passed to
    ``record`` (``loss`` and ``accuracy`` first, then by name), the recorder's own cost left
    out.

    Args:
        run: a recorded run (:func:`~seethrough.training.run.read_run`).

    Returns:
        ``(title, {line label: {epoch: value}})`` per panel.
    """
    names = set(run.metrics())
    panels = []
    for metric in MASK_METRICS:
        if metric in names:
            lines = {m: run.mean_series(metric, m) for m in run.methods}
            panels.append((_METRIC_TITLES[metric], {k: v for k, v in lines.items() if v}))
    for metric in ("confidence", "correct"):
        series = run.mean_series(metric)
        if series:
            panels.append((_METRIC_TITLES[metric], {"mean over probes": series}))
    for metric in _user_metrics(run):
        panels.append((metric, {metric: run.series(metric)}))
    return [(title, lines) for title, lines in panels if lines]


def metrics_figure(run: Run, settled: int | None = None) -> Figure:
    """The metrics vs epoch: per method the mean pointing game, IoU and energy in the mask (with
    masks), the probes' mean confidence and accuracy, and every metric the user recorded (loss,
    accuracy); a dashed vertical line at the ``settled`` epoch on each panel."""
    panels = metric_panels(run)
    if not panels:
        panels = [("no metrics recorded", {})]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.0 * cols, 2.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, (title, lines) in zip(axes, panels, strict=False):
        for label, series in lines.items():
            epochs = sorted(series)
            ax.plot(epochs, [series[e] for e in epochs], marker="o", markersize=3, label=label)
        if settled is not None:
            ax.axvline(settled, color="0.4", linestyle="--", linewidth=1, label="attention settled")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title in _FRACTIONS:
            ax.set_ylim(-0.03, 1.03)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if lines or settled is not None:
            ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig


def _slug(name: str) -> str:
    """A file-name part for a probe's name (letters, digits, ``._-``; at most 40)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:40] or "probe"


def _data_uri(path: Path) -> str:
    """The file as a ``data:`` URI (PNG or GIF) to embed in the page."""
    kind = "gif" if path.suffix.lower() == ".gif" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .7em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.probe{margin:1.5em 0;padding-top:.5em;border-top:1px solid #ddd}
.sheet{overflow-x:auto}img{image-rendering:pixelated;max-width:none}.note{color:#555}
"""


def report_html(run: Run, files: dict[str, Path], settled: int | None) -> str:
    """The page: what was recorded, the stopping hint, the metrics plot, the last epoch's means,
    and per probe its strip and contact sheet. Every text from the run is escaped;
    ``files`` maps ``"metrics"``, ``"strip-I"`` and ``"sheet-I"`` to the files to embed."""
    esc = html.escape
    info = run.info
    epochs = run.epochs
    title = f"Training run {run.path.name}"
    span = (
        f"epochs {epochs[0]} to {epochs[-1]} ({len(epochs)} recorded)"
        if epochs
        else "no epoch recorded yet"
    )
    settle = float(info.get("settle", DEFAULT_SETTLE))
    if settled is None:
        hint = f"attention has not settled: the last maps of {run.methods[0]} still move (correlation with the epoch before at most {settle:g})"
    else:
        hint = f"attention settled at epoch {settled}: from there on, consecutive maps of {run.methods[0]} correlate above {settle:g} (mean over the probes); a stopping hint"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<p>"
        + esc(
            f"model: {info.get('model') or 'unnamed'}; methods: {', '.join(run.methods)}; "
            f"{len(run.probes)} probe images; {span}; recorded every {info.get('every', 1)} "
            f"epoch(s); created {info.get('created', '')}"
        )
        + "</p>",
        f"<p><b>{esc(hint)}</b></p>",
    ]
    if "metrics" in files:
        parts.append(f"<img alt='metrics vs epoch' src='{_data_uri(files['metrics'])}'>")
    parts.append(_last_epoch_table(run))
    parts.append("<h2>Probe images</h2>")
    parts.append(
        "<p class='note'>"
        + esc(
            "Each strip shows one frame per recorded epoch (the probe, then each method's map over "
            "it); each contact sheet has a row per method and a column per epoch."
        )
        + "</p>"
    )
    last = run.epochs[-1] if run.epochs else None
    for i, name in enumerate(run.probes):
        label = run.labels[i] if i < len(run.labels) else None
        facts = []
        if label is not None:
            facts.append(f"label {label}")
        if last is not None:
            predicted = run.series("predicted", "", name).get(last)
            confidence = run.series("confidence", "", name).get(last)
            if predicted is not None and not math.isnan(predicted):
                facts.append(f"predicted {int(predicted)} at epoch {last} ({_fmt(confidence, 2)})")
        parts.append(f"<div class='probe'><h3>{esc(name)}</h3><p>{esc('; '.join(facts))}</p>")
        strip, sheet = files.get(f"strip-{i}"), files.get(f"sheet-{i}")
        if strip is not None:
            parts.append(
                f"<p><img alt='{esc(name)}: strip over epochs' src='{_data_uri(strip)}'></p>"
            )
        if sheet is not None:
            parts.append(
                f"<div class='sheet'><img alt='{esc(name)}: contact sheet' src='{_data_uri(sheet)}'></div>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _last_epoch_table(run: Run) -> str:
    """The means at the last epoch: per method the mask metrics, then the probes' confidence,
    accuracy and the recorder's seconds."""
    if not run.epochs:
        return ""
    esc = html.escape
    last = run.epochs[-1]
    names = set(run.metrics())
    mask = [m for m in MASK_METRICS if m in names]
    rows = [f"<h2>{esc(f'Epoch {last}')}</h2>"]
    if mask:
        head = "".join(f"<th>{esc(_METRIC_TITLES[m])}</th>" for m in mask)
        rows.append(f"<table><tr><th>method</th>{head}</tr>")
        for method in run.methods:
            cells = "".join(
                f"<td class='num'>{esc(_fmt(run.mean_series(m, method).get(last)))}</td>"
                for m in mask
            )
            rows.append(f"<tr><td>{esc(method)}</td>{cells}</tr>")
        rows.append("</table>")
    facts = []
    for metric in PROBE_METRICS[1:]:
        value = run.mean_series(metric).get(last)
        if value is not None:
            facts.append(f"{_METRIC_TITLES[metric]}: {_fmt(value)}")
    for metric in _user_metrics(run):
        value = run.series(metric).get(last)
        if value is not None:
            facts.append(f"{metric}: {_fmt(value, 4)}")
    cost = run.series(COST_METRIC)
    if cost:
        facts.append(f"recorder: {np.mean(list(cost.values())):.3f} s per recorded epoch (mean)")
    if facts:
        rows.append("<p>" + esc("; ".join(facts)) + "</p>")
    return "\n".join(rows)


def epoch_pictures(run: Run, images: NDArray[np.uint8], epoch: int) -> list[list[Picture]]:
    """Per probe, the :func:`picture` of each method's map at ``epoch``: the tiles of one
    frame of the strips, and what the dashboard shows for an epoch.

    Args:
        run: a recorded run (:func:`~seethrough.training.run.read_run`).
        images: its probes as the model sees them (:meth:`~seethrough.training.run.Run.probe_images`).
        epoch: a recorded epoch with maps (in ``run.map_epochs``).

    Returns:
        ``pictures[probe][method]``, methods in ``run.methods`` order.

    Raises:
        InvalidParameterError: the epoch has no maps, its file lacks a method, or it holds
            another number of maps than there are ``images``.
    """
    maps = run.maps(epoch)
    missing = [m for m in run.methods if m not in maps]
    if missing:
        raise InvalidParameterError(
            f"{maps_path(run.path, epoch)}: no maps of {', '.join(missing)}"
        )
    for m in run.methods:
        if maps[m].shape[0] != len(images):
            raise InvalidParameterError(
                f"{maps_path(run.path, epoch)}: {maps[m].shape[0]} maps of {m} for "
                f"{len(images)} probe images"
            )
    return [[picture(image, maps[m][i]) for m in run.methods] for i, image in enumerate(images)]


def build_report(out: str | os.PathLike[str]) -> Path:
    """Write the report of the run in ``out``: a strip (GIF) and a contact sheet (PNG) per probe
    image, the metrics plot (PNG) and ``report.html`` tying them together (see the module).

    Each file is written atomically, so an interrupted build leaves the previous report whole.
    The run is read again from its directory: a report can be rebuilt at any time, also while
    training goes on (``seethrough report OUT``).

    Returns:
        The path of ``OUT/report.html``.

    Raises:
        InvalidParameterError: ``out`` holds no training run (from :func:`read_run`), or one
            whose probes or maps are missing or unreadable.
    """
    run = read_run(out)
    epochs = run.map_epochs
    try:
        images = run.probe_images()
        if len(images) != len(run.probes):
            raise InvalidParameterError(
                f"{run.path}: {len(images)} probe images for {len(run.probes)} probe names"
            )
        # pictures only (uint8 at display size): one epoch's maps at a time is held
        pictures = [epoch_pictures(run, images, epoch) for epoch in epochs]
        settled = run.settled_epoch()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        if isinstance(exc, SeethroughError):
            raise
        raise InvalidParameterError(
            f"{run.path}: the run's arrays cannot be read ({exc})"
        ) from None
    folder = run.path / REPORT_DIR
    folder.mkdir(exist_ok=True)
    files = {"metrics": save_figure(metrics_figure(run, settled), folder / "metrics.png")}
    for i, name in enumerate(run.probes):
        if not epochs:
            break
        stem = f"{i:02d}-{_slug(name)}"
        probe = picture(images[i])
        mine = [by_probe[i] for by_probe in pictures]
        frames = strip_frames(probe, mine, epochs, run.methods)
        files[f"strip-{i}"] = _save_gif(frames, folder / f"strip-{stem}.gif")
        sheet = contact_sheet(probe, mine, epochs, run.methods)
        files[f"sheet-{i}"] = save_png(sheet, folder / f"sheet-{stem}.png")
    return write_text_atomically(run.path / REPORT_FILE, report_html(run, files, settled))

"""The audit's HTML summary: one self-contained page (images embedded as base64 PNG, no script).

Sections, in order: the run (model, methods, counts); per metric, a histogram per method; a
per-class breakdown (items, top-1 where labels exist, each metric's mean); the worst cases of
each method with a thumbnail of the image under its map; the rows with errors; then the
sections of :func:`extra_sections` (further analyses of the run).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._io import write_text_atomically
from ..errors import InvalidParameterError
from ..registry import get_metric
from .items import Item, read_image
from .table import MANIFEST, read_table
from .worker import AuditSpec, columns

__all__ = ["AuditRun", "load_run", "write_summary", "extra_sections", "SECTIONS", "WORST"]

WORST = 6
"""Worst cases shown per method."""
_THUMB = 112


@dataclass
class AuditRun:
    """A finished (or interrupted) audit read back from its folder.

    Attributes:
        out: the run folder.
        spec: the spec it ran with.
        rows: the merged table's rows (typed; NaN for missing numbers).
        status: ``finished``, ``interrupted``, ``failed`` or ``running``.
    """

    out: Path
    spec: AuditSpec
    rows: list[dict[str, Any]]
    status: str

    def ok(self, method: str | None = None) -> list[dict[str, Any]]:
        """The rows without an error (of one method)."""
        return [r for r in self.rows if not r["error"] and method in (None, r["method"])]


def load_run(out: str | Path) -> AuditRun:
    """Read the run folder ``out`` (its manifest and merged table).

    Raises:
        InvalidParameterError: ``out`` is not a run folder (no manifest, or one that does not
            read as an audit's).
    """
    out = Path(out)
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        fields = AuditSpec.__dataclass_fields__
        spec = AuditSpec(**{k: v for k, v in data["spec"].items() if k in fields})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidParameterError(
            f"{out}: not an audit's run folder ({MANIFEST}: {type(exc).__name__}: {exc})"
        ) from None
    return AuditRun(out, spec, read_table(out, columns(spec.metrics)), data.get("status", ""))


SECTIONS: list[Callable[[AuditRun], str]] = []
"""Further analyses of a run, each ``section(run) -> HTML`` appended to the summary in order (the
spurious-correlation finder's registers itself here: the analyses import this module, never the
other way round)."""


def extra_sections(run: AuditRun) -> list[str]:
    """HOOK for further analyses of a run: the HTML sections of :data:`SECTIONS`."""
    return [section(run) for section in SECTIONS]


def _png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _histogram(values: Sequence[float], title: str) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 2.2), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(values, bins=min(20, max(5, len(values) // 3)), color="#4c72b0")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _mean(values: Sequence[float]) -> float:
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    return float(a.mean()) if a.size else math.nan


def _distributions(run: AuditRun) -> str:
    esc, parts = html.escape, ["<h2>Metric distributions</h2><div class='row'>"]
    for metric in run.spec.metrics:
        for method in run.spec.methods:
            values = [r[metric] for r in run.ok(method) if not math.isnan(r[metric])]
            if not values:
                continue
            title = f"{method}: {get_metric(metric).title}"
            parts.append(f"<img alt='{esc(title)}' src='{_png(_histogram(values, title))}'>")
    return "".join(parts) + "</div>"


def _per_class(run: AuditRun) -> str:
    esc = html.escape
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in run.ok():
        cls = r["label"] if r["label"] is not None else f"predicted {r['predicted_label']}"
        groups[(str(cls), r["method"])].append(r)
    heads = ["class", "method", "items", "top-1"] + [get_metric(m).title for m in run.spec.metrics]
    parts = [
        "<h2>Per class</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr>"
    ]
    for (cls, method), rows in sorted(groups.items()):
        labelled = [r for r in rows if r["truth"] is not None]
        top1 = _mean([float(r["predicted"] == r["truth"]) for r in labelled])
        cells = [esc(cls), esc(method), str(len(rows)), _number(top1)]
        cells += [_number(_mean([r[m] for r in rows])) for m in run.spec.metrics]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(parts) + "</table>"


def _thumbnail(run: AuditRun, row: dict[str, Any]) -> np.ndarray | None:
    from ..viz import overlay

    if not row["map"]:
        return None
    try:
        with np.load(run.out / row["map"]) as data:
            saliency = data["map"]
        frame = int(row["id"].rsplit("#frame=", 1)[1]) if "#frame=" in row["id"] else None
        image = read_image(Item(row["id"], row["path"], frame=frame), run.spec.max_pixels)
    except Exception:  # a thumbnail that cannot be drawn is left out, the row stays
        return None
    shown = np.asarray(image.resize((saliency.shape[1], saliency.shape[0]), Image.BILINEAR))
    small = Image.fromarray(overlay(shown, saliency)).resize((_THUMB, _THUMB), Image.BILINEAR)
    return np.asarray(small)


def _worst(run: AuditRun) -> str:
    if not run.spec.metrics:
        return ""
    esc = html.escape
    metric = run.spec.metrics[0]
    info = get_metric(metric)
    parts = [f"<h2>Worst cases by {esc(info.title)}</h2>"]
    for method in run.spec.methods:
        rows = [r for r in run.ok(method) if not math.isnan(r[metric])]
        rows.sort(key=lambda r: r[metric], reverse=not info.higher_is_better)
        figures = []
        for r in rows[:WORST]:
            thumb = _thumbnail(run, r)
            img = f"<img alt='' src='{_png(thumb)}'><br>" if thumb is not None else ""
            caption = f"{r['id']}: {r['predicted_label']} ({r['probability']:.2f}), {r[metric]:.3f}"
            figures.append(f"<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>")
        parts.append(f"<h3>{esc(method)}</h3><div class='row'>{''.join(figures)}</div>")
    return "".join(parts)


def _errors(run: AuditRun) -> str:
    esc = html.escape
    bad = [r for r in run.rows if r["error"]]
    if not bad:
        return "<h2>Errors</h2><p>none</p>"
    parts = [
        f"<h2>Errors ({len(bad)} rows)</h2><table><tr><th>item</th><th>method</th>"
        "<th>type</th><th>message</th></tr>"
    ]
    for r in bad:
        cells = (r["id"], r["method"], r["error_type"], r["error"])
        parts.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    return "".join(parts) + "</table>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .7em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}.row{display:flex;flex-wrap:wrap;gap:.8em}
figure{margin:0;font-size:.8em;max-width:160px}
"""


def write_summary(out: str | Path, title: str = "seethrough audit") -> Path:
    """Write ``summary.html`` into the run folder ``out`` (atomically); returns its path."""
    run = load_run(out)
    esc = html.escape
    items = len({r["id"] for r in run.rows})
    head = (
        f"<p>model {esc(run.spec.model)} · methods {esc(', '.join(run.spec.methods))} · "
        f"{items} items, {len(run.rows)} rows, {sum(1 for r in run.rows if r['error'])} with "
        f"errors · status {esc(run.status)}</p>"
    )
    sections = [_distributions(run), _per_class(run), _worst(run), _errors(run)]
    sections += extra_sections(run)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>{head}" + "\n".join(sections) + "</body></html>"
    )
    return write_text_atomically(Path(out) / "summary.html", page)

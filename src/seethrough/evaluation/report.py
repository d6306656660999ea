"""Write an :class:`~seethrough.evaluation.Evaluation` as CSV, Markdown and a self-contained HTML page.

The HTML report embeds its thumbnails as base64 PNG, so the one file can be mailed or attached
to a ticket; it needs no network and runs no script.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import write_text_atomically
from ..registry import get_metric
from .runner import METRICS, Evaluation, Summary

__all__ = [
    "COLUMNS",
    "columns_for",
    "to_csv",
    "to_markdown",
    "to_html",
    "write_report",
    "format_value",
]

COLUMNS = (
    ("model", "model"),
    ("method", "method"),
    ("n", "n"),
    ("iou", "IoU"),
    ("iou_ci", "± 95% CI"),
    ("iou_sweep", "IoU sweep"),
    ("pointing_game", "pointing"),
    ("energy_pointing_game", "energy PG"),
    ("deletion", "deletion AUC"),
    ("insertion", "insertion AUC"),
    ("average_drop", "avg drop"),
    ("increase_in_confidence", "increase"),
    ("hide_top", "label flips"),
    ("top1", "top-1"),
    ("found", "found"),
    ("seconds", "s / image"),
)
"""Summary fields in table order, with their headers."""


def columns_for(evaluation: Evaluation) -> list[tuple[str, str]]:
    """The (field, header) pairs of :data:`COLUMNS` that ``evaluation`` has numbers for."""
    skipped = set(METRICS) - set(evaluation.metrics)
    if "iou" in skipped:
        skipped.add("iou_ci")
    truth = evaluation.settings.get("truth", "image")
    if truth == "image":  # classifiers: one map per image, every object found
        skipped.add("found")
    elif truth in ("masks", "boxes"):  # detectors, segmenters: no top-1 class
        skipped.add("top1")
    return [(key, head) for key, head in COLUMNS if key not in skipped]


def _arrow(key: str) -> str:
    """↑ or ↓ after a metric's header: which way is better, from the registry."""
    try:
        return " ↑" if get_metric(key).higher_is_better else " ↓"
    except LookupError:
        return " ↑" if key in ("top1", "found") else ""


def format_value(value: object, key: str = "") -> str:
    """A table cell: 3 decimals for scores, 4 significant digits for seconds, '' for NaN."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}" if key == "seconds" else f"{value:.3f}"
    return "" if value is None else str(value)


def _cells(row: Summary, columns: Sequence[tuple[str, str]]) -> list[str]:
    if row.error is not None:
        return [row.model, row.method, "0", f"not applicable: {row.error}"] + [""] * (
            len(columns) - 4
        )
    return [format_value(getattr(row, key), key) for key, _ in columns]


def to_csv(evaluation: Evaluation, path: str | Path) -> Path:
    """The summary table as CSV (raw numbers, every column, plus the error column)."""
    keys = [k for k, _ in columns_for(evaluation)] + ["error"]
    text = io.StringIO()
    writer = csv.DictWriter(text, keys, extrasaction="ignore")
    writer.writeheader()
    for row in evaluation.summary():
        writer.writerow({k: "" if v is None else v for k, v in row.as_dict().items()})
    return write_text_atomically(path, text.getvalue(), newline="")


def to_markdown(evaluation: Evaluation) -> str:
    """The summary table as a GitHub-flavoured Markdown table."""
    columns = columns_for(evaluation)
    head = [h + _arrow(k) for k, h in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(r, columns)) + " |" for r in evaluation.summary()]
    return "\n".join(lines) + "\n"


def _png_data(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .7em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cases{display:flex;flex-wrap:wrap;gap:1em}.case{font-size:.8em;max-width:220px}
figure{margin:0;display:inline-block;margin-right:.4em}img{image-rendering:auto}
.text{color:#555;margin:.3em 0}
"""


def to_html(evaluation: Evaluation, path: str | Path, title: str = "seethrough evaluation") -> Path:
    """A self-contained HTML report: settings, the table, the best and worst case of each pair."""
    columns = columns_for(evaluation)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<p>" + esc(", ".join(f"{k}={v}" for k, v in evaluation.settings.items())) + "</p>",
        "<table><tr>" + "".join(f"<th>{esc(h + _arrow(k))}</th>" for k, h in columns) + "</tr>",
    ]
    for row in evaluation.summary():
        cells = _cells(row, columns)
        parts.append(
            "<tr>"
            + "".join(
                f"<td class='{'num' if i > 1 else ''}'>{esc(c)}</td>" for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    parts.append("</table><h2>Best and worst cases</h2><div class='cases'>")
    for key, best in evaluation.best.items():
        worst = evaluation.worst[key]
        figures = "".join(
            f"<figure><img alt='{esc(kind)}' src='{_png_data(c.overlay)}' width='96' height='96'>"
            f"<figcaption>{esc(kind)}: {esc(c.caption)}"
            f"<p class='text'>{'<br>'.join(esc(line) for line in c.text.splitlines())}</p>"
            "</figcaption></figure>"
            for kind, c in (("best", best), ("worst", worst))
        )
        parts.append(f"<div class='case'><b>{esc(key[0])} · {esc(key[1])}</b><br>{figures}</div>")
    parts.append("</div></body></html>")
    return write_text_atomically(path, "\n".join(parts))


def write_report(
    evaluation: Evaluation, directory: str | Path, stem: str = "report"
) -> dict[str, Path]:
    """Write ``STEM.csv``, ``STEM.md`` and ``STEM.html`` into ``directory``; returns the paths.

    Each file is written atomically: an interrupted run leaves no partial report.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    write_text_atomically(md, to_markdown(evaluation))
    return {
        "csv": to_csv(evaluation, out / f"{stem}.csv"),
        "md": md,
        "html": to_html(evaluation, out / f"{stem}.html"),
    }

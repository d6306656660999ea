"""The spurious-correlation finder: which classes does the model decide from the background?

"Suppose that all the training images of the bird class contain a tree: is the CNN using bird
pixels or the tree?" One image cannot answer it; the maps of a whole class can. From an audit's
run folder, :func:`spurious` scores every (item, method) map, then tests each class against the
other classes, per method.

Two scores, chosen by what the run holds (``mode="auto"``):

* ``"outside"`` (the items have object masks, or boxes drawn as masks): the **share of saliency
  energy outside the object**, :func:`outside_share`,
  ``s = sum_{p not in M} max(S_p, 0) / sum_p max(S_p, 0)`` (the complement of the
  energy-based pointing game of Wang et al., "Score-CAM", CVPRW 2020), with the mask ``M`` brought
  to the map's size as the image was (the model's preprocessing where ``model=`` is given, else
  a nearest-neighbour resize, as the summary's thumbnails do).
* ``"reliance"`` (no masks; needs ``model=``, run here, not in the audit's worker): a
  **background-reliance score** per item, :func:`reliance`: the region the map finds (its top
  ``q`` of pixels) is hidden, then, separately, everything else is hidden (hidden: set to the
  preprocessing's mean, 0 after normalisation), and ``s = kept(region hidden) - kept(rest
  hidden)`` in ``{-1, 0, 1}``, where ``kept`` says the model's top class stayed the one the
  audit recorded. 1: the decision survives without what the map points at and dies without
  the rest: the evidence is elsewhere than the map says. Note: a compact shortcut that the map
  *does* find (a corner marker) scores -1 here, as any well-localised evidence does; only masks
  tell object from background.

The test, per method and class ``c``: a one-sided Welch t-test (Welch, Biometrika 1947) of the
class's item scores against the pooled scores of all the other classes, ``H1: mean_c >
mean_rest``, with ``t = (m_c - m_r) / sqrt(v_c / n_c + v_r / n_r)`` (sample variances: each side
its own spread) and the Welch-Satterthwaite degrees of freedom; the p-values of a method's
classes are adjusted by Holm's step-down method (Holm, Scand. J. Statist. 1979), which controls
the family-wise error over the classes, and a class is ``flagged`` where the adjusted p is below
``alpha``. A class is thus flagged for relying on the background *more than the other classes
do*: a data set whose every class is decided from the background flags none (its mean scores
say so). Classes come from the items' labels, or the predicted class where an item has none.

Example:
    >>> from seethrough.audit import spurious
    >>> result = spurious("runs/audit1")  # doctest: +SKIP
    >>> result.ranked("gradcam")[:3], result.flagged("gradcam")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import html
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._io import write_atomically
from ..core.progress import Progress
from ..errors import InvalidParameterError, SeethroughError
from ..models import VisionModel
from .items import Item, load_items, read_image, read_mask
from .report import SECTIONS, AuditRun, load_run
from .table import MANIFEST

__all__ = [
    "spurious",
    "SpuriousResult",
    "outside_share",
    "reliance",
    "welch_greater",
    "holm",
    "MODES",
    "TABLE_COLUMNS",
    "summary_section",
]

MODES = ("auto", "outside", "reliance")
"""What :func:`spurious` scores: by what the run holds, energy outside the mask, or reliance."""
TABLE_COLUMNS = (
    "method",
    "class",
    "n",
    "mean",
    "spread",
    "rest_mean",
    "statistic",
    "p",
    "p_adjusted",
    "flagged",
)
"""The result table's columns: ``mean`` and ``spread`` (sample standard deviation) of the class's
item scores, ``rest_mean`` of the other classes' pooled, the Welch ``statistic``, its one-sided
``p``, Holm's ``p_adjusted`` over the method's classes, and ``flagged`` (``p_adjusted < alpha``)."""


def outside_share(saliency: np.ndarray, mask: np.ndarray) -> float:
    """The share of a map's positive energy that lies outside the object.

    ``sum_{p not in M} max(S_p, 0) / sum_p max(S_p, 0)``; NaN for a map with no positive energy.

    Args:
        saliency: the map ``(H, W)``.
        mask: the object, boolean ``(H, W)``.

    Returns:
        The share, in ``[0, 1]``.
    """
    if saliency.shape != mask.shape:
        raise InvalidParameterError(f"map {saliency.shape} and mask {mask.shape} differ in size")
    energy = np.clip(np.asarray(saliency, dtype=np.float64), 0, None)
    total = energy.sum()
    if not total > 0:
        return math.nan
    return float(energy[~mask.astype(bool)].sum() / total)


def reliance(
    model: VisionModel, x: Any, saliency: np.ndarray, predicted: int, q: float = 0.2
) -> tuple[float, bool, bool]:
    """The background-reliance score of one image (see the module docstring).

    Args:
        model: the model.
        x: its input ``(C, H, W)`` (preprocessed).
        saliency: the map ``(H, W)`` at the input's size (resized bilinearly where not).
        predicted: the class whose survival is checked.
        q: the share of pixels, the map's highest, that make the region it finds.

    Returns:
        ``(kept(region hidden) - kept(rest hidden), kept(region hidden), kept(rest hidden))``.
    """
    import torch
    import torch.nn.functional as F

    from ..metrics.base import class_logits

    height, width = x.shape[-2:]
    s = torch.as_tensor(np.asarray(saliency, dtype=np.float32))
    if tuple(s.shape) != (height, width):
        s = F.interpolate(s[None, None], size=(height, width), mode="bilinear")[0, 0]
    k = max(1, round(q * height * width))
    region = torch.zeros(height * width, dtype=torch.bool)
    region[s.flatten().topk(k).indices] = True
    region = region.view(1, height, width).to(x.device)
    batch = torch.stack([x * ~region, x * region])  # 0: the preprocessing's mean colour
    with torch.no_grad():
        top = class_logits(model.module, batch.to(model.device)).argmax(1).tolist()
    without, alone = top[0] == predicted, top[1] == predicted
    return float(without) - float(alone), without, alone


def welch_greater(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """One-sided Welch t-test of ``mean(a) > mean(b)``: ``(t, p)``.

    NaN for fewer than two values on a side; where both sides have no spread, ``t`` is
    ``+-inf`` (or NaN for equal means) and ``p`` is 0 where ``a``'s mean is the greater, else 1.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        diff = a.mean() - b.mean()
        return (math.copysign(math.inf, diff) if diff else math.nan), float(not diff > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    return float(result.statistic), float(result.pvalue)


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count).

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))`` for ``m``
    p-values; ``adjusted < alpha`` controls the family-wise error at ``alpha``.
    """
    values = [float(v) for v in p]
    order = sorted((i for i, v in enumerate(values) if not math.isnan(v)), key=lambda i: values[i])
    adjusted, running = list(values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class SpuriousResult:
    """What :func:`spurious` found.

    Attributes:
        mode: ``"outside"`` or ``"reliance"``: the score (see the module docstring).
        alpha: the family-wise error level of the flags.
        classes: the table, one row per (method, class) (:data:`TABLE_COLUMNS`), by method,
            then most background-reliant first (highest statistic, then highest mean).
        items: one row per scored (item, method): ``id``, ``method``, ``class``, ``score``
            (and, in reliance mode, ``kept_without`` and ``kept_alone``).
        skipped: the rows left out (an error, no map file, no mask, no positive energy).
    """

    mode: str
    alpha: float
    classes: list[dict[str, Any]]
    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0

    def ranked(self, method: str | None = None) -> list[str]:
        """The classes of ``method`` (default: the first), most background-reliant first."""
        method = method or (self.classes[0]["method"] if self.classes else None)
        return [r["class"] for r in self.classes if r["method"] == method]

    def flagged(self, method: str | None = None) -> list[str]:
        """The flagged classes of ``method`` (default: the first), in rank order."""
        method = method or (self.classes[0]["method"] if self.classes else None)
        return [r["class"] for r in self.classes if r["method"] == method and r["flagged"]]

    def write_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (atomically); returns the path."""

        def write(p: Path) -> None:
            with p.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(TABLE_COLUMNS)
                w.writerows([r[c] for c in TABLE_COLUMNS] for r in self.classes)

        return write_atomically(Path(path), write)


def _class_of(row: dict[str, Any]) -> str:
    return str(row["label"]) if row["label"] is not None else f"predicted {row['predicted_label']}"


def _item_of(row: dict[str, Any], known: dict[str, Item]) -> Item:
    if row["id"] in known:
        return known[row["id"]]
    frame = int(row["id"].rsplit("#frame=", 1)[1]) if "#frame=" in row["id"] else None
    return Item(row["id"], row["path"], frame=frame)


def _known_items(run: AuditRun, items: Sequence[Item] | None) -> dict[str, Item]:
    """The run's items (with their masks) by id: given, or listed again from its data source."""
    if items is None:
        try:
            source = json.loads((run.out / MANIFEST).read_text(encoding="utf-8"))["source"]
            items = load_items(source) if source != "items" else []
        except (OSError, ValueError, KeyError, SeethroughError):
            items = []  # the source moved or is gone: no masks
    return {i.id: i for i in items}


def _mask_at(item: Item, shape: tuple[int, ...], model: VisionModel | None) -> np.ndarray | None:
    if item.mask_path is None:
        return None
    with Image.open(item.path) as im:
        size = im.size
    mask = read_mask(item, size)
    if mask is None:
        return None
    if model is not None:
        return model.preprocessing.mask(mask)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (shape[1], shape[0]), Image.Resampling.NEAREST
    )
    return np.asarray(small) > 127


def _table(scores: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = []
    by_method: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scores:
        by_method[s["method"]][s["class"]].append(s["score"])
    for method, groups in by_method.items():
        rows = []
        for cls, values in groups.items():
            rest = [v for c, vs in groups.items() if c != cls for v in vs]
            t, p = welch_greater(values, rest)
            a = np.asarray(values)
            rows.append(
                {
                    "method": method,
                    "class": cls,
                    "n": len(values),
                    "mean": float(a.mean()),
                    "spread": float(a.std(ddof=1)) if len(a) > 1 else math.nan,
                    "rest_mean": float(np.mean(rest)) if rest else math.nan,
                    "statistic": t,
                    "p": p,
                }
            )
        for row, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
            row["p_adjusted"] = adjusted
            row["flagged"] = bool(adjusted < alpha)
        rows.sort(
            key=lambda r: (
                -r["statistic"] if not math.isnan(r["statistic"]) else math.inf,
                -r["mean"],
                r["class"],
            )
        )
        table += rows
    return table


def spurious(
    run: str | Path | AuditRun,
    *,
    model: VisionModel | None = None,
    mode: str = "auto",
    methods: Sequence[str] | None = None,
    items: Sequence[Item] | None = None,
    alpha: float = 0.05,
    q: float = 0.2,
    progress: Progress | None = None,
) -> SpuriousResult:
    """Find the classes a model decides from the background, from an audit's run folder.

    See the module docstring for the scores and the test. The maps are the run's map files
    (an audit with ``save_maps``); rows with an error or without a map are skipped.

    Args:
        run: the run folder (or a loaded :class:`~seethrough.audit.AuditRun`).
        model: the audited model: needed for ``mode="reliance"``; in ``"outside"`` mode its
            preprocessing brings the masks to the maps' size (crops included).
        mode: ``"auto"`` (``"outside"`` where the run's items have masks, else
            ``"reliance"``), ``"outside"`` or ``"reliance"``.
        methods: the methods to look at (default: all of the run's).
        items: the run's items, for their masks (default: listed again from the run's data
            source).
        alpha: the family-wise error level of the flags (Holm over each method's classes).
        q: in reliance mode, the share of pixels (the map's highest) hidden as its region.
        progress: ``progress(done, total)`` in rows, between rows.

    Returns:
        The table and the item scores (:class:`SpuriousResult`).

    Raises:
        InvalidParameterError: a bad mode, ``alpha`` or ``q``; reliance mode without a model;
            outside mode on a run without masks; no row that can be scored.
    """
    if mode not in MODES:
        raise InvalidParameterError(f"mode={mode!r}: choose one of {', '.join(MODES)}")
    if not 0 < alpha < 1:
        raise InvalidParameterError(f"alpha={alpha}: must be in (0, 1)")
    if not 0 < q < 1:
        raise InvalidParameterError(f"q={q}: must be in (0, 1)")
    run = run if isinstance(run, AuditRun) else load_run(run)
    wanted = tuple(methods) if methods is not None else run.spec.methods
    rows = [r for r in run.ok() if r["method"] in wanted and r["map"]]
    known = _known_items(run, items)
    has_masks = any(_item_of(r, known).mask_path is not None for r in rows)
    if mode == "auto":
        mode = "outside" if has_masks else "reliance"
    if mode == "outside" and not has_masks:
        raise InvalidParameterError(
            f"the items of {run.out} have no masks: pass items= with masks, or a model= for "
            "mode='reliance' (`seethrough spurious --mode reliance --model`)"
        )
    if mode == "reliance" and model is None:
        raise InvalidParameterError(
            "the background-reliance score runs the model: pass model= (the audited one; "
            "`seethrough spurious --model`)"
        )
    scores, skipped = [], len(run.rows) - len(rows)
    if progress is not None:
        progress(0, len(rows))
    for done, row in enumerate(rows, 1):
        item = _item_of(row, known)
        try:
            with np.load(run.out / row["map"]) as data:
                saliency = data["map"]
            entry = {"id": row["id"], "method": row["method"], "class": _class_of(row)}
            if mode == "outside":
                mask = _mask_at(item, saliency.shape, model)
                score = math.nan if mask is None else outside_share(saliency, mask)
            else:
                assert model is not None
                pre = model.preprocessing
                x = pre.from_display(pre.display_image(read_image(item, run.spec.max_pixels)))
                score, without, alone = reliance(model, x, saliency, int(row["predicted"]), q)
                entry |= {"kept_without": without, "kept_alone": alone}
        except (OSError, ValueError, SeethroughError):  # a map or mask gone: the row is skipped
            score = math.nan
        if math.isnan(score):
            skipped += 1
        else:
            scores.append(entry | {"score": score})
        if progress is not None:
            progress(done, len(rows))
    if not scores:
        raise InvalidParameterError(f"no row of {run.out} could be scored (mode {mode!r})")
    return SpuriousResult(mode, alpha, _table(scores, alpha), scores, skipped)


# ------------------------------------------------------------------------------------ summary

WORST = 6
"""Thumbnails shown per method: the top-ranked class's items with the highest scores."""


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3g}"
    return html.escape(str(value))


def summary_section(run: AuditRun) -> str:
    """The summary's section: the table, and the top-ranked class's worst cases per method
    (outside mode, where the run's items have masks; otherwise a line on how to get the
    background-reliance score)."""
    from .report import _png, _thumbnail

    title = "<h2>Classes decided from the background</h2>"
    try:
        result = spurious(run, mode="outside")
    except InvalidParameterError as exc:  # no masks, nothing scored: say how to get a score
        return (
            f"{title}<p>{html.escape(str(exc))}. "
            "<code>seethrough.audit.spurious(RUN, model=...)</code> gives the "
            "background-reliance score without masks.</p>"
        )
    except Exception as exc:  # an analysis that fails never costs the summary
        return f"{title}<p>not computed: {html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>"
    parts = [
        title,
        f"<p>Share of each map's positive energy outside the object's mask, per class; a class "
        f"is flagged where a one-sided Welch t-test against the other classes' pooled shares, "
        f"Holm-adjusted over the classes, gives p &lt; {result.alpha}.</p><table><tr>",
        "".join(f"<th>{c}</th>" for c in TABLE_COLUMNS) + "</tr>",
    ]
    for r in result.classes:
        parts.append("<tr>" + "".join(f"<td>{_cell(r[c])}</td>" for c in TABLE_COLUMNS) + "</tr>")
    parts.append("</table>")
    by_id = {(r["id"], r["method"]): r for r in run.ok()}
    for method in dict.fromkeys(r["method"] for r in result.classes):
        top = result.ranked(method)[0]
        worst = sorted(
            (s for s in result.items if s["method"] == method and s["class"] == top),
            key=lambda s: -s["score"],
        )[:WORST]
        figures = []
        for s in worst:
            thumb = _thumbnail(run, by_id[(s["id"], method)])
            img = f"<img alt='' src='{_png(thumb)}'><br>" if thumb is not None else ""
            caption = html.escape(f"{s['id']}: outside {s['score']:.2f}")
            figures.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
        parts.append(
            f"<h3>{html.escape(method)}: class {html.escape(top)}, most energy outside</h3>"
            f"<div class='row'>{''.join(figures)}</div>"
        )
    return "".join(parts)


if summary_section not in SECTIONS:
    SECTIONS.append(summary_section)

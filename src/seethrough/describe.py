"""Textual explanations: a short, deterministic description of a map, built from numbers only.

No language model is involved: every sentence is a template filled with numbers this module
computes from the explanation (or that the caller passes, such as a :func:`~seethrough.metrics.
hide_top` result), and every number printed is kept in :attr:`Description.facts` under a name,
so that a reader (or a test) can trace each one back to its source.

The computations, each a small function returning numbers:

- :func:`region_shares`: the share of the map's positive mass in each cell of a 3x3 grid, named
  ``"upper left"`` ... ``"centre"`` ... ``"lower right"``.
- :func:`concentration`: the share of the positive mass held by the top 10% of pixels (1 for a
  single peak, 0.10 for a uniform map), in words ``"concentrated"`` / ``"fairly concentrated"`` /
  ``"spread"``.
- :func:`share_inside`: the share of the positive mass inside a boolean mask or a box.
- :func:`agreement`: Spearman's rank correlation of two maps of one image and the overlap of
  their top 10% pixels.
- :func:`dff_concepts`: the concepts of a Deep Feature Factorization with their top class and
  the share of the image where each is the strongest.

:meth:`seethrough.Explanation.describe` and :func:`describe_many` put them in sentences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidParameterError

__all__ = [
    "GRID_NAMES",
    "TOP_FRACTION",
    "Description",
    "agreement",
    "agreement_words",
    "box_mask",
    "concentration",
    "concentration_words",
    "describe",
    "describe_agreement",
    "describe_many",
    "dff_concepts",
    "positive_mass",
    "region_shares",
    "share_inside",
]

GRID_NAMES: tuple[tuple[str, str, str], ...] = (
    ("upper left", "upper centre", "upper right"),
    ("centre left", "centre", "centre right"),
    ("lower left", "lower centre", "lower right"),
)
"""The names of the 3x3 grid's cells, row by row from the top."""

TOP_FRACTION = 0.1
"""The fraction of pixels called "the top" by :func:`concentration` and :func:`agreement`."""


# --------------------------------------------------------------------------- the numbers


def positive_mass(saliency: Any) -> np.ndarray:
    """The map's positive part as float64 ``(H, W)``: ``max(map, 0)``, non-finite values as 0.

    Evidence *for* the target is the positive part of a signed map; the shares below are
    shares of its sum (the "positive mass").

    Args:
        saliency: a 2-D map.

    Raises:
        InvalidParameterError: the map is not 2-D or is empty.
    """
    a = np.asarray(saliency, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise InvalidParameterError(f"a map is 2-D and not empty, got shape {a.shape}")
    return np.where(np.isfinite(a), np.maximum(a, 0.0), 0.0)


def region_shares(saliency: Any) -> dict[str, float]:
    """The share of the positive mass in each cell of a 3x3 grid, by :data:`GRID_NAMES`.

    Rows and columns are split as :func:`numpy.array_split` splits them (the first cells take
    the remainder). The shares sum to 1, or are all 0 when the map has no positive value.

    Args:
        saliency: a 2-D map.

    Returns:
        ``{"upper left": s, ..., "lower right": s}`` in raster order.
    """
    a = positive_mass(saliency)
    total = a.sum()
    rows = np.array_split(np.arange(a.shape[0]), 3)
    cols = np.array_split(np.arange(a.shape[1]), 3)
    shares = {}
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            mass = a[np.ix_(r, c)].sum() if r.size and c.size else 0.0
            shares[GRID_NAMES[i][j]] = float(mass / total) if total > 0 else 0.0
    return shares


def concentration(saliency: Any, top: float = TOP_FRACTION) -> float:
    """The share of the positive mass held by the ``top`` fraction of pixels.

    ``C = sum of the k largest values of max(map, 0) / sum of max(map, 0)``, with
    ``k = max(1, round(top * H * W))``. A single peak gives 1, a uniform map ``k / (H W)``
    (about ``top``); 0 when the map has no positive value.

    Args:
        saliency: a 2-D map.
        top: the fraction of pixels, in (0, 1].
    """
    if not 0 < top <= 1:
        raise InvalidParameterError(f"top={top}: a fraction of pixels in (0, 1]")
    a = positive_mass(saliency).ravel()
    total = a.sum()
    if total <= 0:
        return 0.0
    k = max(1, int(round(top * a.size)))
    return float(np.sort(a)[::-1][:k].sum() / total)


def concentration_words(value: float) -> str:
    """``"concentrated"`` (>= 0.5), ``"fairly concentrated"`` (>= 0.25) or ``"spread"``.

    Args:
        value: a :func:`concentration` with the default top 10%.
    """
    if value >= 0.5:
        return "concentrated"
    if value >= 0.25:
        return "fairly concentrated"
    return "spread"


def box_mask(box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """The pixels of ``shape`` whose centres lie in the box ``(x0, y0, x1, y1)`` (pixels).

    Pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``.

    Args:
        box: the corners, in pixels of a map of ``shape``.
        shape: ``(H, W)``.
    """
    if len(box) != 4:
        raise InvalidParameterError(f"a box is (x0, y0, x1, y1), got {tuple(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    ys = np.arange(shape[0]) + 0.5
    xs = np.arange(shape[1]) + 0.5
    return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


def share_inside(saliency: Any, mask: Any) -> float:
    """The share of the positive mass inside ``mask``: ``sum(max(map,0)[mask]) / sum(max(map,0))``.

    Args:
        saliency: a 2-D map.
        mask: a boolean array of the map's shape, or a box ``(x0, y0, x1, y1)`` in its pixels
            (see :func:`box_mask`).

    Returns:
        The share in [0, 1]; 0 when the map has no positive value.

    Raises:
        InvalidParameterError: the mask's shape is not the map's.
    """
    a = positive_mass(saliency)
    m = np.asarray(mask)
    if m.ndim == 1 and m.size == 4 and m.dtype != bool:
        m = box_mask(m.tolist(), a.shape)
    m = m.astype(bool)
    if m.shape != a.shape:
        raise InvalidParameterError(f"the mask has shape {m.shape}, the map {a.shape}")
    total = a.sum()
    return float(a[m].sum() / total) if total > 0 else 0.0


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (as Spearman's correlation needs)."""
    flat = a.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_ = flat[order]
    # the first and last position of each run of equal values
    new = np.concatenate([[True], sorted_[1:] != sorted_[:-1]])
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [flat.size]])
    average = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(flat.size)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _top(a: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest pixels, ties broken by raster order (as ``binarize(top=...)``)."""
    keep = np.zeros(a.size, dtype=bool)
    keep[np.argsort(-a.ravel(), kind="stable")[:k]] = True
    return keep


def agreement(first: Any, second: Any, top: float = TOP_FRACTION) -> tuple[float, float]:
    """How far two maps of one image agree: ``(rho, overlap)``.

    ``rho``: Spearman's rank correlation of the pixel values (Pearson's correlation of their
    ranks, ties at their average rank); 1 for maps ordered alike, -1 for opposite orders, nan when
    a map is constant. ``overlap``: ``|T1 & T2| / k``, the share of the ``k = max(1, round(top *
    H * W))`` highest pixels of one map that are among those of the other (ties by raster order).
    Signed maps are compared as they are (not their positive part).

    Args:
        first: a 2-D map.
        second: a 2-D map of the same shape.
        top: the fraction of pixels for the overlap, in (0, 1].

    Raises:
        InvalidParameterError: the shapes differ.
    """
    a = np.nan_to_num(np.asarray(first, dtype=np.float64))
    b = np.nan_to_num(np.asarray(second, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 2:
        raise InvalidParameterError(f"maps of one image have one 2-D shape: {a.shape}, {b.shape}")
    if not 0 < top <= 1:
        raise InvalidParameterError(f"top={top}: a fraction of pixels in (0, 1]")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = math.sqrt(float(ra @ ra) * float(rb @ rb))
    rho = float(ra @ rb / norm) if norm > 0 else math.nan
    k = max(1, int(round(top * a.size)))
    overlap = float(np.count_nonzero(_top(a, k) & _top(b, k)) / k)
    return rho, overlap


def agreement_words(rho: float) -> str:
    """``"agree strongly"`` (rho >= 0.7), ``"agree moderately"`` (>= 0.4), ``"agree weakly"``
    (>= 0.1), ``"disagree"`` (< 0.1) or ``"cannot be compared"`` (nan).

    Args:
        rho: a rank correlation from :func:`agreement`.
    """
    if not math.isfinite(rho):
        return "cannot be compared"
    if rho >= 0.7:
        return "agree strongly"
    if rho >= 0.4:
        return "agree moderately"
    if rho >= 0.1:
        return "agree weakly"
    return "disagree"


def dff_concepts(extras: dict[str, Any]) -> list[tuple[int, str | None, float | None, float]]:
    """The concepts a Deep Feature Factorization stored, strongest area first.

    Args:
        extras: an explanation's extras: ``concepts`` ``(K, h, w)`` heatmaps and, where the
            model has a head and labels, ``concept_labels`` / ``concept_scores`` ``(K, top_k)``.

    Returns:
        ``(k, label, score, area)`` per concept: ``k`` numbered from 1, its top class label and
        probability (``None`` without them), and ``area`` the share of the ``h * w`` cells where
        concept ``k`` is the strongest (ties to the lower ``k``); sorted by area, then ``k``.
        Empty when there are no concepts.
    """
    heat = extras.get("concepts")
    if heat is None:
        return []
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 3 or heat.shape[0] == 0:
        return []
    strongest = heat.reshape(heat.shape[0], -1).argmax(0)
    areas = np.bincount(strongest, minlength=heat.shape[0]) / strongest.size
    labels = extras.get("concept_labels")
    scores = extras.get("concept_scores")
    out = []
    for k in range(heat.shape[0]):
        label = str(np.asarray(labels)[k].ravel()[0]) if labels is not None else None
        score = float(np.asarray(scores)[k].ravel()[0]) if scores is not None else None
        out.append((k + 1, label, score, float(areas[k])))
    return sorted(out, key=lambda c: (-c[3], c[0]))


# --------------------------------------------------------------------------- the text


@dataclass
class Description:
    """A textual explanation and the numbers in it.

    Attributes:
        lines: the sentences, in order.
        facts: every number the text prints, by name, unrounded.
        printed: ``(name, text)`` of each number in the order it appears in the text (names
            may repeat when a number is printed twice).
    """

    lines: list[str] = field(default_factory=list)
    facts: dict[str, float] = field(default_factory=dict)
    printed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The sentences, one per line."""
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return self.text

    def num(self, name: str, value: float, kind: str = "percent") -> str:
        """Keep ``value`` as the fact ``name`` and return it as printed.

        Args:
            name: the fact's name.
            value: its value.
            kind: ``"percent"`` (``62%``, ``0.31%`` below 1%), ``"int"`` (``3``) or ``"float"``
                (``0.52``).
        """
        self.facts[name] = float(value)
        if kind == "percent":  # two decimals below 1% (a probability of 0.3% is not 0%)
            shown = (
                f"{100 * value:.0f}%" if abs(value) >= 0.01 or value == 0 else f"{100 * value:.2f}%"
            )
        elif kind == "int":
            shown = f"{int(value)}"
        else:
            shown = f"{value:.2f}"
        self.printed.append((name, shown))
        return shown

    def extend(self, other: Description, prefix: str) -> None:
        """Append ``other``'s lines, its facts named ``prefix + name``.

        Args:
            other: a description.
            prefix: put before each of its fact names.
        """
        self.lines += other.lines
        self.facts.update({prefix + k: v for k, v in other.facts.items()})
        self.printed += [(prefix + k, s) for k, s in other.printed]


def _what(e: Any) -> str:
    if e.label is not None:
        return f"'{e.label}'"
    return "the custom target" if e.target is None else "class"


def describe(explanation: Any, mask: Any = None, hide_top: Any = None) -> Description:
    """The textual explanation of one :class:`~seethrough.Explanation`.

    Sentences, each only where its numbers exist: what is explained and its probability (or
    score); where the positive evidence lies (the one or two grid cells of
    :func:`region_shares` holding most of it); how concentrated it is (:func:`concentration`);
    the share inside ``mask``, or else inside the explained box or class mask
    (:attr:`~seethrough.Explanation.region`); what hiding the top pixels did to the prediction
    (``hide_top``); DFF's concepts (:func:`dff_concepts`).

    Args:
        explanation: the explanation.
        mask: a boolean ``(H, W)`` mask of the map's shape, or a box ``(x0, y0, x1, y1)`` in its
            pixels, e.g. the object's annotation.
        hide_top: a :class:`~seethrough.metrics.HideTop` (or a list from
            :func:`~seethrough.metrics.hide_top_sweep`: the smallest fraction that changes the
            class is reported) computed on this explanation's map. The model is not run here.

    Returns:
        The :class:`Description`; ``str()`` of it is the text.
    """
    e = explanation
    d = Description()
    who = e.title or e.method
    what = _what(e)
    if e.target is not None:
        what += (
            f" (class {d.num('target', e.target, 'int')})"
            if e.label is not None
            else (f" {d.num('target', e.target, 'int')}")
        )
    if e.probability is not None and math.isfinite(e.probability):
        sure = f", which the model gives {d.num('probability', e.probability)} probability"
    elif math.isfinite(e.score):
        sure = f", with score {d.num('score', e.score, 'float')}"
    else:
        sure = ""
    d.lines.append(f"{who} explains {what}{sure}.")

    shares = region_shares(e.map)
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])  # stable: raster order on ties
    if ranked[0][1] <= 0:
        d.lines.append("The map has no positive evidence.")
    else:
        first = f"the {ranked[0][0]} ({d.num('share_' + ranked[0][0], ranked[0][1])} of it)"
        second = ""
        if ranked[1][1] >= 0.15:  # a second cell only where it holds a real part
            second = f" and the {ranked[1][0]} ({d.num('share_' + ranked[1][0], ranked[1][1])})"
        d.lines.append(f"The positive evidence lies mostly in {first}{second}.")
        c = concentration(e.map)
        d.lines.append(
            f"It is {concentration_words(c)}: the top {d.num('top_fraction', TOP_FRACTION)} of "
            f"pixels hold {d.num('concentration', c)} of it."
        )
        inside = _inside(e, mask, d)
        if inside:
            d.lines.append(inside)
    change = _label_change(hide_top, d)
    if change:
        d.lines.append(change)
    concepts = dff_concepts(e.extras)
    if concepts:
        parts = []
        for k, label, score, area in concepts[:3]:
            # the numbers recorded in the order the text prints them
            name = f"'{label}' " if label is not None else ""
            number = d.num(f"concept_{k}", k, "int")
            prob = (
                f", {d.num(f'concept_{k}_score', score)} probability" if score is not None else ""
            )
            where = d.num(f"concept_{k}_area", area)
            parts.append(f"{name}(concept {number}{prob}, strongest on {where} of the image)")
        d.lines.append("Concepts found: " + "; ".join(parts) + ".")
    return d


def _inside(e: Any, mask: Any, d: Description) -> str:
    if mask is not None:
        return f"{d.num('inside', share_inside(e.map, mask))} of it lies inside the given mask."
    region = e.region
    if region is None:
        return ""
    if region.pixels is not None and np.shape(region.pixels) == np.shape(e.map):
        where = "mask"
        share = share_inside(e.map, region.pixels)
    elif region.box is not None:
        where = "box"
        share = share_inside(e.map, box_mask(region.box, np.shape(e.map)))
    else:
        return ""
    return f"{d.num('inside', share)} of it lies inside the explained {where}."


def _label_change(hide_top: Any, d: Description) -> str:
    if hide_top is None:
        return ""
    results = list(hide_top) if isinstance(hide_top, (list, tuple)) else [hide_top]
    if not results:
        return ""
    changed = [r for r in results if r.changed]
    r = (
        min(changed, key=lambda r: r.fraction)
        if changed
        else max(results, key=lambda r: r.fraction)
    )
    hidden = f"Hiding the top {d.num('hide_fraction', r.fraction)} of pixels"
    if r.changed:
        before = f"'{r.before_label}' ({d.num('before_probability', r.before_probability)})"
        after = f"'{r.after_label}' ({d.num('after_probability', r.after_probability)})"
        return f"{hidden} changes the prediction from {before} to {after}."
    was = d.num("before_probability", r.before_probability)
    now = d.num("after_probability", r.after_probability)
    return f"{hidden} does not change the prediction: '{r.before_label}' goes from {was} to {now}."


def describe_agreement(explanations: Sequence[Any]) -> Description:
    """How far the maps of several explanations of one image agree, one sentence per pair.

    Each pair ``(i, j)`` (numbered from 1) gets :func:`agreement`'s rank correlation, in words
    (:func:`agreement_words`), and the overlap of their top 10% pixels, as the facts
    ``"{i}-{j}:rho"``, ``"{i}-{j}:overlap"`` and ``"{i}-{j}:top_fraction"``.

    Args:
        explanations: explanations of one image (their maps have one shape).

    Raises:
        InvalidParameterError: the maps have different shapes.
    """
    shapes = {np.shape(e.map) for e in explanations}
    if len(shapes) > 1:
        raise InvalidParameterError(f"maps of one image have one shape, got {sorted(shapes)}")
    d = Description()
    for i in range(len(explanations)):
        for j in range(i + 1, len(explanations)):
            a, b = explanations[i], explanations[j]
            rho, overlap = agreement(a.map, b.map)
            p = f"{i + 1}-{j + 1}:"
            corr = "undefined" if not math.isfinite(rho) else d.num(p + "rho", rho, "float")
            d.lines.append(
                f"{a.title or a.method} and {b.title or b.method} {agreement_words(rho)}: rank "
                f"correlation {corr}, {d.num(p + 'overlap', overlap)} of their top "
                f"{d.num(p + 'top_fraction', TOP_FRACTION)} pixels shared."
            )
    return d


def describe_many(explanations: Sequence[Any]) -> Description:
    """The descriptions of several explanations of one image, then how far their maps agree.

    The ``i``-th description's facts (from 1) are named ``"{i}:{name}"``; then
    :func:`describe_agreement`'s sentences and facts.

    Args:
        explanations: explanations of one image (their maps have one shape).

    Raises:
        InvalidParameterError: none given, or the maps have different shapes.
    """
    if not explanations:
        raise InvalidParameterError("no explanations to describe")
    pairs = describe_agreement(explanations)
    d = Description()
    for i, e in enumerate(explanations, start=1):
        d.extend(describe(e), f"{i}:")
    d.extend(pairs, "")
    return d

"""Views of explanations over features (the columns of a table, the words of a text).

Duck-typed on the attributes of :class:`seethrough.attribution.FeatureExplanation`
(``features``, ``shown``, ``values``, ``prediction``, ``base_value``, ``title``, ``label``,
``target``), so this layer stays free of the library's types. Every figure is a
:class:`matplotlib.figure.Figure` for the Agg backend, built without ``pyplot``.

- :func:`bar_plot`: the largest attributions of one row, positive and negative in two colours.
- :func:`waterfall`: how Shapley values move the output from the base value to the prediction,
  one step per feature; efficiency (``base + sum(values) == prediction``, Shapley 1953) makes
  the last step end at the prediction.
- :func:`beeswarm`: the attributions of many rows, one row of dots per feature, each dot
  coloured by the feature's value (the summary plot of Lundberg et al., Nature Machine
  Intelligence 2020).
- :func:`text_html`: the words of a text coloured by their attributions, as an HTML snippet.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize, to_hex, to_rgb
from matplotlib.figure import Figure
from numpy.typing import NDArray

from ..errors import InvalidParameterError
from .color import get_cmap

__all__ = [
    "FeatureValues",
    "POSITIVE_COLOUR",
    "NEGATIVE_COLOUR",
    "CATEGORICAL_COLOUR",
    "bar_plot",
    "waterfall",
    "beeswarm",
    "text_html",
    "word_colour",
]

POSITIVE_COLOUR = "#b2182b"
"""Attributions that raise the explained output (the red end of a red-blue diverging scale)."""
NEGATIVE_COLOUR = "#2166ac"
"""Attributions that lower it (the blue end)."""
CATEGORICAL_COLOUR = "#9a9a9a"
"""Dots of a feature whose values are not numbers, in :func:`beeswarm`."""
_LABEL_CHARS = 40  # "feature = value" labels longer than this are cut with an ellipsis
_ROW_INCHES = 0.32
_SMALL_POINTS = 8
_TITLE_POINTS = 10
_EFFICIENCY_TOLERANCE = 1e-2  # relative: Tree SHAP through shap computes in float32


class FeatureValues(Protocol):
    """What the views read from an explanation over features (a ``FeatureExplanation``)."""

    features: list[str]
    shown: list[str]
    values: np.ndarray
    title: str
    label: str | None
    target: int
    prediction: float
    base_value: float


def _values(e: Any) -> NDArray[np.float64]:
    """``e.values`` as finite floats, one per feature and shown value."""
    try:
        values = np.asarray(e.values, dtype=np.float64).reshape(-1)
        features, shown = list(e.features), list(e.shown)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"expected an explanation over features (a FeatureExplanation), got "
            f"{type(e).__name__} ({exc})"
        ) from None
    if not len(features) or len(values) != len(features) or len(shown) != len(features):
        raise InvalidParameterError(
            f"an explanation needs one value and one shown value per feature: "
            f"{len(features)} features, {len(values)} values, {len(shown)} shown values"
        )
    if not np.isfinite(values).all():
        raise InvalidParameterError("the explanation's values contain NaN or infinity")
    return values


def _top(top: int) -> int:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise InvalidParameterError(f"top must be a positive integer, got {top!r}")
    return int(top)


def _cut(text: str, chars: int = _LABEL_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _feature_label(feature: str, shown: str) -> str:
    """``"feature = shown value"``; a word (feature and value the same) is shown once."""
    return _cut(feature if feature == shown else f"{feature} = {shown}")


def _what(e: Any) -> str:
    label = getattr(e, "label", None)
    return str(label) if label is not None else f"output {getattr(e, 'target', 0)}"


def _caption(e: Any, sep: str = "\n") -> str:
    """``"Kernel SHAP of malignant" SEP "prediction 0.97, base value 0.63"``."""
    title = getattr(e, "title", None) or getattr(e, "method", "attribution")
    return (
        f"{title} of {_what(e)}{sep}prediction {float(e.prediction):.4g}, "
        f"base value {float(e.base_value):.4g}"
    )


def _colour(v: float) -> str:
    return POSITIVE_COLOUR if v >= 0 else NEGATIVE_COLOUR


def _tidy(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=_SMALL_POINTS)


def _fmt(v: float) -> str:
    return f"{v:+.3g}"


def bar_plot(e: FeatureValues, top: int = 10) -> Figure:
    """Horizontal bars of the ``top`` largest ``|attributions|`` of one explanation.

    The largest is on top; each bar is labelled ``"feature = shown value"`` (a word once) and
    ends with its value; bars that raise the output are :data:`POSITIVE_COLOUR`, bars that
    lower it :data:`NEGATIVE_COLOUR`. The title gives the method, the explained output, the
    prediction and the base value (for Shapley values, the mean output over the background;
    for LIME, the local linear model's intercept, its values being slopes).

    Args:
        e: a :class:`~seethrough.attribution.FeatureExplanation`.
        top: most features shown; the x label counts the others.

    Returns:
        A :class:`~matplotlib.figure.Figure` with one axes holding one bar per feature shown.

    Raises:
        InvalidParameterError: not an explanation over features, non-finite values, a bad top.
    """
    values = _values(e)
    order = np.argsort(-np.abs(values), kind="stable")[: _top(top)]
    shown = values[order]
    fig = Figure(figsize=(6.4, 1.1 + _ROW_INCHES * len(order)), layout="tight")
    ax = fig.subplots()
    y = np.arange(len(order))
    ax.barh(y, shown, height=0.7, color=[_colour(v) for v in shown])
    ax.set_yticks(y, labels=[_feature_label(e.features[i], e.shown[i]) for i in order])
    ax.invert_yaxis()  # the largest on top
    ax.axvline(0.0, color="#444444", linewidth=0.8)
    span = float(np.abs(shown).max()) or 1.0
    for yi, v in zip(y, shown, strict=True):
        ax.text(
            v + (0.02 if v >= 0 else -0.02) * span,
            yi,
            _fmt(v),
            va="center",
            ha="left" if v >= 0 else "right",
            fontsize=_SMALL_POINTS,
        )
    lo, hi = min(0.0, float(shown.min())), max(0.0, float(shown.max()))
    ax.set_xlim(lo - 0.18 * span * (lo < 0), hi + 0.18 * span * (hi > 0) + 1e-12)
    rest = len(values) - len(order)
    ax.set_xlabel(
        "attribution" + (f" ({rest} smaller feature{'s' * (rest > 1)} not shown)" if rest else ""),
        fontsize=_SMALL_POINTS,
    )
    _tidy(ax)
    ax.set_title(_caption(e), fontsize=_TITLE_POINTS)
    return fig


def waterfall(e: FeatureValues, top: int = 10) -> Figure:
    """The steps from the base value to the prediction, one per feature, like a ledger.

    Shapley values are efficient, ``base_value + sum(values) == prediction``, so starting at
    the base value (bottom) and adding each feature's value in turn ends at the prediction
    (top). The ``top`` largest ``|values|`` get a step each, the largest last (on top); the
    remaining features are folded into one ``"k other features"`` step, first (at the bottom),
    so the steps still add up. A step that raises the output is :data:`POSITIVE_COLOUR`, one
    that lowers it :data:`NEGATIVE_COLOUR`; dashed lines mark the base value and the prediction.

    Args:
        e: a :class:`~seethrough.attribution.FeatureExplanation` of a Shapley method
            (``kernelshap``, ``exact_shapley``, ``permutation_shap``, ``tree_shap``).
        top: most features with a step of their own.

    Returns:
        A :class:`~matplotlib.figure.Figure`; its axes' bars are the steps in the order they
        are added (``left`` = where the step starts, ``width`` = the feature's value).

    Raises:
        InvalidParameterError: values that do not add up to ``prediction - base_value`` (LIME's
            slopes: draw :func:`bar_plot`), not an explanation, a bad top.
    """
    values = _values(e)
    base, prediction = float(e.base_value), float(e.prediction)
    gap = base + float(values.sum()) - prediction
    scale = max(1.0, abs(prediction), abs(base), float(np.abs(values).sum()))
    if abs(gap) > _EFFICIENCY_TOLERANCE * scale:
        raise InvalidParameterError(
            f"a waterfall adds the values up from the base value to the prediction, but these "
            f"miss it by {gap:+.4g} (they are not Shapley values: LIME's are a local model's "
            f"slopes); draw bar_plot instead"
        )
    order = np.argsort(-np.abs(values), kind="stable")[: _top(top)]
    rest = np.setdiff1d(np.arange(len(values)), order)
    steps = [(_feature_label(e.features[i], e.shown[i]), float(values[i])) for i in order[::-1]]
    if len(rest):
        steps.insert(0, (f"{len(rest)} other feature{'s' * (len(rest) > 1)}", values[rest].sum()))
    widths = np.array([v for _, v in steps])
    starts = base + np.concatenate([[0.0], np.cumsum(widths)[:-1]])
    ends = starts + widths

    fig = Figure(figsize=(6.4, 1.4 + _ROW_INCHES * len(steps)), layout="tight")
    ax = fig.subplots()
    y = np.arange(len(steps))  # the first step at the bottom
    ax.barh(y, widths, left=starts, height=0.65, color=[_colour(v) for v in widths])
    for k in range(len(steps) - 1):  # a thin connector from each step's end to the next
        ax.plot([ends[k], ends[k]], [y[k] + 0.33, y[k + 1] - 0.33], color="#666666", lw=0.6)
    span = float(max(ends.max(), starts.max()) - min(ends.min(), starts.min())) or 1.0
    for yi, s, w in zip(y, starts, widths, strict=True):
        right = s + w if w >= 0 else s
        ax.text(right + 0.015 * span, yi, _fmt(w), va="center", ha="left", fontsize=_SMALL_POINTS)
    ax.axvline(base, color="#444444", linestyle="--", linewidth=0.8)
    ax.axvline(prediction, color="#444444", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, labels=[label for label, _ in steps])
    lo = min(float(starts.min()), float(ends.min()))
    hi = max(float(starts.max()), float(ends.max()))
    ax.set_xlim(lo - 0.05 * span, hi + 0.16 * span)
    ax.set_ylim(-0.7, len(steps) - 0.3)
    top_ax = ax.secondary_xaxis("top")
    top_ax.set_xticks(
        [base, prediction], labels=[f"base {base:.4g}", f"prediction {prediction:.4g}"]
    )
    top_ax.tick_params(labelsize=_SMALL_POINTS)
    ax.set_xlabel(f"output ({_what(e)})", fontsize=_SMALL_POINTS)
    _tidy(ax)
    ax.set_title(_caption(e), fontsize=_TITLE_POINTS)
    return fig


def _numbers(texts: Sequence[str]) -> NDArray[np.float64] | None:
    """The shown values as numbers, or None if one of them is not a finite number."""
    try:
        out = np.array([float(t) for t in texts], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out).all() else None


def _unit(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Feature values onto [0, 1] between their 5th and 95th percentiles (outliers clipped),
    so one extreme row does not wash out the colours of the rest."""
    lo, hi = np.percentile(x, [5, 95])
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.full_like(x, 0.5)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _swarm(x: NDArray[np.float64], width: float, bins: int = 60) -> NDArray[np.float64]:
    """Vertical offsets that pile up dots with nearby x values: within each of ``bins`` bins of
    x, dots alternate above and below the row's centre line, spreading at most ``width``."""
    if len(x) < 2:
        return np.zeros(len(x))
    span = float(x.max() - x.min())
    cell = (np.floor((x - x.min()) / span * (bins - 1)) if span > 0 else np.zeros(len(x))).astype(
        int
    )
    offsets = np.zeros(len(x))
    for b in np.unique(cell):
        members = np.flatnonzero(cell == b)
        members = members[np.argsort(x[members], kind="stable")]
        k = np.arange(len(members))
        offsets[members] = ((k + 1) // 2) * np.where(k % 2 == 1, 1.0, -1.0)
    peak = float(np.abs(offsets).max())
    return offsets * (min(0.08, width / peak) if peak > 0 else 0.0)


def beeswarm(
    many: Iterable[FeatureValues],
    top: int = 10,
    *,
    categorical: Sequence[str] | None = None,
    cmap: str | Colormap = "viridis",
) -> Figure:
    """The attributions of many rows: one row of dots per feature, a dot per explained row.

    Features are ordered by their mean ``|attribution|`` over the rows (the global importance
    of :meth:`~seethrough.attribution.FeatureExplanations.importance`), the largest on top, the
    ``top`` first ones shown. A dot's x is the row's attribution; its colour the feature's
    value in that row on ``cmap`` from low to high (between the feature's 5th and 95th
    percentiles, with a colour bar), so a trend reads as "high values push the output up".
    A feature whose shown values are not all numbers (a categorical column, a group), or one
    named in ``categorical``, is drawn in :data:`CATEGORICAL_COLOUR`.

    Args:
        many: the explanations of the rows (a
            :class:`~seethrough.attribution.FeatureExplanations`), all over the same features.
        top: most features shown.
        categorical: features to draw in grey whatever their values (a category coded as a
            number).
        cmap: colormap of the feature values.

    Returns:
        A :class:`~matplotlib.figure.Figure`: its first axes holds one scatter collection per
        feature shown (top row first), the second the colour bar.

    Raises:
        InvalidParameterError: no explanation, explanations over different features, a bad top
            or colormap.
    """
    items = list(many)
    if not items:
        raise InvalidParameterError("beeswarm needs at least one explanation")
    features = list(items[0].features)
    for i, e in enumerate(items):
        if list(getattr(e, "features", ())) != features:
            raise InvalidParameterError(
                f"explanation {i} is over other features than explanation 0: a beeswarm "
                f"compares rows of one table"
            )
    values = np.stack([_values(e) for e in items])
    grey = set(categorical or ())
    unknown = sorted(grey - set(features))
    if unknown:
        raise InvalidParameterError(f"categorical names unknown features: {', '.join(unknown)}")
    colormap = get_cmap(cmap)
    importance = np.abs(values).mean(0)
    order = np.argsort(-importance, kind="stable")[: _top(top)]

    fig = Figure(figsize=(7.0, 1.3 + 0.42 * len(order)), layout="constrained")
    ax = fig.subplots()
    any_grey = False
    for row, j in enumerate(order):
        x = values[:, j]
        numbers = None if features[j] in grey else _numbers([e.shown[j] for e in items])
        if numbers is None:
            any_grey = True
            colours: Any = CATEGORICAL_COLOUR
        else:
            colours = colormap(_unit(numbers))
        ax.scatter(x, row + _swarm(x, 0.38), s=14, c=colours, linewidths=0, zorder=3)
    ax.set_yticks(np.arange(len(order)), labels=[_cut(features[j]) for j in order])
    ax.set_ylim(len(order) - 0.5, -0.5)  # the most important on top
    ax.axvline(0.0, color="#444444", linewidth=0.8, zorder=1)
    for row in range(len(order)):
        ax.axhline(row, color="#e4e4e4", linewidth=0.6, zorder=0)
    rest = len(features) - len(order)
    ax.set_xlabel(
        "attribution"
        + (f" ({rest} less important feature{'s' * (rest > 1)} not shown)" if rest else "")
        + ("; grey: not numbers" if any_grey else ""),
        fontsize=_SMALL_POINTS,
    )
    _tidy(ax)
    title = getattr(items[0], "title", None) or "attributions"
    ax.set_title(f"{title} of {_what(items[0])}, {len(items)} rows", fontsize=_TITLE_POINTS)
    bar = fig.colorbar(
        ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormap), ax=ax, aspect=40, pad=0.01
    )
    bar.set_ticks([0.0, 1.0], labels=["low", "high"])
    bar.set_label("feature value", fontsize=_SMALL_POINTS)
    bar.ax.tick_params(labelsize=_SMALL_POINTS)
    bar.outline.set_visible(False)
    return fig


def word_colour(value: float, scale: float) -> str:
    """The background of a word with attribution ``value``: white at 0, blending linearly to
    :data:`POSITIVE_COLOUR` at ``+scale`` and :data:`NEGATIVE_COLOUR` at ``-scale`` (clipped
    beyond), as ``"#rrggbb"``."""
    t = float(np.clip(value / scale, -1.0, 1.0)) if scale > 0 else 0.0
    end = np.array(to_rgb(POSITIVE_COLOUR if t >= 0 else NEGATIVE_COLOUR))
    return to_hex((1.0 - abs(t)) * np.ones(3) + abs(t) * end)


def text_html(e: FeatureValues, *, scale: float | None = None) -> str:
    """The words of a text coloured by their attributions, as a self-contained HTML snippet.

    Each word (``e.shown``, in order, separated by spaces) is a ``<span>`` whose background is
    :func:`word_colour` of its value (red raises the output, blue lowers it, white is 0), with
    the feature and its value as a tooltip (``title``). A caption above gives the method, the
    output, the prediction and the base value. All text is HTML-escaped, and the snippet has
    inline styles only (no script, no external file), so it can go into any page or notebook
    (``IPython.display.HTML(text_html(e))``).

    Args:
        e: a :class:`~seethrough.attribution.FeatureExplanation` of a text.
        scale: the ``|value|`` that gets the full colour (default: the largest ``|value|``), to
            compare several texts on one scale.

    Returns:
        The HTML, a ``<div>`` holding the caption and the words.

    Raises:
        InvalidParameterError: not an explanation, non-finite values, a scale <= 0.
    """
    values = _values(e)
    if scale is None:
        scale = float(np.abs(values).max())
    elif isinstance(scale, bool) or not np.isfinite(scale) or scale <= 0:
        raise InvalidParameterError(f"scale must be a positive number, got {scale!r}")
    words = []
    for feature, word, v in zip(e.features, e.shown, values, strict=True):
        background = word_colour(float(v), float(scale))
        strong = scale > 0 and abs(v) / scale > 0.6
        tip = html.escape(f"{feature}: {v:+.4g}", quote=True)
        words.append(
            f'<span title="{tip}" style="background-color:{background};'
            f"color:{'#ffffff' if strong else '#111111'};padding:0.1em 0.2em;"
            f'border-radius:0.2em">{html.escape(str(word), quote=True)}</span>'
        )
    caption = html.escape(_caption(e, ": "), quote=True)
    return (
        '<div class="seethrough-text" style="font-family:sans-serif;line-height:2">'
        f'<div style="font-size:0.8em;color:#555555">{caption}</div>'
        f"{' '.join(words)}</div>"
    )

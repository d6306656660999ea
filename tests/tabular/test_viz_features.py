"""Views of explanations over features: what the figures draw, read back from their artists,
and the word colouring's HTML."""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgb, to_rgba

from seethrough.attribution import FeatureExplanation, FeatureExplanations
from seethrough.errors import InvalidParameterError
from seethrough.tabular import explain_tabular
from seethrough.viz import bar_plot, beeswarm, figure_to_array, text_html, waterfall
from seethrough.viz.features import (
    CATEGORICAL_COLOUR,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    word_colour,
)


def explanation(values, shown=None, *, base=0.25, prediction=None, kind="tabular"):
    values = np.asarray(values, dtype=np.float64)
    names = [f"f{i}" for i in range(len(values))]
    return FeatureExplanation(
        kind=kind,
        method="kernelshap",
        title="Kernel SHAP",
        features=names,
        shown=shown if shown is not None else [str(i * 10) for i in range(len(values))],
        values=values,
        target=1,
        label="malignant",
        prediction=base + values.sum() if prediction is None else prediction,
        base_value=base,
        output="predict_proba",
    )


def bars(fig):
    ax = fig.axes[0]
    return ax, list(ax.patches)


def test_bar_plot_draws_the_largest_values_first_in_their_signs_colours():
    e = explanation([0.1, -0.5, 0.3, 0.0, -0.2])
    fig = bar_plot(e, top=3)
    ax, patches = bars(fig)
    assert [p.get_width() for p in patches] == pytest.approx([-0.5, 0.3, -0.2])
    assert [p.get_facecolor() for p in patches] == [
        to_rgba(NEGATIVE_COLOUR),
        to_rgba(POSITIVE_COLOUR),
        to_rgba(NEGATIVE_COLOUR),
    ]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["f1 = 10", "f2 = 20", "f4 = 40"]
    assert ax.yaxis_inverted()  # the first (largest) bar on top
    title = ax.get_title()
    assert "malignant" in title and "prediction -0.05" in title and "base value 0.25" in title
    assert "2 smaller features not shown" in ax.get_xlabel()
    assert figure_to_array(fig, dpi=40).shape[2] == 3


def test_a_word_is_labelled_once_and_long_labels_are_cut():
    e = explanation([0.2, 0.1], shown=["x" * 80, "f1"])
    labels = [t.get_text() for t in bars(bar_plot(e))[0].get_yticklabels()]
    assert labels[1] == "f1"
    assert len(labels[0]) == 40 and labels[0].endswith("\u2026")


def interacting(rows: np.ndarray) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    score = x[:, 0] * x[:, 1] + np.maximum(x[:, 2], x[:, 3]) - 0.5 * x[:, 4] + 0.1 * x[:, 5:].sum(1)
    return np.stack([-score, score], 1)


def test_waterfall_steps_add_up_from_the_base_value_to_the_prediction():
    rng = np.random.default_rng(1)
    background, row = rng.normal(size=(16, 8)), rng.normal(size=8) * 2
    e = explain_tabular(interacting, background, row, "exact_shapley", target=1)
    fig = waterfall(e, top=3)
    ax, patches = bars(fig)
    starts = np.array([p.get_x() for p in patches])
    widths = np.array([p.get_width() for p in patches])
    assert len(patches) == 4  # the three largest and "5 other features"
    assert starts[0] == pytest.approx(e.base_value)
    np.testing.assert_allclose(starts[1:], (starts + widths)[:-1], atol=1e-12)  # chained
    assert widths.sum() == pytest.approx(e.prediction - e.base_value, abs=1e-9)
    assert starts[-1] + widths[-1] == pytest.approx(e.prediction, abs=1e-9)
    order = np.argsort(-np.abs(e.values), kind="stable")
    np.testing.assert_allclose(widths[1:], e.values[order[:3]][::-1])  # the largest last, on top
    assert widths[0] == pytest.approx(e.values[order[3:]].sum())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "5 other features"
    assert labels[-1].startswith(f"{e.features[order[0]]} = ")
    assert [p.get_facecolor() for p in patches] == [
        to_rgba(POSITIVE_COLOUR if w >= 0 else NEGATIVE_COLOUR) for w in widths
    ]
    assert ax.get_yticks()[-1] > ax.get_yticks()[0]  # the last step drawn on top


def test_waterfall_refuses_values_that_do_not_add_up():
    lime_like = explanation([0.3, 0.2], base=0.5, prediction=0.6)  # slopes, not shares
    with pytest.raises(InvalidParameterError, match="bar_plot"):
        waterfall(lime_like)
    waterfall(explanation([0.3, 0.2], base=0.5, prediction=1.0 + 1e-5))  # float32 rounding ok


def rows_of_a_table(n: int = 40) -> tuple[FeatureExplanations, np.ndarray]:
    """Features f0..f3 whose attribution is scale * value, and a categorical 'colour'."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    scales = np.array([0.5, -3.0, 1.0, 0.1])  # importance order: f1, f2, f0, f3
    colours = rng.choice(["red", "blue"], n)
    items = []
    for i in range(n):
        values = np.append(x[i] * scales, 2.0 if colours[i] == "red" else -0.05)
        items.append(
            FeatureExplanation(
                kind="tabular",
                method="kernelshap",
                title="Kernel SHAP",
                features=["f0", "f1", "f2", "f3", "colour"],
                shown=[f"{v:.6g}" for v in x[i]] + [str(colours[i])],
                values=values,
                target=0,
                label=None,
                prediction=0.0,
                base_value=0.0,
                output="function",
            )
        )
    return FeatureExplanations(items), x


def test_beeswarm_orders_rows_by_importance_and_colours_dots_by_feature_value():
    many, x = rows_of_a_table()
    means = np.abs(many.values).mean(0)
    fig = beeswarm(many, top=4)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    expected = [many.features[j] for j in np.argsort(-means)[:4]]
    assert labels == expected == list(many.importance())[:4]
    assert labels[0] == "f1" and "colour" in labels  # 'colour' is about 0.5 * 2 + 0.5 * 0.05
    assert ax.yaxis_inverted() or ax.get_ylim()[0] > ax.get_ylim()[1]  # the first row on top
    cmap = matplotlib.colormaps["viridis"]
    for row, (name, dots) in enumerate(zip(labels, ax.collections, strict=True)):
        j = many.features.index(name)
        xy = dots.get_offsets()
        np.testing.assert_allclose(np.sort(xy[:, 0]), np.sort(many.values[:, j]))
        assert np.all(np.abs(xy[:, 1] - row) <= 0.38 + 1e-9)
        colours = dots.get_facecolors()
        if name == "colour":
            assert np.allclose(colours, to_rgba(CATEGORICAL_COLOUR))
            continue
        by_value = np.argsort(x[:, j])
        # dots keep the rows' order: the lowest value is the colormap's low end
        np.testing.assert_allclose(colours[by_value[0]], cmap(0.0))
        np.testing.assert_allclose(colours[by_value[-1]], cmap(1.0))
        lut = cmap(np.linspace(0.0, 1.0, 256))[:, :3]
        place = np.argmin(np.abs(lut - colours[by_value[len(x) // 2], :3]).sum(1)) / 255
        assert 0.3 < place < 0.7  # the median row sits mid-scale
    assert fig.axes[1].get_yticklabels()[-1].get_text() == "high"  # the colour bar


def test_beeswarm_takes_numeric_codes_as_categories_and_checks_its_input():
    many, _ = rows_of_a_table(12)
    fig = beeswarm(many, top=1, categorical=["f1"])
    assert np.allclose(fig.axes[0].collections[0].get_facecolors(), to_rgba(CATEGORICAL_COLOUR))
    with pytest.raises(InvalidParameterError, match="unknown features: nope"):
        beeswarm(many, categorical=["nope"])
    with pytest.raises(InvalidParameterError, match="top"):
        beeswarm(many, top=0)
    other = explanation([0.1, 0.2])
    with pytest.raises(InvalidParameterError, match="other features"):
        beeswarm([many[0], other])
    with pytest.raises(InvalidParameterError, match="at least one"):
        beeswarm([])


def spans(snippet: str) -> list[tuple[str, str, str]]:
    """(tooltip, background colour, text) of each word."""
    return re.findall(
        r'<span title="([^"]*)" style="background-color:(#[0-9a-f]{6});[^"]*">([^<]*)</span>',
        snippet,
    )


def test_text_html_colours_words_by_sign_and_escapes_them():
    words = ["good", "<script>alert(1)</script>", "bad", "the", 'say "hi"']
    e = explanation([0.8, 0.1, -0.6, 0.0, -0.8], shown=words, kind="text")
    e.features = words
    snippet = text_html(e)
    assert "<script>" not in snippet and "&lt;script&gt;alert(1)&lt;/script&gt;" in snippet
    assert "&quot;hi&quot;" in snippet
    found = spans(snippet)
    assert [w for _, _, w in found] == [
        "good",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "bad",
        "the",
        "say &quot;hi&quot;",
    ]
    rgb = [np.array(to_rgb(c)) for _, c, _ in found]
    assert found[0][1] == POSITIVE_COLOUR  # the largest |value| gets the full colour
    assert found[4][1] == NEGATIVE_COLOUR
    assert rgb[1][0] > rgb[1][2] and rgb[1].min() > 0.8  # weakly positive: pale red
    assert rgb[2][2] > rgb[2][0]  # negative: blue
    assert found[3][1] == "#ffffff"  # zero: white
    assert found[2][0] == "bad: -0.6"
    assert "prediction -0.25, base value 0.25" in snippet
    assert "<div" in snippet.split(">")[0]


def test_word_colour_scales_and_clips():
    assert word_colour(0.5, 1.0) == word_colour(1.0, 2.0)
    assert word_colour(5.0, 1.0) == POSITIVE_COLOUR
    assert word_colour(0.3, 0.0) == "#ffffff"
    e = explanation([0.1, -0.1], shown=["a", "b"], kind="text")
    pale = spans(text_html(e, scale=1.0))[0][1]
    assert np.array(to_rgb(pale)).min() > 0.8
    with pytest.raises(InvalidParameterError, match="scale"):
        text_html(e, scale=0)


def test_views_refuse_what_is_not_an_explanation():
    with pytest.raises(InvalidParameterError, match="FeatureExplanation"):
        bar_plot(np.zeros(3))  # type: ignore[arg-type]
    e = explanation([0.1, 0.2])
    e.values = np.array([0.1, np.nan])
    with pytest.raises(InvalidParameterError, match="NaN"):
        bar_plot(e)
    with pytest.raises(InvalidParameterError, match="top"):
        waterfall(explanation([0.1]), top=True)

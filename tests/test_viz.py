"""Tests for seethrough.viz: values are checked against hand computations, not only shapes."""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import seethrough.viz
from seethrough.errors import InvalidImageError, InvalidParameterError
from seethrough.viz import (
    Panel,
    boundaries,
    colorbar_legend,
    colorize,
    figure_to_array,
    grid_figure,
    normalize_map,
    overlay,
    prediction_bar_chart,
    resize_map,
    save_figure,
    save_png,
)


def cmap_rgb(name: str, t: float | np.ndarray) -> np.ndarray:
    """Reference colour straight from matplotlib, rounded to uint8."""
    rgba = np.asarray(matplotlib.colormaps[name](t), dtype=np.float64)
    return np.rint(rgba[..., :3] * 255).astype(np.uint8)


class Prediction(NamedTuple):
    index: int
    label: str
    probability: float


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- normalize_map


def test_normalize_minmax_values():
    m = np.array([[-2.0, 0.0], [1.0, 6.0]])
    out = normalize_map(m, "minmax")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.375, 1.0]], atol=1e-7)
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0, 0] == 0.0 and out[1, 1] == 1.0  # endpoints exactly at the extremes


def test_normalize_abs_values():
    m = np.array([[-4.0, 2.0], [1.0, 0.0]])
    np.testing.assert_allclose(normalize_map(m, "abs"), [[1.0, 0.5], [0.25, 0.0]], atol=1e-7)


def test_normalize_signed_keeps_zero_and_sign():
    m = np.array([[-4.0, 2.0], [1.0, 0.0]])
    out = normalize_map(m, "signed")
    np.testing.assert_allclose(out, [[-1.0, 0.5], [0.25, 0.0]], atol=1e-7)
    assert out[1, 1] == 0.0
    np.testing.assert_array_equal(np.sign(out), np.sign(m))
    # positive-only map: zero still maps to zero (not to -1 as minmax-to-[-1,1] would do)
    pos = normalize_map(np.array([0.0, 1.0, 3.0]), "signed")
    np.testing.assert_allclose(pos, [0.0, 1 / 3, 1.0], atol=1e-7)


def test_normalize_none_returns_values():
    m = np.array([[-4.5, 2.0], [1.0, 0.0]])
    out = normalize_map(m, "none")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, m.astype(np.float32))


@pytest.mark.parametrize("value", [0.0, 3.7, -2.0])
def test_normalize_constant_map_minmax_gives_zeros(value):
    out = normalize_map(np.full((5, 4), value), "minmax")
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros((5, 4), np.float32))


@pytest.mark.parametrize("mode", ["minmax", "abs", "signed"])
def test_normalize_all_zero_map_gives_zeros_in_every_mode(mode):
    out = normalize_map(np.zeros((3, 3)), mode)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros((3, 3), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", ["minmax", "abs", "signed", "none"])
def test_normalize_non_finite_raises(bad, mode):
    m = np.ones((3, 3))
    m[1, 2] = bad
    with pytest.raises(InvalidParameterError):
        normalize_map(m, mode)


def test_normalize_bad_mode_and_input():
    with pytest.raises(InvalidParameterError, match="minmax"):
        normalize_map(np.ones((2, 2)), "minmaxx")
    with pytest.raises(InvalidParameterError):
        normalize_map(np.zeros((0, 3)))
    with pytest.raises(InvalidParameterError):
        normalize_map(np.array([["a", "b"]]))
    with pytest.raises(InvalidParameterError):
        normalize_map(np.ones((2, 2)), eps=-1.0)


# --------------------------------------------------------------------------- colorize


def test_colorize_matches_matplotlib_and_endpoints():
    m = np.arange(16, dtype=np.float64).reshape(4, 4)
    out = colorize(m, "viridis", vmin=0.0, vmax=15.0)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out, cmap_rgb("viridis", m / 15.0))
    # autoscaled limits give the same result here
    np.testing.assert_array_equal(colorize(m, "viridis"), out)
    # values outside [vmin, vmax] are clipped to the end colours
    clipped = colorize(np.array([[-5.0, 99.0]]), "jet", vmin=0.0, vmax=1.0)
    np.testing.assert_array_equal(clipped[0, 0], cmap_rgb("jet", 0.0))
    np.testing.assert_array_equal(clipped[0, 1], cmap_rgb("jet", 1.0))


def test_colorize_bad_cmap_raises_with_suggestion():
    with pytest.raises(InvalidParameterError, match="viridis"):
        colorize(np.zeros((2, 2)), "virdis")
    with pytest.raises(InvalidParameterError):
        colorize(np.zeros((2, 2)), "definitely-not-a-colormap")


def test_colorize_rejects_bad_limits_and_shape():
    with pytest.raises(InvalidParameterError):
        colorize(np.zeros((2, 2)), vmin=1.0, vmax=0.0)
    with pytest.raises(InvalidParameterError):
        colorize(np.zeros((2, 2, 2)))


# --------------------------------------------------------------------------- resize_map


def test_resize_map_preserves_constant():
    out = resize_map(np.full((7, 5), 0.37), (31, 18))
    assert out.shape == (31, 18) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_resize_map_preserves_peak_location_integer_factor():
    m = np.zeros((7, 7))
    m[2, 5] = 1.0
    out = resize_map(m, (21, 21))
    # pixel-centre alignment: input centre 2 -> output centre 3*2 + 1 = 7; 5 -> 16
    assert np.unravel_index(np.argmax(out), out.shape) == (7, 16)
    assert out[7, 16] == pytest.approx(1.0)
    assert out.max() <= 1.0 + 1e-6 and out.min() >= -1e-6  # bilinear: stays in input range


def test_resize_map_preserves_peak_location_fractional_factor():
    m = np.zeros((7, 9))
    m[2, 6] = 5.0
    out = resize_map(m, (50, 40))
    r, c = np.unravel_index(np.argmax(out), out.shape)
    # input centre (i + 0.5) lands at output coordinate (i + 0.5) * scale - 0.5
    assert abs(r - ((2 + 0.5) * 50 / 7 - 0.5)) <= 1.0
    assert abs(c - ((6 + 0.5) * 40 / 9 - 0.5)) <= 1.0


def test_resize_map_same_shape_is_copy_and_bad_shape_raises():
    m = np.arange(6.0).reshape(2, 3)
    out = resize_map(m, (2, 3))
    np.testing.assert_array_equal(out, m)
    out[0, 0] = 99
    assert m[0, 0] == 0
    for bad in [(0, 3), (2,), (2, 3, 4), (2.5, 3), "ab"]:
        with pytest.raises(InvalidParameterError):
            resize_map(m, bad)


# --------------------------------------------------------------------------- overlay


def test_overlay_alpha_zero_returns_image_exactly(rng):
    img = rng.integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    hm = rng.normal(size=(12, 9))
    out = overlay(img, hm, alpha=0.0)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, img)
    assert out is not img


def test_overlay_alpha_one_returns_pure_colormap_colours(rng):
    img = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    hm = np.arange(16, dtype=np.float64).reshape(4, 4) * 2.5 - 7.0  # minmax -> k / 15
    out = overlay(img, hm, alpha=1.0, cmap="jet")
    expected = cmap_rgb("jet", np.arange(16).reshape(4, 4) / 15.0)
    np.testing.assert_array_equal(out, expected)


def test_overlay_pixel_equals_hand_computed_blend():
    img = np.zeros((2, 3, 3), dtype=np.uint8)
    img[0, 1] = (10, 200, 30)
    hm = np.array([[0.0, 1.0, 4.0], [2.0, 3.0, 4.0]])  # pixel (0, 1) normalizes to 0.25
    alpha = 0.3
    out = overlay(img, hm, alpha=alpha, cmap="viridis")
    colour = cmap_rgb("viridis", 0.25).astype(np.float64)
    expected = np.rint((1 - alpha) * np.array([10.0, 200.0, 30.0]) + alpha * colour)
    np.testing.assert_array_equal(out[0, 1], expected.astype(np.uint8))


def test_overlay_hottest_pixel_gets_top_colour_jet_dark_red(rng):
    img = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    hm = rng.random((8, 8))
    hm[5, 2] = 10.0
    hm[1, 6] = -3.0
    out = overlay(img, hm, alpha=1.0)  # default cmap is jet
    top = out[5, 2]
    np.testing.assert_array_equal(top, cmap_rgb("jet", 1.0))
    assert top[0] >= 120 and top[0] <= 135 and top[1] == 0 and top[2] == 0  # dark red
    bottom = out[1, 6]
    np.testing.assert_array_equal(bottom, cmap_rgb("jet", 0.0))
    assert bottom[0] == 0 and bottom[1] == 0 and bottom[2] >= 120  # dark blue


def test_signed_overlay_maps_zero_to_diverging_midpoint():
    img = np.full((1, 4, 3), 77, dtype=np.uint8)
    hm = np.array([[-3.0, 0.0, 1.5, 3.0]])
    out = overlay(img, hm, alpha=1.0, signed=True)  # default diverging cmap RdBu_r
    np.testing.assert_array_equal(out[0, 1], cmap_rgb("RdBu_r", 0.5))  # 0 -> middle colour
    np.testing.assert_array_equal(out[0, 0], cmap_rgb("RdBu_r", 0.0))
    np.testing.assert_array_equal(out[0, 2], cmap_rgb("RdBu_r", 0.75))
    np.testing.assert_array_equal(out[0, 3], cmap_rgb("RdBu_r", 1.0))
    # zero stays mid even when the map is one-sided (minmax would send 0 to the bottom)
    pos = overlay(img, np.array([[0.0, 1.0, 2.0, 4.0]]), alpha=1.0, signed=True)
    np.testing.assert_array_equal(pos[0, 0], cmap_rgb("RdBu_r", 0.5))


def test_overlay_resizes_heatmap_to_image():
    img = np.zeros((21, 21, 3), dtype=np.uint8)
    hm = np.zeros((7, 7))
    hm[2, 5] = 1.0
    out = overlay(img, hm, alpha=1.0)
    assert out.shape == (21, 21, 3)
    np.testing.assert_array_equal(out[7, 16], cmap_rgb("jet", 1.0))
    np.testing.assert_array_equal(out[0, 0], cmap_rgb("jet", 0.0))


def test_overlay_accepts_gray_and_float_images():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = overlay(gray, np.ones((3, 4)), alpha=0.0)
    assert out.shape == (3, 4, 3)
    for ch in range(3):
        np.testing.assert_array_equal(out[..., ch], gray)
    flt = np.linspace(0, 1, 12).reshape(3, 4)[..., None].repeat(3, axis=2)
    out = overlay(flt, np.ones((3, 4)), alpha=0.0)
    np.testing.assert_array_equal(out, np.rint(flt * 255).astype(np.uint8))
    with pytest.raises(InvalidImageError):
        overlay(flt * 255.0, np.ones((3, 4)))  # float image outside [0, 1]
    with pytest.raises(InvalidImageError):
        overlay(np.zeros((3, 4, 2), np.uint8), np.ones((3, 4)))


@pytest.mark.parametrize("alpha", [1.5, -0.1, float("nan"), "0.5", True])
def test_overlay_bad_alpha_raises(alpha):
    with pytest.raises(InvalidParameterError):
        overlay(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2)), alpha=alpha)


def test_overlay_bad_cmap_and_heatmap_raise():
    img = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(InvalidParameterError, match="jet"):
        overlay(img, np.ones((2, 2)), cmap="jte")
    with pytest.raises(InvalidParameterError):
        overlay(img, np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(InvalidParameterError):
        overlay(img, np.ones((2, 2, 2)))
    with pytest.raises(InvalidParameterError):
        overlay(img, np.ones((2, 2)), normalize="zscore")


# --------------------------------------------------------------------------- boundaries


def test_boundaries_marks_exactly_border_pixels():
    seg = np.ones((5, 5), dtype=int)
    seg[3:, 3:] = 2
    img = np.full((5, 5, 3), 40, dtype=np.uint8)
    out = boundaries(img, seg, color=(255, 0, 7))
    expected_border = {(2, 3), (2, 4), (3, 2), (4, 2), (3, 3), (3, 4), (4, 3)}
    marked = {tuple(int(v) for v in rc) for rc in np.argwhere((out != img).any(axis=2))}
    assert marked == expected_border
    for r, c in expected_border:
        np.testing.assert_array_equal(out[r, c], (255, 0, 7))
    assert (img == 40).all()  # input untouched


def test_boundaries_two_vertical_segments_default_colour():
    seg = np.array([[1, 1, 2, 2]] * 3)
    img = np.zeros((3, 4, 3), np.uint8)
    out = boundaries(img, seg)
    mask = (out != 0).any(axis=2)
    np.testing.assert_array_equal(mask, np.array([[False, True, True, False]] * 3))
    np.testing.assert_array_equal(out[mask], np.tile([255, 255, 0], (6, 1)))


def test_boundaries_validation():
    img = np.zeros((3, 4, 3), np.uint8)
    with pytest.raises(InvalidParameterError):
        boundaries(img, np.zeros((4, 3), int))
    with pytest.raises(InvalidParameterError):
        boundaries(img, np.zeros((3, 4), int), color=(300, 0, 0))
    with pytest.raises(InvalidParameterError):
        boundaries(img, np.zeros((3, 4)))  # float labels


# --------------------------------------------------------------------------- figures


def _panels(rng: np.random.Generator) -> list[Panel]:
    img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    hm = rng.random((7, 7))
    return [
        Panel(img, "Image"),
        Panel(img, "Grad-CAM\nEgyptian cat 0.54\n0.031 s", heatmap=hm, colorbar=True),
        Panel(img, "Signed", heatmap=hm - 0.5, signed=True, colorbar=True),
    ]


def test_grid_figure_renders_and_width_grows_with_columns(rng):
    panels = _panels(rng)
    fig = grid_figure(panels, suptitle="demo")
    assert isinstance(fig, Figure)
    arr = figure_to_array(fig, dpi=50)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert arr.shape[0] > 50 and arr.shape[1] > 50
    assert arr.std() > 10  # not a blank canvas
    w1 = figure_to_array(grid_figure(panels, ncols=1), dpi=50).shape[1]
    w2 = figure_to_array(grid_figure(panels, ncols=2), dpi=50).shape[1]
    w3 = figure_to_array(grid_figure(panels, ncols=3), dpi=50).shape[1]
    assert w1 < w2 < w3
    assert figure_to_array(grid_figure(panels[:1]), dpi=50).shape[1] < w3
    axes_with_images = [ax for ax in fig.axes if ax.get_images()]
    assert len(axes_with_images) == 3
    assert axes_with_images[1].get_title() == "Grad-CAM\nEgyptian cat 0.54\n0.031 s"
    assert all(not ax.axison for ax in axes_with_images)
    assert len(fig.axes) == 5  # three tiles + two colorbars


def test_grid_figure_tile_shows_the_overlay(rng):
    img = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    hm = rng.random((16, 16))
    fig = grid_figure([Panel(img, heatmap=hm, alpha=0.4)])
    shown = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), overlay(img, hm, alpha=0.4))


def test_grid_figure_validation(rng):
    with pytest.raises(InvalidParameterError):
        grid_figure([])
    with pytest.raises(InvalidParameterError):
        grid_figure(_panels(rng), ncols=0)
    with pytest.raises(InvalidParameterError):
        grid_figure([np.zeros((2, 2, 3), np.uint8)])  # type: ignore[list-item]
    with pytest.raises(InvalidParameterError):
        grid_figure([Panel(np.zeros((2, 2, 3), np.uint8), colorbar=True)])
    with pytest.raises(InvalidParameterError):
        grid_figure([Panel(np.zeros((2, 2, 3), np.uint8), heatmap=np.ones((2, 2)), alpha=1.5)])


def _bars(fig: Figure) -> list[tuple[float, float]]:
    ax = fig.axes[0]
    return [(p.get_y() + p.get_height() / 2, p.get_width()) for p in ax.patches]


def test_prediction_bar_chart_namedtuples_top_first():
    preds = [
        Prediction(281, "tabby", 0.2),
        Prediction(285, "Egyptian cat", 0.54),
        Prediction(282, "tiger cat", 0.1),
    ]
    fig = prediction_bar_chart(preds)
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 1.0)
    assert ax.get_title() == "Top predictions"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["Egyptian cat", "tabby", "tiger cat"]
    bars = _bars(fig)
    widths = [w for _, w in bars]
    assert widths == pytest.approx([0.54, 0.2, 0.1])
    # y axis inverted: the first (largest) bar is drawn highest on screen
    y_top, y_bottom = ax.get_ylim()
    assert y_top > y_bottom
    screen_y = [ax.transData.transform((0, y))[1] for y, _ in bars]
    assert screen_y[0] > screen_y[1] > screen_y[2]
    texts = {t.get_text() for t in ax.texts}
    assert {"0.540", "0.200", "0.100"} <= texts
    assert figure_to_array(fig, dpi=40).std() > 5


def test_prediction_bar_chart_plain_tuples_and_mapping():
    fig = prediction_bar_chart([("cat", 0.9), ("dog", 0.05)], title="Probs")
    assert [w for _, w in _bars(fig)] == pytest.approx([0.9, 0.05])
    assert fig.axes[0].get_title() == "Probs"
    fig = prediction_bar_chart({"a": 0.3, "b": 0.6})
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["b", "a"]


@pytest.mark.parametrize(
    "bad", [[], [("cat", 1.5)], [("cat", -0.2)], [("cat",)], [("cat", "high")], [object()]]
)
def test_prediction_bar_chart_rejects_bad_input(bad):
    with pytest.raises(InvalidParameterError):
        prediction_bar_chart(bad)


def test_colorbar_legend(tmp_path):
    fig = colorbar_legend(
        "RdBu_r", vmin=-1, vmax=1, label="evidence", ticks_labels=["against", "0", "toward"]
    )
    cax = fig.axes[0]
    assert [t.get_text() for t in cax.get_xticklabels()] == ["against", "0", "toward"]
    np.testing.assert_allclose(cax.get_xticks(), [-1.0, 0.0, 1.0])
    arr = figure_to_array(fig, dpi=50)
    assert arr.shape[1] > arr.shape[0]  # horizontal strip
    vert = figure_to_array(colorbar_legend(orientation="vertical"), dpi=50)
    assert vert.shape[0] > vert.shape[1]
    fig = colorbar_legend(ticks_labels=[(0.0, "cold"), (1.0, "hot")], orientation="vertical")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cold", "hot"]
    with pytest.raises(InvalidParameterError):
        colorbar_legend("nope")
    with pytest.raises(InvalidParameterError):
        colorbar_legend(vmin=1.0, vmax=1.0)
    with pytest.raises(InvalidParameterError):
        colorbar_legend(orientation="diagonal")


def test_figure_to_array_scales_with_dpi_and_leaves_figure_alone():
    fig = Figure(figsize=(2.0, 1.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1])
    canvas_before, dpi_before = fig.canvas, fig.dpi
    a50 = figure_to_array(fig, dpi=50)
    a100 = figure_to_array(fig, dpi=100)
    assert a50.shape == (50, 100, 3)
    assert a100.shape == (100, 200, 3)
    assert fig.canvas is canvas_before and fig.dpi == dpi_before
    with pytest.raises(InvalidParameterError):
        figure_to_array(fig, dpi=0)


def test_save_png_roundtrip(tmp_path, rng):
    arr = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    path = save_png(arr, tmp_path / "nested" / "dir" / "img.png")
    assert path.exists()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), arr)
    with pytest.raises(InvalidImageError):
        save_png(np.zeros((2, 2, 5), np.uint8), tmp_path / "bad.png")


def test_save_figure_writes_png(tmp_path, rng):
    fig = grid_figure(_panels(rng))
    path = save_figure(fig, tmp_path / "a" / "b" / "grid.png", dpi=40)
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w == pytest.approx(fig.get_figwidth() * 40, abs=2)
        assert h == pytest.approx(fig.get_figheight() * 40, abs=2)
        assert np.asarray(im.convert("RGB")).std() > 10


def test_figures_are_thread_safe(rng):
    panels = _panels(rng)

    def render(_: int) -> np.ndarray:
        return figure_to_array(grid_figure(panels, suptitle="t"), dpi=40)

    serial = render(0)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(render, range(8)))
    for r in results:
        np.testing.assert_array_equal(r, serial)


def test_viz_modules_do_not_import_pyplot_or_torch():
    # Static check: the package root may import torch for other reasons, the viz layer must not.
    viz_dir = Path(seethrough.viz.__file__).parent
    files = sorted(viz_dir.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "color.py", "overlay.py", "figures.py"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith("torch"), f"{f.name} imports {name}"
                assert "pyplot" not in name, f"{f.name} imports {name}"


def test_curve_figure_log_scale_only_for_positive_curves_spanning_decades():
    from seethrough.viz import curve_figure

    steep = curve_figure(np.geomspace(1000.0, 1.0, 20), title="loss")
    assert steep.axes[0].get_yscale() == "log"
    line = steep.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), np.geomspace(1000.0, 1.0, 20))
    assert list(line.get_xdata()[[0, -1]]) == [1, 20]
    assert curve_figure([3.0, 2.0, 1.5]).axes[0].get_yscale() == "linear"
    assert curve_figure([1.0, -1.0, 1000.0]).axes[0].get_yscale() == "linear"


@pytest.mark.parametrize("bad", [[], [np.nan, np.inf]])
def test_curve_figure_needs_a_finite_value(bad):
    from seethrough.viz import curve_figure

    with pytest.raises(InvalidParameterError):
        curve_figure(bad)


# --------------------------------------------------------------------------- the CLI's figure

EDGE_PX = 3  # the outer rows and columns that must hold no ink at all
BAND_PX = 12  # the most white above the first and below the last ink (0.06 in margin at 120 dpi)


def _cli_figure(monkeypatch, tmp_path, model, methods) -> tuple[Figure, np.ndarray]:
    """The figure ``seethrough explain`` writes for the bundled photo, and its PNG's pixels."""
    from seethrough.cli import main as cli

    drawn: list[Figure] = []
    real = seethrough.viz.save_figure

    def keep(fig: Figure, path, *args, **kwargs):
        drawn.append(fig)
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(seethrough.viz, "save_figure", keep)
    image = "sample:chelsea"
    results = [seethrough.explain(model, image, m, **kw) for m, kw in methods]
    cli._save_figure(model, image, results, tmp_path / "figure.png")
    with Image.open(tmp_path / "figure.png") as im:
        pixels = np.asarray(im.convert("RGB"))
    (fig,) = drawn
    return fig, pixels


def _check_edges(pixels: np.ndarray) -> None:
    """No ink in the outer rows and columns; a small white band at the top and the bottom."""
    grey = pixels.min(axis=2)
    for name, edge in (
        ("top", grey[:EDGE_PX]),
        ("bottom", grey[-EDGE_PX:]),
        ("left", grey[:, :EDGE_PX]),
        ("right", grey[:, -EDGE_PX:]),
    ):
        assert edge.min() >= 250, f"ink in the {name} {EDGE_PX} px"
    inked = np.flatnonzero((grey < 250).any(axis=1))
    top, bottom = inked[0], len(grey) - 1 - inked[-1]
    assert top <= BAND_PX and bottom <= BAND_PX, (top, bottom)


def _image_rows(fig: Figure, ncols: int) -> list[list]:
    images = [ax for ax in fig.axes if ax.get_images()]
    return [images[i : i + ncols] for i in range(0, len(images), ncols)]


def test_cli_figure_one_row_keeps_every_title_inside(monkeypatch, tmp_path, lite0):
    methods = [("cam", {}), ("gradcam", {}), ("gradcam++", {})]
    fig, pixels = _cli_figure(monkeypatch, tmp_path, lite0, methods)
    _check_edges(pixels)
    (row,) = _image_rows(fig, 4)
    assert len(row) == 4
    boxes = [ax.get_position() for ax in row]
    assert len({(round(b.y0, 6), round(b.y1, 6)) for b in boxes}) == 1
    # each title's top lies inside the picture, below the white margin
    height = pixels.shape[0]
    for ax in row:
        extent = ax.title.get_window_extent()
        assert extent.y1 / fig.dpi * 120 < height - EDGE_PX


def test_cli_figure_two_rows_aligned_with_colour_bar_and_dff_legend(monkeypatch, tmp_path, lite0):
    methods = [("cam", {}), ("gradcam", {"relu": False}), ("dff", {"n_iter": 20})]
    fig, pixels = _cli_figure(monkeypatch, tmp_path, lite0, methods)
    _check_edges(pixels)
    rows = _image_rows(fig, 4)
    assert [len(r) for r in rows] == [4, 1]  # input, CAM, signed Grad-CAM, DFF | DFF concepts
    assert len(fig.axes) == 6  # and the signed map's colour bar
    # every image of the first row spans the same pixel rows, the one with a colour bar too
    height = pixels.shape[0]
    spans = {
        (round((1 - b.y1) * height), round((1 - b.y0) * height))
        for b in (ax.get_position() for ax in rows[0])
    }
    assert len(spans) == 1, spans
    (top, bottom) = spans.pop()
    # the pictures themselves: the tile's top pixel row is image, the row above it is white
    for ax in rows[0]:
        b = ax.get_position()
        x = round((b.x0 + b.x1) / 2 * pixels.shape[1])
        assert pixels[top + 1, x - 20 : x + 20].min(axis=1).max() < 250
        assert pixels[top - 2, x - 20 : x + 20].min() >= 250
        assert pixels[bottom - 2, x - 20 : x + 20].min(axis=1).max() < 250

    # the concepts tile has its legend: one entry per concept with its colour and classes
    from seethrough.viz import concept_entries

    (concepts,) = rows[1]
    assert "concepts" in concepts.get_title()
    legend = concepts.get_legend()
    assert legend is not None
    dff = seethrough.explain(lite0, "sample:chelsea", "dff", n_iter=20)
    expected = concept_entries(dff.extras["concept_labels"], dff.extras["concept_scores"])
    assert [t.get_text().replace("\n", " ") for t in legend.get_texts()] == [
        text for _, text in expected
    ]
    # ... drawn in the picture, under the tile: each swatch colour is there
    below = pixels[round((1 - concepts.get_position().y0) * height) :]
    for colour, _ in expected:
        rgb = np.array(matplotlib.colors.to_rgb(colour)) * 255
        assert (np.abs(below.astype(float) - rgb).max(axis=2) < 2).sum() > 20, colour


def test_grid_figure_colour_bar_labels_stay_inside_the_last_column(rng):
    img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    signed = rng.random((7, 7)) - 0.5
    fig = grid_figure(
        [Panel(img, "a"), Panel(img, "signed", heatmap=signed, signed=True, colorbar=True)]
    )
    pixels = figure_to_array(fig, dpi=120)
    _check_edges(pixels)
    images = [ax for ax in fig.axes if ax.get_images()]
    assert images[0].get_position().y0 == pytest.approx(images[1].get_position().y0)


def test_grid_figure_draws_a_panel_legend(rng):
    img = np.full((32, 32, 3), 255, np.uint8)
    entries = [("#ff0000", "1: first"), ("#0000ff", "2: " + "long text " * 20)]
    fig = grid_figure([Panel(img, "with legend", legend=entries), Panel(img, "without")])
    with_legend, without = (ax for ax in fig.axes if ax.get_images())
    assert without.get_legend() is None
    texts = [t.get_text() for t in with_legend.get_legend().get_texts()]
    assert texts[0] == "1: first"
    assert len(texts[1].splitlines()) >= 2  # wrapped to about the tile's width
    pixels = figure_to_array(fig, dpi=120)
    _check_edges(pixels)
    red = (pixels[..., 0] > 240) & (pixels[..., 1] < 15) & (pixels[..., 2] < 15)
    assert red.sum() > 20


def test_concept_entries_give_each_concept_its_colour_and_classes():
    from seethrough.viz import concept_colors, concept_entries

    labels = [["tabby", "tiger cat"], ["lynx", "tabby"]]
    scores = [[0.5, 0.25], [0.125, 0.0625]]
    entries = concept_entries(labels, scores)
    assert entries == [
        ("#1f77b4", "1: tabby 0.50, tiger cat 0.25"),
        ("#ff7f0e", "2: lynx 0.12, tabby 0.06"),
    ]
    assert [matplotlib.colors.to_rgb(c) for c, _ in entries] == [
        tuple(c) for c in concept_colors(2)
    ]
    assert concept_entries(None, None, ["red"], k=2) == [
        ("#ff0000", "1: concept 1"),
        ("#ff0000", "2: concept 2"),
    ]
    with pytest.raises(InvalidParameterError):
        concept_entries(None, None)
    with pytest.raises(InvalidParameterError):
        concept_entries([["a"]], [[0.1, 0.2]])

"""Visualization layer: pure functions from NumPy arrays to images and matplotlib figures.

No torch, no pyplot global state: every figure is a :class:`matplotlib.figure.Figure` rendered
with the Agg backend, so these helpers are safe to call from several threads at once.
"""

from .color import NORMALIZE_MODES, colorize, get_cmap, normalize_map, resize_map
from .concepts import (
    concept_colors,
    concept_entries,
    concept_legend,
    concept_overlay,
    feature_grid,
)
from .detection import (
    box_colors,
    class_colors,
    draw_boxes,
    draw_region,
    mask_legend,
    mask_outline,
    mask_overlay,
)
from .explanations import explanation_panels, is_signed
from .features import bar_plot, beeswarm, text_html, waterfall
from .figures import (
    Panel,
    colorbar_legend,
    curve_figure,
    figure_to_array,
    grid_figure,
    prediction_bar_chart,
    save_figure,
    save_png,
)
from .overlay import boundaries, overlay, to_rgb_uint8
from .superpixels import paint_segments, signed_segments, top_segments

__all__ = [
    "NORMALIZE_MODES",
    "Panel",
    "boundaries",
    "colorbar_legend",
    "colorize",
    "curve_figure",
    "figure_to_array",
    "get_cmap",
    "grid_figure",
    "normalize_map",
    "overlay",
    "prediction_bar_chart",
    "resize_map",
    "save_figure",
    "save_png",
    "to_rgb_uint8",
    "paint_segments",
    "top_segments",
    "signed_segments",
    "explanation_panels",
    "is_signed",
    "concept_colors",
    "concept_entries",
    "concept_legend",
    "concept_overlay",
    "feature_grid",
    "box_colors",
    "class_colors",
    "draw_boxes",
    "draw_region",
    "mask_legend",
    "mask_outline",
    "mask_overlay",
    "bar_plot",
    "waterfall",
    "beeswarm",
    "text_html",
]

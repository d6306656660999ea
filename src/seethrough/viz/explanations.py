"""Choose how to draw an explanation: the panels a figure shows for it.

Duck-typed on the attributes of :class:`seethrough.Explanation` (``image``, ``map``,
``segments``, ``weights``, ``caption()``), so this layer stays free of the library's types.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .concepts import concept_entries, concept_overlay
from .figures import Panel
from .superpixels import signed_segments, top_segments

__all__ = ["explanation_panels", "is_signed"]


def is_signed(m: np.ndarray) -> bool:
    """A map with negative values is drawn with a diverging colormap centred at 0."""
    return bool(np.nanmin(m) < 0)


def explanation_panels(e: Any, *, views: str = "all", top_k: int = 5) -> list[Panel]:
    """The panels for explanation ``e``.

    Every explanation gets its map over the image (a diverging, 0-centred colormap with a legend
    when the map is signed). With ``views="all"``, segment-based explanations (LIME, Kernel
    SHAP) also get the ``top_k`` superpixels with the rest dimmed, the same superpixels outlined
    on the untouched image, and the positive / negative superpixels in two colours; Deep
    Feature Factorization gets its concepts in colours with a legend (each concept's colour and
    top classes), feature inversion its optimised image. An explanation of a box or a class mask
    (its ``region``) shows that box's or mask's outline on the map.
    """
    weights = e.weights
    if weights is not None and np.ndim(weights) == 2:
        weights = weights[0]
    signed = is_signed(e.map)
    region = getattr(e, "region", None) if e.image is not None else None
    panels = [
        Panel(
            e.image,
            title=e.caption(),
            heatmap=e.map,
            signed=signed,
            colorbar=signed,
            region=region,
        )
    ]
    name = e.caption().splitlines()[0]
    if views == "all" and e.image is not None and "concepts" in e.extras:
        concepts = e.extras["concepts"]
        legend = concept_entries(
            e.extras.get("concept_labels"), e.extras.get("concept_scores"), k=len(concepts)
        )
        panels.append(
            Panel(concept_overlay(e.image, concepts), title=f"{name}\nconcepts", legend=legend)
        )
    if "inverted_image" in e.extras:  # the optimised image is the result, not a map on the photo
        panels = [Panel(e.extras["inverted_image"], title=f"{e.caption()}\n(optimised image)")]
    if views == "all" and e.segments is not None and weights is not None and e.image is not None:
        panels.append(
            Panel(
                top_segments(e.image, e.segments, weights, top_k),
                title=f"{name}\ntop {top_k} superpixels",
            )
        )
        panels.append(  # the same regions outlined on the untouched image
            Panel(
                top_segments(e.image, e.segments, weights, top_k, dim=1.0),
                title=f"{name}\ntop {top_k} on the image",
            )
        )
        panels.append(
            Panel(
                signed_segments(e.image, e.segments, weights),
                title=f"{name}\ngreen: toward the class\nred: toward other classes",
            )
        )
    return panels

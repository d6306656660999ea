"""Views of detections and segmentations: boxes with labels and scores, class-mask overlays,
and the outline of the box or mask an explanation explains.

Pure functions: NumPy in, ``uint8`` RGB out (boxes and their text drawn with Pillow's
``ImageDraw``, mask borders found with scikit-image). Nothing here imports torch or pyplot.
Region-valued arguments are duck-typed: anything with ``kind`` (``"box"`` or ``"mask"``),
``box`` (corners ``x0, y0, x1, y1``) and ``pixels`` (boolean ``(H, W)``), such as
:class:`seethrough.explanation.Region`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import to_hex, to_rgb
from numpy.typing import ArrayLike, NDArray
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

from ..errors import InvalidParameterError
from .overlay import to_rgb_uint8

__all__ = [
    "BOX_COLOR",
    "OUTLINE_COLOR",
    "box_colors",
    "draw_boxes",
    "class_colors",
    "mask_overlay",
    "mask_legend",
    "mask_outline",
    "draw_region",
]

BOX_COLOR = (255, 0, 255)
"""The colour of an explained box's outline (magenta: it stays apart from jet's colours)."""
OUTLINE_COLOR = (255, 255, 255)
"""The colour of an explained mask's outline."""

Color = Sequence[int]


def _check_color(color: Color, name: str = "color") -> tuple[int, int, int]:
    try:
        col = tuple(int(c) for c in color)
        valid = len(col) == 3 and all(
            c == o and 0 <= c <= 255 for c, o in zip(col, color, strict=True)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InvalidParameterError(f"{name} must be three integers in [0, 255], got {color!r}.")
    return col  # type: ignore[return-value]


def box_colors(k: int) -> list[tuple[int, int, int]]:
    """``k`` distinct RGB colours (tab10, then tab20), one per drawn box."""
    specs = matplotlib.colormaps["tab10" if k <= 10 else "tab20"].colors  # type: ignore[attr-defined]
    return [
        tuple(int(round(v * 255)) for v in to_rgb(specs[i % len(specs)]))  # type: ignore[misc]
        for i in range(k)
    ]


def _boxes_array(boxes: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
        raise InvalidParameterError(
            f"boxes must be finite corners (K, 4) x0, y0, x1, y1; got shape {arr.shape}."
        )
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise InvalidParameterError("boxes must have x0 <= x1 and y0 <= y1.")
    return arr


def draw_boxes(
    image: ArrayLike,
    boxes: ArrayLike,
    labels: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
    *,
    colors: Sequence[Color] | None = None,
    width: int = 2,
    text: bool = True,
) -> NDArray[np.uint8]:
    """Draw boxes on an image, each with its label and score in a tag at its top left corner.

    A box ``(x0, y0, x1, y1)`` in pixel coordinates covers the pixels whose centres lie inside
    it; its outline is the ``width`` pixels along its edges, inside the box: columns
    ``floor(x0) .. floor(x0) + width - 1`` and ``ceil(x1) - width .. ceil(x1) - 1``, rows
    likewise (clipped to the image).

    Args:
        image: the image (anything :func:`~seethrough.viz.overlay.to_rgb_uint8` accepts).
        boxes: corners ``(K, 4)`` in the image's pixels.
        labels: one text per box (class names), or ``None``.
        scores: one confidence per box, shown after its label, or ``None``.
        colors: one RGB colour per box (cycled); default :func:`box_colors`.
        width: outline width in pixels (>= 1).
        text: draw the label / score tags.

    Returns:
        A new ``uint8`` array ``(H, W, 3)``; the first box is drawn last (on top).
    """
    rgb = to_rgb_uint8(image)
    arr = _boxes_array(boxes)
    k = len(arr)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise InvalidParameterError(f"width must be an integer >= 1, got {width!r}.")
    for name, seq in (("labels", labels), ("scores", scores)):
        if seq is not None and len(seq) != k:
            raise InvalidParameterError(f"{len(seq)} {name} for {k} boxes.")
    palette = [_check_color(c) for c in colors] if colors is not None else box_colors(max(k, 1))
    if not palette:
        raise InvalidParameterError("colors must hold at least one colour.")
    out = Image.fromarray(rgb)
    draw = ImageDraw.Draw(out)
    h, w = rgb.shape[:2]
    font = ImageFont.load_default(size=max(8, min(h, w) // 24))
    for i in reversed(range(k)):
        color = palette[i % len(palette)]
        x0, y0, x1, y1 = _pixel_box(arr[i], h, w)
        if x1 < x0 or y1 < y0:
            continue  # outside the image
        for t in range(int(width)):
            if x0 + t > x1 - t or y0 + t > y1 - t:
                break
            draw.rectangle((x0 + t, y0 + t, x1 - t, y1 - t), outline=color)
        words = []
        if labels is not None:
            words.append(str(labels[i]))
        if scores is not None:
            words.append(f"{float(scores[i]):.2f}")
        if text and words:
            tag = " ".join(words)
            left, top, right, bottom = draw.textbbox((0, 0), tag, font=font)
            tw, th = right - left + 4, bottom - top + 2
            ty = y0 - th if y0 - th >= 0 else y0
            draw.rectangle((x0, ty, x0 + tw - 1, ty + th - 1), fill=color)
            draw.text((x0 + 2 - left, ty + 1 - top), tag, fill=_ink(color), font=font)
    return np.asarray(out, dtype=np.uint8).copy()


def _pixel_box(box: NDArray[np.float64], h: int, w: int) -> tuple[int, int, int, int]:
    """The inclusive pixel rectangle a box covers, clipped to the image."""
    x0 = max(int(np.floor(box[0])), 0)
    y0 = max(int(np.floor(box[1])), 0)
    x1 = min(int(np.ceil(box[2])) - 1, w - 1)
    y1 = min(int(np.ceil(box[3])) - 1, h - 1)
    return x0, y0, max(x1, x0 - 1), max(y1, y0 - 1)


def _ink(color: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (c / 255 for c in color)
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else (255, 255, 255)


def class_colors(num_classes: int, background: int | None = 0) -> NDArray[np.uint8]:
    """One RGB colour per class ``(C, 3)``: the PASCAL VOC palette (bits of the class index
    spread over the three channels), so the classes of VOC's segmenters get their usual
    colours; ``background`` black."""
    idx = np.arange(num_classes)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for shift in range(8):
        for ch in range(3):
            palette[:, ch] |= ((idx >> (3 * shift + ch)) & 1) << (7 - shift)
    if background is not None and 0 <= background < num_classes:
        palette[background] = 0
    return palette.astype(np.uint8)


def _check_classes(classes: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.int64]:
    arr = np.asarray(classes)
    if arr.dtype.kind not in "iu" or arr.ndim != 2:
        raise InvalidParameterError(
            f"classes must be an integer class map (H, W), got {arr.dtype} {arr.shape}."
        )
    if arr.shape != shape:
        raise InvalidParameterError(
            f"classes shape {arr.shape} does not match image shape {shape}."
        )
    if arr.size and arr.min() < 0:
        raise InvalidParameterError("classes must be >= 0.")
    return arr.astype(np.int64)


def mask_overlay(
    image: ArrayLike,
    classes: ArrayLike,
    *,
    alpha: float = 0.5,
    background: int | None = 0,
    colors: ArrayLike | None = None,
) -> NDArray[np.uint8]:
    """Paint each pixel with its class's colour over the image, the background left as is::

        out = round((1 - alpha) * image + alpha * colour[class])    (other classes)

    with borders between classes drawn in full colour.

    Args:
        image: the image ``(H, W, 3)``.
        classes: the class map ``(H, W)`` (e.g. ``MaskPrediction.classes``), at the image's size.
        alpha: opacity of the class colours, in [0, 1].
        background: the class left unpainted (``None``: paint every class).
        colors: RGB colours per class ``(C, 3)``; default :func:`class_colors`.

    Returns:
        uint8 ``(H, W, 3)``.
    """
    rgb = to_rgb_uint8(image)
    cls = _check_classes(classes, rgb.shape[:2])
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidParameterError(f"alpha must lie in [0, 1], got {alpha!r}.")
    n = int(cls.max()) + 1 if cls.size else 1
    palette = class_colors(n, background) if colors is None else np.asarray(colors, np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) < n:
        raise InvalidParameterError(f"colors must be (C, 3) with C >= {n}, got {palette.shape}.")
    colour = palette[cls].astype(np.float64)
    out = rgb.astype(np.float64)
    paint = np.ones(cls.shape, bool) if background is None else cls != background
    out[paint] = (1.0 - alpha) * out[paint] + alpha * colour[paint]
    edges = find_boundaries(cls, mode="inner") & paint
    out[edges] = colour[edges]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mask_legend(
    present: Sequence[tuple[str, float]],
    labels: Sequence[str],
    *,
    background: int | None = 0,
    colors: ArrayLike | None = None,
) -> list[tuple[str, str]]:
    """The legend of :func:`mask_overlay`: one ``(colour "#rrggbb", "label 12.3%")`` per class
    present (``MaskPrediction.present``: label and pixel fraction, most first), for
    :class:`~seethrough.viz.figures.Panel`'s ``legend`` and for tables."""
    palette = class_colors(len(labels), background) if colors is None else np.asarray(colors)
    index = {label: i for i, label in enumerate(labels)}
    entries = []
    for label, fraction in present:
        if label not in index:
            raise InvalidParameterError(f"class {label!r} is not one of the labels.")
        rgb = palette[index[label]] / 255.0
        entries.append((to_hex(rgb), f"{label} {100 * float(fraction):.1f}%"))
    return entries


def mask_outline(
    image: ArrayLike, pixels: ArrayLike, color: Color = OUTLINE_COLOR, *, width: int = 1
) -> NDArray[np.uint8]:
    """Draw the border of a boolean region ``(H, W)`` on the image: the region's pixels that
    touch a pixel outside it (grown inward to ``width`` pixels). A region of another size than
    the image is resized to it (nearest neighbour)."""
    rgb = to_rgb_uint8(image)
    col = _check_color(color)
    mask = np.asarray(pixels) != 0
    if mask.ndim != 2:
        raise InvalidParameterError(f"pixels must be a 2-D mask, got shape {mask.shape}.")
    mask = _resize_mask(mask, rgb.shape[:2])
    out = rgb.copy()
    inside = mask.copy()
    for _ in range(max(int(width), 1)):
        edge = find_boundaries(inside, mode="inner") & inside
        out[edge] = col
        inside &= ~edge
    return out


def _resize_mask(mask: NDArray[np.bool_], shape: tuple[int, int]) -> NDArray[np.bool_]:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[rows][:, cols]


def draw_region(
    image: ArrayLike, region: Any, *, color: Color | None = None, width: int = 2
) -> NDArray[np.uint8]:
    """The outline of what an explanation explains on ``image``: a box's rectangle
    (:data:`BOX_COLOR`, its label in a tag) or a mask's border (:data:`OUTLINE_COLOR`).

    ``region`` is duck-typed (``kind``, ``box``, ``pixels``, ``label``); box corners are in
    pixels of the image the model saw, so give that image (``Explanation.image``)."""
    kind = getattr(region, "kind", None)
    if kind == "box" and getattr(region, "box", None) is not None:
        label = getattr(region, "label", None)
        return draw_boxes(
            image,
            [region.box],
            None if label is None else [str(label)],
            colors=[color or BOX_COLOR],
            width=width,
        )
    if kind == "mask" and getattr(region, "pixels", None) is not None:
        return mask_outline(image, region.pixels, color or OUTLINE_COLOR, width=width)
    raise InvalidParameterError(
        f"a region must be a box with corners or a mask with pixels, got {region!r}."
    )

"""Synthetic digits on clutter: a benchmark with ground-truth object masks and a model trained on it.

Every image holds ONE handwritten digit (an 8x8 image of scikit-learn's ``load_digits``, shipped
inside scikit-learn: no download), its 8x8 cell upscaled smoothly to 30-60 % of the image side,
slightly rotated, sheared and stretched, placed fully inside the image in a colour that contrasts with the background under it. The
background is clutter that carries no class information and holds no digit-like shape: smooth
colour noise, soft stripes, blobs, rectangles, thin line fragments and pixel noise, in random
colours (the digit is not "the bright thing"). The class is the digit's alone, and its pixels are
known, so an explanation can be scored against where the evidence really is.

* :func:`make_digits` renders a data set (``split="train"`` and ``"test"`` draw their digits from
  disjoint source images); ``with_digit=False`` renders the very same backgrounds without the digit.
* :func:`make_shortcut_digits` plants a shortcut: a corner marker on every image of one class.
* :func:`write_folder` writes ``images/``, ``masks/`` and ``labels.csv`` for command-line tools.

The small CNN trained on them, its training and its cache are in :mod:`seethrough.models.digits`
(``load_model("synthetic_digits")``); their names here still resolve, to that module.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..core.threads import torch_threads
from ..errors import InvalidParameterError

__all__ = [
    "LABEL_NAMES",
    "SyntheticDigits",
    "SyntheticScenes",
    "ShortcutDigits",
    "make_digits",
    "make_shortcut_digits",
    "make_scenes",
    "digit_sources",
    "write_folder",
]

LABEL_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))
_SPLITS = {"train": 0, "test": 1}
_CHUNK = 256  # images rendered at once
_LAYERS = {"blobs": 3, "rects": 3, "lines": 4}  # clutter items drawn per image (each may be off)
Split = Literal["train", "test"]


# ------------------------------------------------------------------------------------ sources


@lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits as float32 ``(1797, 8, 8)`` in [0, 1] and their int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def digit_sources(split: Split = "train") -> np.ndarray:
    """Indices into scikit-learn's digits that a split draws from (test: every fifth, from 4).

    Args:
        split: ``"train"`` (about 80 % of the 1797 digits) or ``"test"`` (the other 20 %).
    """
    if split not in _SPLITS:
        raise InvalidParameterError(f"split must be 'train' or 'test', got {split!r}")
    index = np.arange(len(_sklearn_digits()[1]))
    return index[(index % 5 == 4) == (split == "test")]


# ---------------------------------------------------------------------------------- rendering


@dataclass
class _Rendered:
    """What every rendered data set holds, indexed by image first: the images and their masks,
    boxes and labels (their shapes are given by each data set)."""

    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        """The number of images."""
        return len(self.images)


@dataclass
class SyntheticDigits(_Rendered):
    """A rendered data set; arrays are indexed by image.

    Attributes:
        images: uint8 ``(N, size, size, 3)`` RGB images.
        masks: bool ``(N, size, size)``: the digit's stroke pixels (where its blending weight is
            above 0.5), dilated by one pixel so that soft stroke edges count.
        boxes: int64 ``(N, 4)``: ``(x0, y0, x1, y1)``, the tight box of ``masks`` (ends exclusive,
            so ``masks[i, y0:y1, x0:x1]`` holds every mask pixel).
        labels: int64 ``(N,)``: the digit's class, ``0`` to ``9``.
        sources: int64 ``(N,)``: the index of the digit in scikit-learn's ``load_digits``.
        label_names: ``"0"`` to ``"9"``.
        split: ``"train"`` or ``"test"``.
        seed: the seed it was rendered from.
    """

    sources: np.ndarray
    label_names: tuple[str, ...] = LABEL_NAMES
    split: str = "train"
    seed: int = 0


def _sources(rng: np.random.Generator, pool: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """One source digit of each label, drawn from ``pool`` (the split's sources per label)."""
    counts = np.array([len(sources) for sources in pool])
    flat, offsets = np.concatenate(pool), np.r_[0, np.cumsum(counts)[:-1]]
    return flat[offsets[labels] + (rng.random(labels.shape) * counts[labels]).astype(np.int64)]


def _draw(rng: np.random.Generator, pool: list[np.ndarray], size: int) -> dict[str, torch.Tensor]:
    """Every random choice of a chunk of images (lengths in pixels of a ``size``-pixel image)."""
    n, u, f, k = _CHUNK, rng.uniform, size / 64, _LAYERS
    labels = rng.integers(10, size=n)

    def items(count: int, chance: float, *ranges: tuple[float, float]) -> np.ndarray:
        """``(n, count, 1 + len(ranges))``: whether each item is drawn, then its parameters."""
        values = [u(low, high, (n, count, 1)) for low, high in ranges]
        return np.concatenate([rng.random((n, count, 1)) < chance, *values], 2)

    corner, side = (-8 * f, 60 * f), (4 * f, 24 * f)  # of rectangles
    values = {
        "label": labels,
        "source": _sources(rng, pool, labels),
        # background: a base colour plus coarse and fine smooth noise
        "base": u(0.15, 0.85, (n, 3)),
        "coarse": u(-1, 1, (n, 3, 4, 4)) * u(0.1, 0.3, (n, 1, 1, 1)),
        "fine": u(-1, 1, (n, 3, 8, 8)) * u(0.03, 0.12, (n, 1, 1, 1)),
        # soft stripes: on, angle, period, phase, strength
        "stripes": items(1, 0.5, (0, np.pi), (8 * f, 16 * f), (0, 2 * np.pi), (0.2, 0.6))[:, 0],
        # blobs: on, x, y, sigma, strength
        "blobs": items(k["blobs"], 0.7, (0, size), (0, size), (3 * f, 10 * f), (0.4, 0.9)),
        # rectangles: on, x, y, width, height, opacity
        "rects": items(k["rects"], 0.7, corner, corner, side, side, (0.5, 1.0)),
        # thin line fragments: on, x, y, angle, length, width
        "lines": items(
            k["lines"], 0.7, (0, size), (0, size), (0, np.pi), (6 * f, 20 * f), (0.6, 1.4)
        ),
        "colours": u(0, 1, (n, 1 + sum(k.values()), 3)),  # stripes, blobs, rectangles, lines
        "noise": u(0, 0.07, (n, 1, 1, 1)) * (rng.random((n, 3, size, size), np.float32) - 0.5),
        # the digit: side of its 8x8 cell, rotation, shear, log aspect ratio, centre (fraction
        # of the free range)
        "digit": np.c_[
            u(0.3, 0.6, n) * size, u(-0.2, 0.2, n), u(-0.1, 0.1, (n, 2)), u(0, 1, (n, 2))
        ],
        "digit_colours": u(0, 1, (n, 4, 3)),  # candidates: the farthest from the background wins
    }
    return {
        key: torch.from_numpy(v).float() if v.dtype.kind in "fb" else torch.from_numpy(v)
        for key, v in values.items()
    }


def _blend(image: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Paint ``colour`` ``(B, 3)`` over ``image`` ``(B, 3, H, W)`` with weights ``(B, H, W)``."""
    return image.lerp_(colour[:, :, None, None], alpha[:, None])


def _upsample(t: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Smooth resize of ``(B, C, h, w)`` to ``size`` x ``size``."""
    return F.interpolate(t, size=(size, size), mode=mode, align_corners=False)


def _background(p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """The clutter of drawn parameters: float images ``(B, 3, S, S)`` in [0, 1]."""
    colours = iter(p["colours"].unbind(1))
    # smooth layers (noise, stripes, blobs) at half resolution, then upsampled
    half = size // 2
    grid = (torch.arange(half, dtype=torch.float32) + 0.5) * (size / half)
    ys, xs = grid[:, None], grid[None, :]
    image = p["base"][:, :, None, None] + _upsample(p["coarse"], half) + _upsample(p["fine"], half)
    on, angle, period, phase, strength = p["stripes"].T[..., None, None]
    wave = torch.sin((xs * angle.cos() + ys * angle.sin()) * (2 * np.pi / period) + phase)
    image = _blend(image, on * strength * (0.5 + 0.5 * (2 * wave).clamp(-1, 1)), next(colours))
    for on, x, y, sigma, strength in p["blobs"].permute(1, 2, 0)[..., None, None]:
        blob = torch.exp(((xs - x) ** 2 + (ys - y) ** 2) / (-2 * sigma**2))
        image = _blend(image, on * strength * blob, next(colours))
    image = _upsample(image, size, "bilinear")
    # sharp layers at full resolution: rectangles and thin line fragments
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = grid[:, None], grid[None, :]
    for on, x, y, w, h, opacity in p["rects"].permute(1, 2, 0)[..., None, None]:
        inside = ((xs >= x) & (xs < x + w)) * ((ys >= y) & (ys < y + h)) * (on * opacity)
        image = _blend(image, inside, next(colours))
    for on, x, y, angle, length, width in p["lines"].permute(1, 2, 0)[..., None, None]:
        dx, dy, rx, ry = angle.cos(), angle.sin(), xs - x, ys - y
        t = (rx * dx + ry * dy).clamp(-length / 2, length / 2)
        line = (width / 2 + 0.5 - torch.hypot(rx - t * dx, ry - t * dy)).clamp(0, 1)
        image = _blend(image, on * line, next(colours))
    return image.clamp_(0, 1)


def _shape(digit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each digit's warp, side and extent, from its drawn ``(side, rotation, shear, aspect)``.

    Returns the warp ``(B, 2, 2)`` (cell coordinates -> image coordinates, in units of the side),
    the side in pixels (shrunk where the warped cell would not fit the image) and the extent
    ``(B, 2)``: the warped cell's width and height in pixels.
    """
    n = len(digit)
    side, rotation, shear, aspect = digit[:, :4].T
    cos, sin, one, zero = rotation.cos(), rotation.sin(), torch.ones(n), torch.zeros(n)
    warp = (
        torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2)
        @ torch.stack([one, shear, zero, one], 1).view(n, 2, 2)
        @ torch.diag_embed(torch.stack([aspect.exp(), (-aspect).exp()], 1))
    )
    reach = warp.abs().sum(2)  # (n, 2): the warped cell's extent along x and y, per unit side
    side = torch.minimum(side, size / reach.max(1).values)
    return warp, side, reach * side[:, None]


def _ink(
    image: torch.Tensor,
    cells: torch.Tensor,
    shape: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    centre: torch.Tensor,
    candidates: torch.Tensor,
    draw: torch.Tensor,
    grow: int = 1,
) -> torch.Tensor:
    """Paint one digit per image onto ``image`` ``(B, 3, S, S)`` (in place) and return its
    stroke masks ``(B, S, S)``: the pixels painted with weight above 0.5 (more digit than
    background), grown by ``grow`` pixels (a square window).

    ``cells`` are the 8x8 digits, ``shape`` what :func:`_shape` gives, ``centre`` ``(B, 2)`` the
    warped cell's centre in pixels; of the colours ``candidates`` ``(B, 4, 3)`` the one farthest
    from the background under the strokes wins. Images where the bool ``draw`` ``(B,)`` is false
    are left as they are.
    """
    n, size = len(image), image.shape[-1]
    warp, side, _ = shape
    inverse = torch.linalg.inv(warp)  # image (x, y) in [-1, 1] -> digit (u, v) in [-1, 1]
    shift = (inverse @ (size - 2 * centre)[:, :, None]) / size
    theta = torch.cat([inverse, shift], 2) * (size / side)[:, None, None]
    sampling = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    ink = F.grid_sample(cells[:, None], sampling, mode="bicubic", align_corners=False)
    t = ((ink[:, 0] - 0.25) / 0.3).clamp(0, 1)
    alpha = t * t * (3 - 2 * t)  # smoothstep: solid strokes with soft edges
    local = (alpha[:, None] * image).sum((2, 3)) / alpha.sum((1, 2))[:, None].clamp_min(1e-6)
    colour = candidates[torch.arange(n), (candidates - local[:, None]).norm(dim=2).argmax(1)]
    _blend(image, alpha * draw[:, None, None], colour)
    strokes = (alpha > 0.5).float()[:, None]
    return F.max_pool2d(strokes, 2 * grow + 1, stride=1, padding=grow)[:, 0] > 0


def _render(p: dict[str, torch.Tensor], size: int, with_digit: bool) -> dict[str, torch.Tensor]:
    """Render drawn parameters: float images ``(B, 3, S, S)`` in [0, 1] and stroke masks."""
    image = _background(p, size)
    # the digit: its 8x8 cell, sheared, stretched, rotated and scaled to about `side` pixels, lies
    # fully inside the image
    shape = _shape(p["digit"], size)
    extent = shape[2]
    centre = extent / 2 + p["digit"][:, 4:6] * (size - extent)
    draw = torch.full((len(image),), with_digit)
    masks = _ink(image, p["digits"], shape, centre, p["digit_colours"], draw)
    return {"images": image.add_(p["noise"]).clamp_(0, 1), "masks": masks}


def make_digits(
    n: int, *, size: int = 64, seed: int = 0, split: Split = "train", with_digit: bool = True
) -> SyntheticDigits:
    """Render ``n`` images, each one digit on clutter (see the module docstring).

    Image ``i`` depends only on ``(seed, split, i, size)``: ``make_digits(10)`` is the first ten
    images of ``make_digits(1000)``, and ``with_digit=False`` gives the same images with the digit
    left out (the backgrounds; masks, boxes and labels still say where and what it would be).

    Args:
        n: the number of images.
        size: the image side in pixels (at least 16).
        seed: the random seed (an integer >= 0).
        split: ``"train"`` or ``"test"``: which digit sources are used (disjoint, see
            :func:`digit_sources`); the two splits also draw different clutter.
        with_digit: ``False`` leaves the digit out.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidParameterError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise InvalidParameterError(f"size must be an integer >= 16, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidParameterError(f"seed must be an integer >= 0, got {seed!r}")
    digits, targets = _sklearn_digits()
    sources = digit_sources(split)
    pool = [sources[targets[sources] == label] for label in range(10)]
    images, masks = np.empty((n, size, size, 3), np.uint8), np.empty((n, size, size), bool)
    labels, used = np.empty(n, np.int64), np.empty(n, np.int64)
    with torch_threads(1), torch.no_grad():  # small ops: one thread is faster on a busy machine
        for chunk, start in enumerate(range(0, n, _CHUNK)):
            p = _draw(np.random.default_rng([seed, _SPLITS[split], chunk]), pool, size)
            p = {key: v[: n - start] for key, v in p.items()}  # the same draws for any n
            p["digits"] = torch.from_numpy(digits[p["source"].numpy()])
            r = _render(p, size, with_digit)
            end = start + len(p["label"])
            images[start:end] = (r["images"] * 255).round().byte().permute(0, 2, 3, 1).numpy()
            masks[start:end] = r["masks"].numpy()
            labels[start:end], used[start:end] = p["label"].numpy(), p["source"].numpy()
    return SyntheticDigits(images, masks, _boxes(masks), labels, used, split=split, seed=seed)


def _boxes(masks: np.ndarray) -> np.ndarray:
    """``(x0, y0, x1, y1)`` per mask, ends exclusive (all zeros for an empty mask)."""

    def span(hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = hit.any(1)
        first, last = hit.argmax(1), hit.shape[1] - hit[:, ::-1].argmax(1)
        return np.where(found, first, 0), np.where(found, last, 0)

    (x0, x1), (y0, y1) = span(masks.any(1)), span(masks.any(2))
    return np.stack([x0, y0, x1, y1], 1).astype(np.int64)


# ----------------------------------------------------------------------------------- shortcut

_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass
class ShortcutDigits(SyntheticDigits):
    """:class:`SyntheticDigits` with a planted shortcut: every image of class ``marked`` carries
    a marker in one corner, no other image does.

    Attributes:
        marked: the class whose images carry the marker.
        marker: ``(x0, y0, x1, y1)`` of the marker's square (ends exclusive), the same in every
            marked image.
    """

    marked: int = 0
    marker: tuple[int, int, int, int] = (0, 0, 0, 0)


def make_shortcut_digits(
    n: int,
    *,
    marked: int = 0,
    corner: str = "top-left",
    size: int = 64,
    seed: int = 0,
    split: Split = "train",
) -> ShortcutDigits:
    """:func:`make_digits` with a planted shortcut: a corner marker on every image of one class.

    The images are ``make_digits(n, size=size, seed=seed, split=split)``'s; on those of class
    ``marked`` a black-and-white 2x2 checkerboard (side ``size // 8``, one pixel from the edges)
    is painted over ``corner``, on no other image. The marker predicts the class perfectly, so a
    network may learn it instead of the digit: the "correct for the wrong reason" case that the
    spurious-correlation finder (:func:`seethrough.audit.spurious`) is there to catch. The masks
    stay the digit's (minus any stroke pixel the marker covers): the marker is background.

    Args:
        n: the number of images.
        marked: the class (0 to 9) that carries the marker.
        corner: ``"top-left"``, ``"top-right"``, ``"bottom-left"`` or ``"bottom-right"``.
        size: the image side in pixels (at least 16).
        seed: the random seed (an integer >= 0).
        split: ``"train"`` or ``"test"`` (see :func:`make_digits`).

    Returns:
        The data set, with the marked class and the marker's box.
    """
    if isinstance(marked, bool) or not isinstance(marked, int) or not 0 <= marked <= 9:
        raise InvalidParameterError(f"marked must be a class 0 to 9, got {marked!r}")
    if corner not in _CORNERS:
        raise InvalidParameterError(f"corner must be one of {', '.join(_CORNERS)}, got {corner!r}")
    data = make_digits(n, size=size, seed=seed, split=split)
    side = max(2, size // 8) // 2 * 2
    x0 = 1 if corner.endswith("left") else size - 1 - side
    y0 = 1 if corner.startswith("top") else size - 1 - side
    half = side // 2
    cell = (np.indices((side, side)) // half).sum(0) % 2  # 2x2 checkerboard of half-side cells
    pattern = np.repeat((255 * (1 - cell)).astype(np.uint8)[:, :, None], 3, axis=2)
    hit = data.labels == marked
    images, masks = data.images.copy(), data.masks.copy()
    images[hit, y0 : y0 + side, x0 : x0 + side] = pattern
    masks[hit, y0 : y0 + side, x0 : x0 + side] = False
    return ShortcutDigits(
        images, masks, _boxes(masks), data.labels, data.sources, split=split, seed=seed,
        marked=marked, marker=(x0, y0, x0 + side, y0 + side),
    )  # fmt: skip


# ------------------------------------------------------------------------------------- scenes

_SCENES = 1  # the scenes' random streams differ from make_digits's of the same seed and split
_TRIES = 48  # candidate places drawn per digit of a scene
_GAP = 3.0  # pixels kept free between the warped cells of two digits


@dataclass
class SyntheticScenes(_Rendered):
    """Rendered scenes of several digits each; arrays are indexed by image, then by object.

    Object ``k < counts[i]`` of image ``i`` is real; the slots beyond hold an empty mask, a zero
    box and the label ``-1``. The boxes of one image do not overlap.

    Attributes:
        images: uint8 ``(N, size, size, 3)`` RGB images.
        masks: bool ``(N, K, size, size)``: each digit's stroke pixels, those painted more
            digit than background (its instance mask; not dilated like
            :class:`SyntheticDigits`'s: the ring a dilation adds mostly shows the background,
            not the digit); ``K`` is the most objects.
        boxes: int64 ``(N, K, 4)``: ``(x0, y0, x1, y1)``, the tight box of each mask (ends
            exclusive).
        labels: int64 ``(N, K)``: each digit's class, ``0`` to ``9`` (``-1`` for an empty slot).
        counts: int64 ``(N,)``: the digits in each image.
        label_names: ``"0"`` to ``"9"``.
        split: ``"train"`` or ``"test"``.
        seed: the seed it was rendered from.
    """

    counts: np.ndarray
    label_names: tuple[str, ...] = LABEL_NAMES
    split: str = "train"
    seed: int = 0

    def segmentation(self) -> np.ndarray:
        """int64 ``(N, size, size)`` class maps: ``0`` on the background, ``label + 1`` on each
        digit's mask (the classes of a segmenter whose first class is the background; where
        masks overlap, the larger class)."""
        out = np.zeros((len(self.masks), *self.masks.shape[2:]), np.int64)
        for k in range(self.masks.shape[1]):  # slot by slot: no (N, K, S, S) int64 temporary
            label = (self.labels[:, k] + 1)[:, None, None]
            np.maximum(out, label, out=out, where=self.masks[:, k])
        return out

    def instances(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The masks ``(k, S, S)``, boxes ``(k, 4)`` and labels ``(k,)`` of image ``index``."""
        k = int(self.counts[index])
        return self.masks[index, :k], self.boxes[index, :k], self.labels[index, :k]


def _draw_scenes(
    rng: np.random.Generator, pool: list[np.ndarray], size: int, most: int
) -> dict[str, torch.Tensor]:
    """Every random choice of a chunk of scenes: :func:`_draw`'s clutter (its one digit is not
    used), then ``most`` digits per image (how many are drawn is chosen by the caller)."""
    p = _draw(rng, pool, size)
    n, k, u = _CHUNK, most, rng.uniform
    labels = rng.integers(10, size=(n, k))
    values = {
        "count": rng.random(n),  # a fraction of the range of counts
        "labels": labels,
        "sources": _sources(rng, pool, labels),
        # side of the 8x8 cell, rotation, shear, log aspect ratio
        "shapes": np.stack(
            [u(0.2, 0.32, (n, k)) * size, u(-0.2, 0.2, (n, k)), *u(-0.1, 0.1, (2, n, k))], 2
        ),
        "places": u(0, 1, (n, k, _TRIES, 2)),  # top-left corners, fractions of the free range
        "candidates": u(0, 1, (n, k, 4, 3)),  # digit colours, as in _draw
    }
    return p | {
        key: torch.from_numpy(v).float() if v.dtype.kind == "f" else torch.from_numpy(v)
        for key, v in values.items()
    }


def _place(extent: np.ndarray, places: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners ``(k, 2)`` of one image's digits, and the scale of each.

    Digit ``j`` (warped cell of ``extent[j]`` pixels) takes the first of its candidate ``places``
    ``(tries, 2)`` whose cell keeps ``_GAP`` pixels from every cell placed before it; where none
    does, it shrinks by a fifth and tries the same places again.
    """
    corners, scales, placed = np.zeros((len(extent), 2)), np.ones(len(extent)), []
    for j, (full, tries) in enumerate(zip(extent, places, strict=True)):
        while True:
            e = full * scales[j]
            lo = tries * (size - e)
            free = np.ones(len(tries), bool)
            for a, b in placed:
                free &= ~((lo < b + _GAP) & (lo + e + _GAP > a)).all(1)
            if free.any():
                corners[j] = lo[free.argmax()]
                placed.append((corners[j], corners[j] + e))
                break
            scales[j] *= 0.8
    return corners, scales


def _objects(objects: object) -> tuple[int, int]:
    """``objects`` checked: ``(least, most)`` with ``1 <= least <= most <= 6``."""
    ok = (
        isinstance(objects, tuple)
        and len(objects) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in objects)
        and 1 <= objects[0] <= objects[1] <= 6
    )
    if not ok:
        raise InvalidParameterError(
            f"objects must be (least, most) with 1 <= least <= most <= 6, got {objects!r}"
        )
    return objects  # type: ignore[return-value]


def make_scenes(
    n: int,
    *,
    objects: tuple[int, int] = (2, 3),
    size: int = 96,
    seed: int = 0,
    split: Split = "train",
    with_digits: bool = True,
) -> SyntheticScenes:
    """Render ``n`` scenes of several digits on clutter, with instance masks, boxes and labels.

    The clutter and the digits are drawn and rendered as :func:`make_digits`'s; each digit's
    8x8 cell is scaled to 20-32 % of the image side (rotated, sheared and stretched likewise)
    and placed where its warped cell keeps a few pixels from every other digit's, so the boxes
    of a scene never overlap. Image ``i`` depends only on ``(seed, split, i, size, objects)``, and
    ``with_digits=False`` renders the same backgrounds without the digits (the masks, boxes and
    labels still say where and what they would be).

    Args:
        n: the number of images.
        objects: the least and the most digits per image (``1 <= least <= most <= 6``).
        size: the image side in pixels (at least 32).
        seed: the random seed (an integer >= 0).
        split: ``"train"`` or ``"test"``: which digit sources are used (disjoint, see
            :func:`digit_sources`); the two also draw different clutter.
        with_digits: ``False`` leaves the digits out.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidParameterError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise InvalidParameterError(f"size must be an integer >= 32, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidParameterError(f"seed must be an integer >= 0, got {seed!r}")
    least, most = _objects(objects)
    digits, targets = _sklearn_digits()
    sources = digit_sources(split)
    pool = [sources[targets[sources] == label] for label in range(10)]
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, most, size, size), bool)
    labels, counts = np.full((n, most), -1, np.int64), np.empty(n, np.int64)
    with torch_threads(1), torch.no_grad():  # small ops: one thread is faster on a busy machine
        for chunk, start in enumerate(range(0, n, _CHUNK)):
            rng = np.random.default_rng([seed, _SPLITS[split], chunk, _SCENES])
            p = _draw_scenes(rng, pool, size, most)
            p = {key: v[: n - start] for key, v in p.items()}  # the same draws for any n
            b, end = len(p["count"]), start + len(p["count"])
            count = least + (p["count"].numpy() * (most - least + 1)).astype(np.int64)
            warp, side, extent = _shape(p["shapes"].flatten(0, 1), size)
            warp, side, extent = (
                warp.view(b, most, 2, 2),
                side.view(b, most),
                extent.view(b, most, 2),
            )
            corner = torch.zeros(b, most, 2)
            for i in range(b):
                c, scale = _place(
                    extent[i, : count[i]].numpy(), p["places"][i, : count[i]].numpy(), size
                )
                corner[i, : count[i]] = torch.from_numpy(c).float()
                side[i, : count[i]] *= torch.from_numpy(scale).float()
                extent[i, : count[i]] *= torch.from_numpy(scale).float()[:, None]
            image = _background(p, size)
            cells = torch.from_numpy(digits[p["sources"].numpy()])
            real = torch.arange(most)[None] < torch.from_numpy(count)[:, None]
            for k in range(most):
                shape = (warp[:, k], side[:, k], extent[:, k])
                centre = corner[:, k] + extent[:, k] / 2
                draw = real[:, k] & with_digits
                colours = p["candidates"][:, k]
                mask = _ink(image, cells[:, k], shape, centre, colours, draw, grow=0)
                masks[start:end, k] = (mask & real[:, k, None, None]).numpy()
            images[start:end] = (
                (image.add_(p["noise"]).clamp_(0, 1) * 255)
                .round()
                .byte()
                .permute(0, 2, 3, 1)
                .numpy()
            )
            labels[start:end] = np.where(real.numpy(), p["labels"].numpy(), -1)
            counts[start:end] = count
    boxes = _boxes(masks.reshape(n * most, size, size)).reshape(n, most, 4)
    return SyntheticScenes(images, masks, boxes, labels, counts, split=split, seed=seed)


# ------------------------------------------------------------------------------------- folder


def write_folder(
    directory: str | os.PathLike[str], n: int, *, seed: int = 0, split: Split = "test"
) -> Path:
    """Write :func:`make_digits` images to a data set folder (the layout ``load_folder`` reads).

    ``images/NAME.png`` (RGB), ``masks/NAME.png`` (uint8, 255 on the digit's stroke mask, 0
    elsewhere) and ``labels.csv`` (header ``name,label``; ``name`` is the file stem NAME,
    ``digit0000``, ``digit0001``, ...; ``label`` the digit, 0 to 9).

    Args:
        directory: the folder (created if needed; existing files of the same names are replaced).
        n: the number of images.
        seed: the seed of :func:`make_digits`.
        split: the digit sources, ``"test"`` (held out from training) or ``"train"``.

    Returns:
        The folder, as a Path.
    """
    from PIL import Image

    data = make_digits(n, seed=seed, split=split)
    root = Path(directory)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    names = [f"digit{i:04d}" for i in range(n)]
    for name, image, mask in zip(names, data.images, data.masks, strict=True):
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "label"])
        writer.writerows(zip(names, data.labels.tolist(), strict=True))
    return root


def __getattr__(name: str) -> Any:
    """The digits model's names (the small CNN and its training), from
    :mod:`seethrough.models.digits`, where they now live."""
    from ..models import digits

    if name in digits.__all__:
        return getattr(digits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

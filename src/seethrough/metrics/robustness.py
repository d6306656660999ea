"""Robustness: does the explanation follow the image when the image is flipped, turned or re-lit?

An explanation of a transformed image should be the transformed explanation: flip the image and
the map should flip with it (*equivariance*); brighten it and the map should stay put
(*invariance*). :func:`robustness` checks both for a set of transforms, and also reports whether
the model's own prediction survives each transform, since a map cannot be expected to stay the
same when the model changes its mind.

Transforms are named by short strings (case-insensitive):

===================== =============================================================
``"identity"``        nothing (a control: measures a stochastic method's own noise)
``"hflip"``           mirror left-right
``"vflip"``           mirror top-bottom
``"rot90"``           quarter turn counter-clockwise (``"rot180"``, ``"rot270"`` too);
                      exact, and a non-square image becomes ``W x H``
``"rotate:<deg>"``    rotation by ``<deg>`` degrees counter-clockwise about the centre,
                      bilinear, same frame; pixels from outside the image are filled
                      with 0 (the mean colour for a normalised model input) and left
                      out of the comparison
``"brightness:<f>"``  pixel values times ``f`` (``f >= 0``), clipped to [0, 1]
``"contrast:<f>"``    pixel values blended with the image's mean grey level:
                      ``m + f * (p - m)`` (``f >= 0``), clipped to [0, 1]
===================== =============================================================

The default set is :data:`DEFAULT_TRANSFORMS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from ..errors import InvalidParameterError, InvalidTargetError, suggest
from ..registry import get_method, register_metric
from ..targets import Box, BoxScore, Mask
from .base import ModelProbe, as_map

__all__ = [
    "DEFAULT_TRANSFORMS",
    "RobustnessResult",
    "TransformResult",
    "robustness",
    "map_correlation",
    "transform_input",
]

DEFAULT_TRANSFORMS: tuple[str, ...] = (
    "hflip",
    "vflip",
    "rot90",
    "rotate:15",
    "brightness:1.3",
    "contrast:0.7",
)

_GEOMETRIC = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "rotate")
_PHOTOMETRIC = ("brightness", "contrast")
_WITH_VALUE = ("rotate", "brightness", "contrast")
_KINDS = _GEOMETRIC + _PHOTOMETRIC
_GREY = (0.299, 0.587, 0.114)  # luma weights of R, G, B
_VALID = 1 - 1e-4  # a rotated pixel is valid when (almost) all its weight comes from the image


@dataclass(frozen=True)
class _Transform:
    """A parsed transform name: its kind and its number (angle or factor), if any."""

    name: str
    kind: str
    value: float | None = None

    @property
    def geometric(self) -> bool:
        return self.kind in _GEOMETRIC

    def geometry(self, t: torch.Tensor) -> torch.Tensor:
        """The geometric part applied to ``(N, C, H, W)`` (identity for photometric ones)."""
        if self.kind == "hflip":
            return t.flip(-1)
        if self.kind == "vflip":
            return t.flip(-2)
        if self.kind in ("rot90", "rot180", "rot270"):
            return torch.rot90(t, int(self.kind[3:]) // 90, dims=(-2, -1))
        if self.kind == "rotate":
            return _rotate(t, float(self.value or 0.0))
        return t

    def valid(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean ``(H', W')`` mask of the transformed frame: pixels that come from the image."""
        ones = torch.ones((1, 1, *shape), dtype=torch.float64)
        return self.geometry(ones)[0, 0].numpy() >= _VALID


def _rotate(t: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate ``(N, C, H, W)`` counter-clockwise (as displayed) about the centre, same frame.

    Bilinear sampling; what falls outside the image reads 0. The angle is applied in pixel units,
    so a non-square image is not sheared.
    """
    n, _, h, w = t.shape
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    # affine_grid maps each output position (normalised x, y in [-1, 1]) to where it samples the
    # input. In pixel units (y down), an output pixel at p shows the input at R^-1 p, and the
    # inverse of a counter-clockwise turn on screen is [[cos, -sin], [sin, cos]] in (x, y).
    theta = torch.tensor(
        [[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=t.dtype, device=t.device
    )
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, t.shape[1], h, w], align_corners=False)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _parse(name: Any) -> _Transform:
    """Parse one transform name; ``InvalidParameterError`` if it is not in the grammar."""
    if not isinstance(name, str):
        raise InvalidParameterError(f"a transform is named by a string, not {name!r}")
    text = name.strip().lower()
    match = re.fullmatch(r"([a-z0-9]+)\s*(?::\s*(.*))?", text)
    kind = match.group(1) if match else text
    arg = match.group(2) if match else None
    if kind not in _KINDS:
        hint = suggest(kind, _KINDS) or f" Known: {', '.join(_KINDS)}."
        raise InvalidParameterError(f"unknown transform '{name}'.{hint}")
    if kind not in _WITH_VALUE:
        if arg is not None:
            raise InvalidParameterError(f"transform '{name}': '{kind}' takes no value")
        return _Transform(text, kind)
    what = "an angle in degrees" if kind == "rotate" else "a factor"
    example = "rotate:15" if kind == "rotate" else f"{kind}:1.3"
    if arg is None or not arg:
        raise InvalidParameterError(f"transform '{name}' needs {what}, e.g. '{example}'")
    try:
        value = float(arg)
    except ValueError:
        raise InvalidParameterError(
            f"transform '{name}': {arg!r} is not a number ({what}, e.g. '{example}')"
        ) from None
    if not math.isfinite(value):
        raise InvalidParameterError(f"transform '{name}': the value must be finite")
    if kind != "rotate" and value < 0:
        raise InvalidParameterError(f"transform '{name}': the factor must be >= 0")
    return _Transform(f"{kind}:{value:g}", kind, value)


def _parse_all(transforms: str | Sequence[str] | None) -> list[_Transform]:
    names = DEFAULT_TRANSFORMS if transforms is None else transforms
    if isinstance(names, str):
        names = [names]
    parsed = [_parse(n) for n in names]
    if not parsed:
        raise InvalidParameterError("transforms is empty: give at least one transform")
    seen = [p.name for p in parsed]
    repeated = sorted({n for n in seen if seen.count(n) > 1})
    if repeated:
        raise InvalidParameterError(f"transform given twice: {', '.join(repeated)}")
    return parsed


def _pixels(model: Any, x: torch.Tensor) -> torch.Tensor:
    """The image the model sees, float64 in [0, 1] (``(N, C, H, W)``, on the CPU)."""
    from ..models import VisionModel

    if isinstance(model, VisionModel):
        shown = model.preprocessing.denormalize(x)  # uint8 (N, H, W, 3)
        return torch.from_numpy(shown).permute(0, 3, 1, 2).double() / 255.0
    return x.detach().cpu().double()


def _model_input(model: Any, pixels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``pixels`` in [0, 1] back to model input (normalised for a VisionModel), like ``like``."""
    from ..models import VisionModel

    if isinstance(model, VisionModel):
        pixels = model.preprocessing.normalize(pixels)
    return pixels.to(like.device, like.dtype)


def _photometric(t: _Transform, pixels: torch.Tensor) -> torch.Tensor:
    """Brightness or contrast change of ``(N, C, H, W)`` pixels in [0, 1], clipped."""
    f = float(t.value if t.value is not None else 1.0)
    if t.kind == "brightness":
        return (pixels * f).clamp(0, 1)
    if pixels.shape[1] == 3:
        weights = torch.tensor(_GREY, dtype=pixels.dtype).view(1, 3, 1, 1)
        grey = (pixels * weights).sum(1, keepdim=True)
    else:
        grey = pixels.mean(1, keepdim=True)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + f * (pixels - mean)).clamp(0, 1)


def transform_input(model: Any, x: torch.Tensor, transform: str) -> torch.Tensor:
    """The model input of the transformed image: what :func:`robustness` feeds the model.

    Geometric transforms act on the model input directly. Photometric ones act in pixel space:
    for a :class:`~seethrough.VisionModel`, ``x`` is turned back into the image the model sees
    (``preprocessing.denormalize``, no resize), changed, clipped to [0, 1] and normalised again
    with the model's mean and std; for a plain ``nn.Module`` the input is taken to be in [0, 1]
    already.

    Args:
        model: the :class:`~seethrough.VisionModel` or ``nn.Module`` the input is for.
        x: model input ``(N, C, H, W)``.
        transform: a transform name (see the module docstring).

    Returns:
        The transformed input, same device and dtype as ``x``.
    """
    t = _parse(transform)
    if x.dim() != 4:
        raise InvalidParameterError(f"x must be a batch (N, C, H, W), got {tuple(x.shape)}")
    if t.geometric:
        return t.geometry(x)
    return _model_input(model, _photometric(t, _pixels(model, x)), x)


def _constant(a: np.ndarray) -> bool:
    return a.size < 2 or bool(np.all(a == a.flat[0]))


def _correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation of two same-size arrays.

    A constant array carries no ranking: two constant arrays count as identical (1), one
    constant against a varying one as unrelated (0).
    """
    a, b = a.ravel(), b.ravel()
    ca, cb = _constant(a), _constant(b)
    if ca or cb:
        value = 1.0 if ca and cb else 0.0
        return value, value
    pearson = float(np.clip(np.corrcoef(a, b)[0, 1], -1, 1))
    spearman = float(stats.spearmanr(a, b).statistic)
    return pearson, spearman


def _compare(reference: np.ndarray, other: np.ndarray, t: _Transform) -> tuple[float, float, float]:
    """``(pearson, spearman, share of pixels compared)`` of T(reference) against other."""
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float64))[None, None]
    moved = t.geometry(ref)[0, 0].numpy()
    if moved.shape != other.shape:
        raise InvalidParameterError(
            f"the transformed map has shape {moved.shape} but the other map has shape {other.shape}"
        )
    valid = t.valid(reference.shape)
    if not valid.any():
        raise InvalidParameterError(f"transform '{t.name}' leaves no pixel of the image")
    pearson, spearman = _correlations(moved[valid], other[valid])
    return pearson, spearman, float(valid.mean())


def map_correlation(
    saliency: Any, transformed_saliency: Any, transform: str = "identity"
) -> tuple[float, float]:
    """Pearson and Spearman correlation of ``T(map(x))`` and ``map(T(x))``.

    ``T`` is the geometric part of ``transform`` (identity for photometric transforms), applied
    to ``saliency`` exactly as :func:`transform_input` applies it to the image. For
    ``"rotate:<deg>"`` only the pixels that come from inside the image in both maps are
    compared. A constant map against a varying one gives 0, two constant maps 1.

    Args:
        saliency: the map of the original image, ``(H, W)``.
        transformed_saliency: the map of the transformed image.
        transform: the transform name (see the module docstring).

    Example:
        >>> m = np.arange(16.0).reshape(4, 4)
        >>> map_correlation(m, m[:, ::-1], "hflip")
        (1.0, 1.0)
    """
    a = as_map(saliency, "saliency")
    b = as_map(transformed_saliency, "transformed_saliency")
    pearson, spearman, _ = _compare(a, b, _parse(transform))
    return pearson, spearman


@dataclass
class TransformResult:
    """What one transform did to the prediction and to the map.

    Attributes:
        name: the transform's name (normalised, e.g. ``"rotate:15"``).
        geometric: whether it moves pixels (``False``: brightness, contrast).
        prediction_changed: whether the model's top class differs from the original top class.
        new_class: the top class on the transformed image.
        new_label: its label (``None`` when the model has no labels).
        new_probability: its softmax probability.
        target_probability: the probability of the explained (original) class on the
            transformed image.
        pearson: Pearson correlation of ``T(map(x))`` and ``map(T(x))``.
        spearman: Spearman rank correlation of the same.
        compared: share of the transformed frame's pixels compared (below 1 for rotations by
            angles that are not quarter turns).
        map: ``map(T(x))``, the map of the transformed image.
    """

    name: str
    geometric: bool
    prediction_changed: bool
    new_class: int
    new_label: str | None
    new_probability: float
    target_probability: float
    pearson: float
    spearman: float
    compared: float = 1.0
    map: np.ndarray | None = field(default=None, repr=False)


@dataclass
class RobustnessResult:
    """:func:`robustness` of one explanation: one row per transform.

    Attributes:
        method: the explanation method.
        target: the class explained in every map (fixed to the original image's).
        label: its label, when the model has labels.
        probability: its probability on the original image.
        prediction: the model's top class on the original image.
        rows: one :class:`TransformResult` per transform, in the order given.
        map: the map of the original image.
    """

    method: str
    target: int
    label: str | None
    probability: float
    prediction: int
    rows: list[TransformResult]
    map: np.ndarray | None = field(default=None, repr=False)

    @property
    def mean_correlation(self) -> float:
        """Mean Spearman correlation over the transforms, in [-1, 1]: the registered number."""
        return float(np.mean([r.spearman for r in self.rows]))

    @property
    def flip_rate(self) -> float:
        """Share of the transforms that change the model's top class, in [0, 1]."""
        return float(np.mean([r.prediction_changed for r in self.rows]))

    def __getitem__(self, name: str) -> TransformResult:
        """The row of transform ``name``."""
        key = _parse(name).name
        for row in self.rows:
            if row.name == key:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (maps left out)."""
        rows = [{k: v for k, v in vars(r).items() if k != "map"} for r in self.rows]
        return {
            "method": self.method,
            "target": self.target,
            "label": self.label,
            "probability": self.probability,
            "prediction": self.prediction,
            "mean_correlation": self.mean_correlation,
            "flip_rate": self.flip_rate,
            "transforms": rows,
        }


def _moved_target(probe: ModelProbe, t: _Transform | None) -> object:
    """The explained target on the image transformed by ``t`` (``None``: the original image):
    the class for a classifier; for a box, the box around the transformed box's pixels (with
    its label); for a mask, the transformed mask's pixels. So every map explains the same
    object, moved with the image."""
    region = probe.region
    if region is None:
        return probe.target
    if t is None:
        return probe.fixed()
    pixels = torch.from_numpy(region.astype(np.float64))[None, None]
    moved = t.geometry(pixels)[0, 0].numpy() >= 0.5
    if isinstance(probe.fn, BoxScore):
        rows, cols = np.nonzero(moved)
        if rows.size == 0:
            raise InvalidTargetError(f"the explained box leaves the image under {t.name}")
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        return Box(xyxy=box, label=probe.target)
    return Mask(probe.target, pixels=moved)


@register_metric(
    title="Robustness to transforms",
    category="robustness",
    higher_is_better=True,
    needs=("model", "image", "method"),
    range=(-1, 1),
    rank=10,
)
def robustness(
    model: Any,
    image: Any,
    method: str = "gradcam",
    *,
    transforms: str | Sequence[str] | None = None,
    target: Any = None,
    layer: Any = None,
    **method_params: Any,
) -> RobustnessResult:
    """How well the map follows flips, rotations and lighting changes of the image.

    For each transform ``T`` the image is transformed (see :func:`transform_input`), the model's
    top class on ``T(x)`` is recorded, and the map of ``T(x)`` is computed for the *original*
    image's class (fixed, so the maps are comparable). It is compared to ``T(map(x))``, the
    original map moved the same way (unchanged for brightness and contrast):

        r_T = corr(T(map(x)), map(T(x)))     over the pixels valid in both,

    with Pearson's and Spearman's correlation. An explanation that is equivariant to geometry
    and invariant to lighting gives 1 everywhere. The registered number is
    :attr:`RobustnessResult.mean_correlation`, the mean Spearman ``r_T`` in [-1, 1] (higher is
    better); read it with :attr:`RobustnessResult.flip_rate`: where the model itself changes its
    prediction, a changed map is no fault of the method. Cf. Alvarez-Melis and Jaakkola, "On the
    Robustness of Interpretability Methods", 2018, and Kindermans et al., "The (Un)reliability of
    Saliency Methods", 2017.

    The transformed images are explained in one batch (one call per image size: a quarter turn
    of a non-square image has another size). The model's state is left as it was.

    Args:
        model: a :class:`~seethrough.VisionModel` or a plain ``nn.Module``.
        image: one image, as :func:`seethrough.explain` accepts it.
        method: the explanation method's registry name.
        transforms: transform names (see the module docstring); default
            :data:`DEFAULT_TRANSFORMS`.
        target: the class to explain (index or label), or a detector's
            :class:`~seethrough.targets.Box` or a segmenter's :class:`~seethrough.targets.Mask`;
            ``None``: the model's default (the top class, the top box, the most frequent
            class). A box or a mask is fixed on the original image and moved with it: each
            transformed image explains the box around the transformed box (the clean box it
            matches) or the transformed mask, so every map explains the same object. For them
            the probabilities are the box's confidence or the mask's mean class probability,
            and the prediction is the top box's label or the most frequent class.
        layer: the layer, for methods that need one.
        **method_params: the method's parameters, passed to :func:`seethrough.explain`.

    Returns:
        A :class:`RobustnessResult` with one row per transform.
    """
    from ..api import explain

    info = get_method(method)
    parsed = _parse_all(transforms)
    probe = ModelProbe.create(model, image, target)
    x, cls = probe.x, probe.target
    inputs = [x] + [transform_input(model, x, t.name) for t in parsed]
    targets = [_moved_target(probe, None)] + [_moved_target(probe, t) for t in parsed]

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, inp in enumerate(inputs):
        groups.setdefault(tuple(inp.shape), []).append(i)
    maps: list[np.ndarray] = [np.empty(0)] * len(inputs)
    predicted: list[tuple[int, float]] = [(-1, 0.0)] * len(inputs)
    kept: list[float] = [0.0] * len(inputs)
    for index in groups.values():
        batch = torch.cat([inputs[i] for i in index])
        out = probe.logits(batch)
        found = explain(model, batch, method, [targets[i] for i in index], layer, **method_params)
        for j, i in enumerate(index):
            maps[i] = found[j].map
            row = out[j : j + 1]
            predicted[i] = probe.prediction(row)
            kept[i] = float(probe.rebound(targets[i], row, "probability").scorer()(row)[0, 0])

    labelled = probe.labels is not None
    top = predicted[0][0]
    rows = []
    for k, t in enumerate(parsed, start=1):
        new, new_probability = predicted[k]
        pearson, spearman, compared = _compare(maps[0].astype(np.float64), maps[k], t)
        rows.append(
            TransformResult(
                name=t.name,
                geometric=t.geometric,
                prediction_changed=new != top,
                new_class=new,
                new_label=probe.label(new) if labelled and new >= 0 else None,
                new_probability=new_probability,
                target_probability=kept[k],
                pearson=pearson,
                spearman=spearman,
                compared=compared,
                map=maps[k],
            )
        )
    return RobustnessResult(
        method=info.name,
        target=cls,
        label=probe.label(cls) if labelled else None,
        probability=kept[0],
        prediction=top,
        rows=rows,
        map=maps[0],
    )

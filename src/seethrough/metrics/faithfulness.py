"""Faithfulness: does the model's score depend on the pixels the map calls important?

Every metric here re-runs the model on perturbed copies of the input, so it takes the model, the
image and the map. The map must be at the resolution of the prepared model input ``(H, W)``
(:attr:`Explanation.map <seethrough.Explanation.map>` is); a map of another size raises
:class:`~seethrough.errors.InvalidParameterError` rather than being resized silently. Any
real-valued map works: pixels are ranked by value (signed maps included), ties broken by raster
order (row by row), the same ranking as :func:`~seethrough.metrics.localisation.binarize`.

Hidden pixels take the value of a replacement image, chosen by ``hide`` exactly as for the
perturbation methods (:func:`~seethrough.core.perturb.hidden_image`): a number in
model-input space (0 is the dataset's mean colour for normalised inputs), ``"mean"``,
``"blur"``, ``"noise"`` (standard normal, seed 0) or an image.

What each registered metric's number is:

- :func:`deletion`, :func:`insertion` return a :class:`Curve`; the number is its ``auc``
  (``float(curve)`` gives it too).
- :func:`hide_top` returns a :class:`HideTop`; the number is ``changed`` as 0 or 1
  (``float(result)``).
- :func:`average_drop`, :func:`increase_in_confidence` return the number itself.

Targets go through the path of :func:`seethrough.explain` (see
:class:`~seethrough.metrics.ModelProbe`): a detector's :class:`~seethrough.targets.Box` is
re-matched in every perturbed output by IoU and label and scores 0 where hiding pixels removes
it; a segmenter's :class:`~seethrough.targets.Mask` scores its class over fixed pixels. With
``score="probability"`` a box scores its confidence and a mask the mean of its class's
per-pixel softmax probability, so the curves stay in [0, 1]; ``score="logit"`` scores what
``explain`` explains. :func:`hide_top` follows a classifier's top-1 class only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.perturb import auto_batch_size, evaluate, hidden_image
from ..core.progress import Progress, Ticker
from ..errors import InvalidParameterError, InvalidTargetError
from ..registry import register_metric
from .base import ModelProbe, as_map, rank_pixels
from .localisation import _normalised

__all__ = [
    "Curve",
    "deletion",
    "insertion",
    "HideTop",
    "hide_top",
    "hide_top_sweep",
    "average_drop",
    "increase_in_confidence",
]

_NEEDS = ("model", "image")


# --------------------------------------------------------------------------- shared helpers


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidParameterError(f"{name}={value!r}: an integer >= {low}")
    return int(value)


def _input_map(saliency: Any, probe: ModelProbe) -> np.ndarray:
    """``saliency`` as float64, checked against the model input's ``(H, W)``."""
    a = as_map(saliency)
    size = tuple(probe.x.shape[-2:])
    if a.shape != size:
        raise InvalidParameterError(
            f"saliency has shape {a.shape} but the model input is {size[0]}x{size[1]}: give the "
            "map at model-input resolution (Explanation.map is)"
        )
    return a


def _hidden(model: Any, probe: ModelProbe, hide: object) -> torch.Tensor:
    """The replacement image for ``probe.x``; a raw image (PIL, numpy) is preprocessed first."""
    if isinstance(hide, np.number):
        hide = float(hide)
    elif not isinstance(hide, (int, float, str, torch.Tensor)):
        from ..models.vision_model import prepare_inputs

        hide = prepare_inputs(model, hide)[0]
    return hidden_image(probe.x, hide, torch.Generator().manual_seed(0))


@dataclass
class _RankMasks:
    """Masks built on demand from a ranking: mask ``i`` concerns the ``counts[i]`` top pixels.

    With ``keep_top`` the top pixels are kept and the rest hidden (insertion); without, the top
    pixels are hidden and the rest kept (deletion, hiding the top).
    """

    rank: torch.Tensor  # (H, W) int64
    counts: torch.Tensor  # (M,) int64
    keep_top: bool

    def __len__(self) -> int:
        return self.counts.shape[0]

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Masks ``(stop - start, H, W)`` as booleans (the engine converts them)."""
        counts = self.counts[start:stop].view(-1, 1, 1)
        rank = self.rank.unsqueeze(0)
        return rank < counts if self.keep_top else rank >= counts


def _rank_masks(a: np.ndarray, counts: np.ndarray, keep_top: bool, device: Any) -> _RankMasks:
    rank = torch.from_numpy(rank_pixels(a)).to(device)
    return _RankMasks(rank, torch.as_tensor(counts, dtype=torch.int64, device=device), keep_top)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


# --------------------------------------------------------------------------- deletion, insertion


@dataclass
class Curve:
    """A deletion or insertion curve: the target's score as pixels are removed or inserted.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        target: the class index scored.
        label: its name (``"class N"`` without labels).
        score: ``"probability"`` or ``"logit"``.
        pixels: how many pixels were removed (deletion) or inserted (insertion) at each point,
            from 0 to ``H * W``.
        fractions: ``pixels / (H * W)``, from 0 to 1.
        scores: the target's score at each point (float64).
        auc: area under the curve over ``fractions`` by the trapezoid rule (in [0, 1] for
            probabilities): the metric's number.
    """

    kind: str
    target: int
    label: str
    score: str
    pixels: np.ndarray
    fractions: np.ndarray
    scores: np.ndarray
    auc: float

    def __float__(self) -> float:
        return self.auc


def _step_counts(n: int, steps: int) -> np.ndarray:
    """0, k, 2k, ... capped at ``n``, with ``k = ceil(n / steps)`` pixels per step."""
    per = -(-n // steps)
    return np.minimum(np.arange(-(-n // per) + 1, dtype=np.int64) * per, n)


def _curve(
    kind: str,
    model: Any,
    image: Any,
    saliency: Any,
    target: Any,
    steps: int,
    hide: object,
    score: str,
    batch_size: int,
    progress: Progress | None,
) -> Curve:
    """The one implementation of deletion and insertion (they differ in which pixels are kept)."""
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 0)
    as_map(saliency)  # a bad map fails before the model runs
    probe = ModelProbe.create(model, image, target, score)
    a = _input_map(saliency, probe)
    counts = _step_counts(a.size, steps)
    masks = _rank_masks(a, counts, kind == "insertion", probe.x.device)
    with probe.protected():
        ctx = probe.context()
        ctx.progress = progress
        hidden = _hidden(model, probe, hide)
        size = batch_size or auto_batch_size(ctx)
        ticker = Ticker(ctx, len(masks))
        values = evaluate(ctx, probe.x, hidden, masks, probe.scorer(), size, ticker)
    scores = values[:, 0].numpy()
    fractions = counts / a.size
    return Curve(
        kind=kind,
        target=probe.target,
        label=probe.label(probe.target),
        score=score,
        pixels=counts,
        fractions=fractions,
        scores=scores,
        auc=_trapezoid(scores, fractions),
    )


@register_metric(
    title="Deletion (AUC)",
    category="faithfulness",
    higher_is_better=False,
    needs=_NEEDS,
    range=(0, 1),
    rank=10,
)
def deletion(
    model: Any,
    image: Any,
    saliency: Any,
    *,
    target: Any = None,
    steps: int = 50,
    hide: object = 0.0,
    score: str = "probability",
    batch_size: int = 0,
    progress: Progress | None = None,
) -> Curve:
    """Deletion curve: the target's score as the most salient pixels are removed first.

    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC
    2018. Pixels are removed (set to ``hide``) in order of decreasing saliency, ``k = ceil(H * W
    / steps)`` more at each step, and the target's score ``s_i`` is recorded after each step,
    from none removed (the clean score) to all removed (the score of the ``hide`` image). With
    ``f_i`` the fraction removed, ``AUC = sum_i (f_(i+1) - f_i) * (s_i + s_(i+1)) / 2``. A
    faithful map makes the score fall fast: **lower is better**.

    Args:
        model: a :class:`~seethrough.VisionModel` or a ``torch.nn.Module``.
        image: one image, as :func:`seethrough.explain` accepts it.
        saliency: ``(H, W)`` map at model-input resolution, or an :class:`~seethrough.Explanation`.
        target: the class scored: ``None`` (the model's default: the top class, a
            detector's top box, a segmenter's most frequent class), an index, a label (with a
            ``VisionModel``), or a :class:`~seethrough.targets.Box` or
            :class:`~seethrough.targets.Mask` (see :class:`~seethrough.metrics.ModelProbe`).
        steps: number of steps (at most: ``ceil(H * W / k)``; the last step may remove fewer
            than ``k`` pixels). More steps than pixels means one pixel per step.
        hide: what removed pixels become (see the module's notes); 0.0 as in the paper.
        score: ``"probability"`` (softmax) or ``"logit"``.
        batch_size: perturbed inputs per forward pass (0: chosen to fit memory); the curve does
            not depend on it.
        progress: ``progress(done, total)`` called after each batch of evaluations; returning
            ``False`` cancels with :class:`~seethrough.errors.CancelledError`.

    Returns:
        The :class:`Curve`; its ``auc`` is the metric's number.
    """
    return _curve(
        "deletion", model, image, saliency, target, steps, hide, score, batch_size, progress
    )


@register_metric(
    title="Insertion (AUC)",
    category="faithfulness",
    higher_is_better=True,
    needs=_NEEDS,
    range=(0, 1),
    rank=20,
)
def insertion(
    model: Any,
    image: Any,
    saliency: Any,
    *,
    target: Any = None,
    steps: int = 50,
    hide: object = "blur",
    score: str = "probability",
    batch_size: int = 0,
    progress: Progress | None = None,
) -> Curve:
    """Insertion curve: the target's score as the most salient pixels are inserted first.

    Petsiuk et al., "RISE", BMVC 2018: the mirror of :func:`deletion`. Starting from the fully
    hidden image (blurred by default, as in the paper), the clean pixels are put back in order
    of decreasing saliency, ``k = ceil(H * W / steps)`` more at each step, from none inserted
    to all (the clean score). ``AUC`` is the trapezoid rule over the fraction inserted. A
    faithful map makes the score rise fast: **higher is better**.

    Args:
        model: a :class:`~seethrough.VisionModel` or a ``torch.nn.Module``.
        image: one image, as :func:`seethrough.explain` accepts it.
        saliency: ``(H, W)`` map at model-input resolution, or an :class:`~seethrough.Explanation`.
        target: the class scored: ``None`` (the model's default: the top class, a
            detector's top box, a segmenter's most frequent class), an index, a label (with a
            ``VisionModel``), or a :class:`~seethrough.targets.Box` or
            :class:`~seethrough.targets.Mask` (see :class:`~seethrough.metrics.ModelProbe`).
        steps: number of steps (at most; see :func:`deletion`).
        hide: the image the pixels are inserted into (see the module's notes); ``"blur"`` (a
            Gaussian blur of the input) as in the paper.
        score: ``"probability"`` (softmax) or ``"logit"``.
        batch_size: perturbed inputs per forward pass (0: chosen to fit memory).
        progress: ``progress(done, total)`` called after each batch of evaluations; returning
            ``False`` cancels with :class:`~seethrough.errors.CancelledError`.

    Returns:
        The :class:`Curve`; its ``auc`` is the metric's number.
    """
    return _curve(
        "insertion", model, image, saliency, target, steps, hide, score, batch_size, progress
    )


# --------------------------------------------------------------------------- hiding the top


@dataclass
class HideTop:
    """What the model predicts once the top ``fraction`` of the map's pixels is hidden.

    Attributes:
        fraction: the fraction of pixels asked for.
        pixels: how many pixels were hidden (``max(1, round(fraction * H * W))``).
        target: the class whose probability is followed (the top class by default).
        before_class, before_label, before_probability: the top class on the clean image.
        after_class, after_label, after_probability: the top class once the pixels are hidden.
        target_before, target_after: the target's probability before and after.
        changed: whether the top class changed: the metric's number (as 0 or 1).
    """

    fraction: float
    pixels: int
    target: int
    before_class: int
    before_label: str
    before_probability: float
    after_class: int
    after_label: str
    after_probability: float
    target_before: float
    target_after: float
    changed: bool

    def __float__(self) -> float:
        return float(self.changed)


def hide_top_sweep(
    model: Any,
    image: Any,
    saliency: Any,
    fractions: Sequence[float],
    *,
    target: Any = None,
    hide: object = 0.0,
) -> list[HideTop]:
    """:func:`hide_top` at several fractions, evaluated in one batch (with the clean image).

    Args:
        model: a :class:`~seethrough.VisionModel` or a ``torch.nn.Module``.
        image: one image, as :func:`seethrough.explain` accepts it.
        saliency: ``(H, W)`` map at model-input resolution, or an :class:`~seethrough.Explanation`.
        fractions: fractions of pixels to hide, each in (0, 1].
        target: the class whose probability is followed (``None``: the top class).
        hide: what hidden pixels become (see the module's notes).

    Returns:
        One :class:`HideTop` per fraction, in the order given.
    """
    fr = np.asarray(fractions, dtype=np.float64).ravel()
    if fr.size == 0:
        raise InvalidParameterError("fractions is empty")
    bad = fr[~((fr > 0) & (fr <= 1))]
    if bad.size:
        raise InvalidParameterError(f"fraction={bad[0]}: a fraction of pixels in (0, 1]")
    as_map(saliency)
    probe = ModelProbe.create(model, image, target, "probability")
    if probe.fn is not None:
        raise InvalidTargetError(
            "hide_top follows a classifier's top-1 class; for a box or a mask use deletion, "
            "insertion or average_drop"
        )
    a = _input_map(saliency, probe)
    counts = np.maximum(1, np.round(fr * a.size)).astype(np.int64)
    masks = _rank_masks(a, np.concatenate([[0], counts]), False, probe.x.device)
    with probe.protected():
        ctx = probe.context()
        hidden = _hidden(model, probe, hide)
        probs = evaluate(
            ctx, probe.x, hidden, masks, lambda out: out.double().softmax(1), len(masks)
        )
    probs = probs.numpy()
    top = probs.argmax(1)
    before, t = int(top[0]), probe.target
    return [
        HideTop(
            fraction=float(f),
            pixels=int(c),
            target=t,
            before_class=before,
            before_label=probe.label(before),
            before_probability=float(probs[0, before]),
            after_class=int(top[i]),
            after_label=probe.label(int(top[i])),
            after_probability=float(probs[i, top[i]]),
            target_before=float(probs[0, t]),
            target_after=float(probs[i, t]),
            changed=bool(top[i] != before),
        )
        for i, (f, c) in enumerate(zip(fr, counts, strict=True), start=1)
    ]


@register_metric(
    title="Hide top",
    category="faithfulness",
    higher_is_better=True,
    needs=_NEEDS,
    range=(0, 1),
    rank=30,
)
def hide_top(
    model: Any,
    image: Any,
    saliency: Any,
    *,
    fraction: float = 0.1,
    target: Any = None,
    hide: object = 0.0,
) -> HideTop:
    """Hide the top ``fraction`` most salient pixels: does the predicted class change, and to what?

    The ``max(1, round(fraction * H * W))`` pixels with the highest values (ties by raster
    order, as :func:`~seethrough.metrics.localisation.binarize` ``(top=fraction)``) are set to
    ``hide`` and the model's top class is compared with the clean one. A faithful map names
    pixels the prediction rests on, so hiding a small top share should change it: the number
    (``float(result)``, 1 if the class changed) is **higher is better**. For several fractions
    in one batch, see :func:`hide_top_sweep`.

    Args:
        model: a :class:`~seethrough.VisionModel` or a ``torch.nn.Module``.
        image: one image, as :func:`seethrough.explain` accepts it.
        saliency: ``(H, W)`` map at model-input resolution, or an :class:`~seethrough.Explanation`.
        fraction: fraction of pixels to hide, in (0, 1].
        target: the class whose probability is followed (``None``: the top class).
        hide: what hidden pixels become (see the module's notes).

    Returns:
        A :class:`HideTop` with the classes and probabilities before and after.
    """
    if isinstance(fraction, (Sequence, np.ndarray)):
        raise InvalidParameterError("fraction is one number: use hide_top_sweep for several")
    return hide_top_sweep(model, image, saliency, [fraction], target=target, hide=hide)[0]


# --------------------------------------------------------------------------- Grad-CAM++ metrics


def _explanation_map_probabilities(
    model: Any, image: Any, saliency: Any, target: Any, hide: object
) -> tuple[float, float]:
    """``(Y, O)``: the target's probability on the clean input and on the explanation map input,
    both in one forward pass."""
    as_map(saliency)
    probe = ModelProbe.create(model, image, target, "probability")
    a = _input_map(saliency, probe)
    m = torch.from_numpy(_normalised(a)).to(probe.x.device, probe.x.dtype)
    hidden = _hidden(model, probe, hide)
    y, o = probe.scores(torch.cat([probe.x, probe.x * m + hidden * (1 - m)]))
    return float(y), float(o)


@register_metric(
    title="Average drop",
    category="faithfulness",
    higher_is_better=False,
    needs=_NEEDS,
    range=(0, 1),
    rank=40,
)
def average_drop(
    model: Any,
    image: Any,
    saliency: Any,
    *,
    target: Any = None,
    hide: object = 0.0,
) -> float:
    """Relative drop of the target's probability when the input is masked by the map.

    Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
    Convolutional Networks", WACV 2018. The map, min-max normalised to [0, 1], is a soft mask
    ``m``; the "explanation map" input is ``x * m + hide * (1 - m)`` (with ``hide=0`` in
    model-input space: the paper multiplies the image by the map). With ``Y`` the target's
    probability on the clean input and ``O`` on the explanation map input, the number is
    ``max(0, Y - O) / Y``, a fraction in [0, 1] (the paper reports the mean over images times
    100, in %). A map that keeps what the model needs loses little: **lower is better**. A
    constant map masks out everything.

    Args:
        model: a :class:`~seethrough.VisionModel` or a ``torch.nn.Module``.
        image: one image, as :func:`seethrough.explain` accepts it.
        saliency: ``(H, W)`` map at model-input resolution, or an :class:`~seethrough.Explanation`.
        target: the class scored: ``None`` (the model's default: the top class, a
            detector's top box, a segmenter's most frequent class), an index, a label (with a
            ``VisionModel``), or a :class:`~seethrough.targets.Box` or
            :class:`~seethrough.targets.Mask` (see :class:`~seethrough.metrics.ModelProbe`).
        hide: what masked-out pixels become (see the module's notes).

    Returns:
        The drop, in [0, 1] (0 when ``Y`` underflows to 0).
    """
    y, o = _explanation_map_probabilities(model, image, saliency, target, hide)
    return max(0.0, y - o) / y if y > 0 else 0.0


@register_metric(
    title="Increase in confidence",
    category="faithfulness",
    higher_is_better=True,
    needs=_NEEDS,
    range=(0, 1),
    rank=50,
)
def increase_in_confidence(
    model: Any,
    image: Any,
    saliency: Any,
    *,
    target: Any = None,
    hide: object = 0.0,
) -> float:
    """1 if masking the input by the map raises the target's probability, else 0.

    Chattopadhyay et al., "Grad-CAM++", WACV 2018: with ``Y`` and ``O`` as in
    :func:`average_drop` (clean input, and input ``x * m + hide * (1 - m)`` for the min-max
    normalised map ``m``), the number is ``1[O > Y]``; its mean over images is the paper's
    "% increase in confidence" (divided by 100). **Higher is better.** The arguments are
    those of :func:`average_drop` (model, image, saliency, target, hide).

    Returns:
        1.0 or 0.0.
    """
    y, o = _explanation_map_probabilities(model, image, saliency, target, hide)
    return 1.0 if o > y else 0.0

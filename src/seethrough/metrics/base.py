"""What every metric shares: checking maps and masks, and evaluating the model on new inputs.

A *map* is any real-valued ``(H, W)`` array (an :class:`~seethrough.Explanation` is accepted and
gives its ``map``); a *mask* is an ``(H, W)`` array whose non-zero pixels are the object. Metrics
that re-run the model take it as a :class:`~seethrough.VisionModel` or a plain ``nn.Module`` and
the image as anything :func:`seethrough.explain` accepts; :class:`ModelProbe` does that part once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.runner import ModelRunner, as_runner
from ..core.state import scores_of
from ..core.targets import Bindable, ClassIndexer, TargetFn, resolve_target
from ..errors import InvalidParameterError, InvalidTargetError
from ..explanation import Explanation, Region
from ..targets import Box, BoxScore, Mask, MaskScore

__all__ = [
    "as_map",
    "as_mask",
    "as_region",
    "box_mask",
    "explained_region",
    "truth_region",
    "rank_pixels",
    "class_logits",
    "ModelProbe",
    "SCORES",
]

SCORES = ("probability", "logit")


def as_map(saliency: Any, name: str = "saliency") -> np.ndarray:
    """``saliency`` as a float64 ``(H, W)`` array with finite values.

    Accepts an :class:`~seethrough.Explanation` (its ``map``), a numpy array or a tensor; a
    leading axis of length 1 is dropped.
    """
    if isinstance(saliency, Explanation):
        saliency = saliency.map
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().cpu().numpy()
    a = np.asarray(saliency, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise InvalidParameterError(f"{name} must be an (H, W) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidParameterError(f"{name} holds NaN or infinite values")
    return a


def rank_pixels(a: np.ndarray) -> np.ndarray:
    """Rank of every pixel of a map, 0 for the most salient; ties broken by raster order.

    The one ordering every metric that takes "the top k pixels" uses, so they agree on ties.
    """
    order = np.argsort(-a, axis=None, kind="stable")
    rank = np.empty(a.size, dtype=np.int64)
    rank[order] = np.arange(a.size)
    return rank.reshape(a.shape)


def as_mask(mask: Any, shape: tuple[int, ...] | None = None, name: str = "mask") -> np.ndarray:
    """``mask`` as a boolean ``(H, W)`` array (non-zero = object), checked against ``shape``."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise InvalidParameterError(f"{name} must be an (H, W) array, got shape {m.shape}")
    if shape is not None and m.shape != tuple(shape):
        raise InvalidParameterError(
            f"{name} has shape {m.shape} but the map has shape {tuple(shape)}: resize one of them"
        )
    return m != 0


def class_logits(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``module``'s class scores ``(B, K)`` on ``batch``, by the protected forward of
    :func:`~seethrough.core.state.scores_of` (eval mode, no autograd, state restored).

    Raises:
        InvalidTargetError: the model's output is not ``(N, classes)``.
    """
    out = scores_of(module, batch)
    if out.dim() != 2:
        raise InvalidTargetError(
            f"metrics need class scores of shape (N, classes); the model gave {tuple(out.shape)}"
        )
    return out


@dataclass
class ModelProbe:
    """One image, one model and one target, ready to score perturbed copies of the input.

    The model runs through its own runner, the one :func:`seethrough.explain` uses (a
    detector's packed boxes, a segmenter's logits, a Keras or ONNX model's own framework), and
    the target is fixed on the clean output by :func:`~seethrough.core.targets.resolve_target`
    with the runner's ``default_target`` and ``class_target``, exactly as ``explain`` fixes it:
    ``None`` is a classifier's top class, a detector's top box, a segmenter's most frequent
    class; a class is its column, the top box of that class, or its predicted mask; a
    :class:`~seethrough.targets.Box` or :class:`~seethrough.targets.Mask` is bound to the
    clean output once and scores every perturbed output (a box re-matched by IoU).

    Attributes:
        module: the network (its state is protected by :meth:`protected`).
        x: the model input ``(1, C, H, W)`` on the model's device.
        target: the class index explained (a box's label, a mask's class).
        score: ``"probability"`` or ``"logit"`` (see :meth:`scorer`).
        labels: class names, when the model has them.
        runner: the runner the model is evaluated with.
        fn: the bound score function of a box or mask target (``None`` for a class of a
            classifier, scored by its column).
        given: the target as given (``None``: the model's default), to bind again on another
            image of the same object.
    """

    module: nn.Module
    x: torch.Tensor
    target: int
    score: str = "probability"
    labels: tuple[str, ...] | None = None
    runner: ModelRunner | None = None
    fn: TargetFn | None = None
    given: object = None
    class_index: ClassIndexer | None = None

    @classmethod
    def create(
        cls, model: Any, image: Any, target: object = None, score: str = "probability"
    ) -> ModelProbe:
        """Prepare ``image`` for ``model`` and fix ``target`` (None: the model's default).

        Raises:
            InvalidParameterError: an unknown ``score``, a batch of images.
            InvalidTargetError: a callable target (a metric reports a class, a box or a mask),
                a class out of range, a box or mask that does not bind (see
                :mod:`seethrough.targets`).
            UnknownClassError: a label the model does not have.
        """
        from ..models.vision_model import ModelInfo, prepare_inputs

        if score not in SCORES:
            raise InvalidParameterError(f"score={score!r}: choose one of {', '.join(SCORES)}")
        if callable(target) and not isinstance(target, Bindable):
            raise InvalidTargetError(
                "a metric needs a class (index or label), a Box or a Mask target, not a callable"
            )
        info = ModelInfo.of(model)
        x, _, _ = prepare_inputs(model, image)
        if x.shape[0] != 1:
            raise InvalidParameterError(f"a metric takes one image, got a batch of {x.shape[0]}")
        runner = as_runner(info.runner_for(False), x.device)
        x = x.detach().to(runner.device, runner.dtype if x.is_floating_point() else x.dtype)
        labels = tuple(info.labels) if info.labels is not None else None
        probe = cls(info.module, x, -1, score, labels, runner, None, target, info.class_index)
        probe.bind(probe.logits(probe.x))
        return probe

    def bind(self, clean: torch.Tensor) -> None:
        """Fix :attr:`given` on the clean output ``(1, ...)``: sets :attr:`target` and :attr:`fn`."""
        assert self.runner is not None
        class_index = self.class_index
        n = clean.reshape(clean.shape[0], -1).shape[1]

        def in_range(item: int | str) -> int:
            if isinstance(item, str) or clean.dim() != 2:
                if class_index is None:
                    raise InvalidTargetError("a class label needs a VisionModel (with labels)")
                return class_index(item)
            if not 0 <= item < n:
                raise InvalidTargetError(f"class {item} is out of range: the model has {n} classes")
            return item

        resolved = resolve_target(
            self.given,
            clean,
            in_range,
            default=self.runner.default_target,
            by_class=self.runner.class_target,
        )
        self.target, self.fn = resolved.classes[0], resolved.fns[0]  # type: ignore[assignment]
        if self.fn is None and clean.dim() != 2:
            raise InvalidTargetError(
                f"metrics need class scores of shape (N, classes); the model gave "
                f"{tuple(clean.shape)}"
            )

    def rebound(self, target: object, output: torch.Tensor, score: str | None = None) -> ModelProbe:
        """A copy of this probe with ``target`` fixed on another clean output ``(1, ...)`` (of
        a transformed image, say); ``score`` defaults to this probe's."""
        probe = replace(self, given=target, score=score or self.score)
        probe.bind(output)
        return probe

    def prediction(self, output: torch.Tensor) -> tuple[int, float]:
        """What the model predicts in an output ``(1, ...)``: the class its default target
        explains (the top class, the top box's label, the most frequent class other than the
        background) and that target's probability (see :meth:`scorer`); ``(-1, 0.0)`` where a
        detector finds no box."""
        try:
            probe = self.rebound(None, output, "probability")
        except InvalidTargetError:
            return -1, 0.0
        return probe.target, float(probe.scorer()(output)[0, 0])

    def fixed(self) -> object:
        """The explained target as one that binds to the same object on any output of this
        image (the output of a changed model, say): the class; a box's corners and label
        (re-matched by IoU, see :class:`~seethrough.targets.Box`); a mask's class and pixels."""
        if isinstance(self.fn, BoxScore):
            box = tuple(float(v) for v in self.fn.box.tolist())
            return Box(xyxy=box, label=self.target)  # type: ignore[arg-type]
        if isinstance(self.fn, MaskScore):
            return Mask(self.target, pixels=self.fn.pixels.detach().cpu().numpy())
        return self.target if self.fn is None else self.given

    @property
    def region(self) -> np.ndarray | None:
        """The explained box (its pixels) or mask as a boolean ``(H, W)`` array at the input's
        size, ``None`` for a class of a classifier."""
        shape = tuple(self.x.shape[-2:])
        if isinstance(self.fn, BoxScore):
            return box_mask(self.fn.box.tolist(), shape)
        if isinstance(self.fn, MaskScore):
            return self.fn.pixels.detach().cpu().numpy().astype(bool)
        return None

    @contextmanager
    def protected(self) -> Iterator[None]:
        """Eval mode and no autograd for the block; the model's state is restored after."""
        assert self.runner is not None
        with self.runner.protected(parameters=False), torch.no_grad():
            yield

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's output on a batch of inputs (state protected): class scores ``(B, K)``,
        a detector's packed boxes, a segmenter's logits ``(B, C, H, W)``."""
        with self.protected():
            return self.runner.forward(batch.to(self.x.device, self.x.dtype)).detach()  # type: ignore[union-attr]

    def scores(self, batch: torch.Tensor) -> np.ndarray:
        """The target's score (:meth:`scorer`) for each input of ``batch``, float64 ``(B,)``."""
        return self.scorer()(self.logits(batch))[:, 0].cpu().numpy()

    def context(self) -> Any:
        """A method :class:`~seethrough.methods.base.Context` on :attr:`x` and the model's
        runner, for the perturbation engine (``engine.evaluate``); use it inside
        :meth:`protected`."""
        from ..methods.base import Context

        return Context(self.runner, self.x, self.target, None)  # type: ignore[arg-type]

    def label(self, index: int) -> str:
        """The name of class ``index`` (``"class N"`` without labels)."""
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``output -> (B, 1)`` score of the target, for the perturbation engine.

        ``"logit"``: what ``explain`` explains (the class's logit; a box's class logit, or its
        confidence where the detector has no class scores; a mask's mean class logit).
        ``"probability"``: the class's softmax probability; a box's confidence (the
        detector's own probability of the re-matched box, 0 where none matches); the mean
        over the mask's pixels of the class's per-pixel softmax probability. A custom
        bindable target has only its own score: ``"logit"``.
        """
        fn, probability = self.fn, self.score == "probability"
        if fn is None:
            column = self.target

            def score(output: torch.Tensor) -> torch.Tensor:
                out = output.double()
                out = out.softmax(1) if probability else out
                return out[:, column : column + 1]

            return score
        if probability and isinstance(fn, BoxScore):
            fn = replace(fn, logits=False)
        elif probability and isinstance(fn, MaskScore):
            mask = fn
            fn = lambda output: mask(output.double().softmax(1))  # noqa: E731
        elif probability:
            raise InvalidParameterError(
                "score='probability' is defined for a class, a Box and a Mask; this target has "
                "only its own score: use score='logit'"
            )
        scored = fn
        return lambda output: scored(output).double().reshape(-1, 1)


def box_mask(box: Sequence[float], shape: tuple[int, ...]) -> np.ndarray:
    """The pixels of a box ``(x0, y0, x1, y1)`` (corners in pixels) as a boolean ``(H, W)``
    array: pixel ``(i, j)`` is in the box when its centre ``(j + 1/2, i + 1/2)`` is, so
    ``(10, 20, 30, 40)`` is rows 20..39 and columns 10..29."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = int(shape[0]), int(shape[1])
    rows = (np.arange(h) + 0.5 >= y0) & (np.arange(h) + 0.5 <= y1)
    cols = (np.arange(w) + 0.5 >= x0) & (np.arange(w) + 0.5 <= x1)
    return rows[:, None] & cols[None, :]


def as_region(region: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """A ground-truth region as a boolean ``(H, W)`` array at the map's ``shape``.

    Accepts a mask (any ``(H, W)`` array, non-zero = object), a box ``(x0, y0, x1, y1)`` in
    pixels (see :func:`box_mask`), a :class:`~seethrough.targets.Box` with corners, a
    :class:`~seethrough.targets.Mask` with ``pixels``, an explanation's
    :class:`~seethrough.explanation.Region` (the box or mask it explains), or a bound box or
    mask score (a :class:`ModelProbe`'s ``fn``).
    """
    if isinstance(region, Region):
        region = region.box if region.kind == "box" else region.pixels
        if region is None:
            raise InvalidParameterError(f"{name}: the explanation's region has no pixels")
    if isinstance(region, BoxScore):
        region = region.box.tolist()
    elif isinstance(region, MaskScore):
        region = region.pixels
    elif isinstance(region, Box):
        if region.xyxy is None:
            raise InvalidParameterError(
                f"{name}: a Box without corners is no region; give xyxy=, or take the explained "
                "box of a model with explained_region()"
            )
        region = region.xyxy
    elif isinstance(region, Mask):
        if region.pixels is None:
            raise InvalidParameterError(
                f"{name}: a Mask without pixels is no region; give pixels=, or take the "
                "explained mask of a model with explained_region()"
            )
        region = region.pixels
    if isinstance(region, torch.Tensor):
        region = region.detach().cpu().numpy()
    a = np.asarray(region) if not isinstance(region, np.ndarray) else region
    if a.ndim == 1 and a.shape[0] == 4 and np.issubdtype(a.dtype, np.number):
        if not (np.isfinite(a).all() and a[2] >= a[0] and a[3] >= a[1]):
            raise InvalidParameterError(
                f"{name}: a box is 4 finite corners x0 <= x1, y0 <= y1, got {a.tolist()}"
            )
        return box_mask(a.tolist(), shape)
    return as_mask(a, shape, name)


def truth_region(saliency: Any, mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The ground truth of a localisation metric: ``mask`` as a region (:func:`as_region`), or
    with ``mask=None`` the box or class mask the explanation ``saliency`` explains (its
    :attr:`~seethrough.Explanation.region`: a detector's box is its own ground truth)."""
    if mask is None:
        region = getattr(saliency, "region", None) if isinstance(saliency, Explanation) else None
        if region is None:
            raise InvalidParameterError(
                "give the ground-truth mask (or box); only an explanation of a box or a class "
                "mask has a region of its own"
            )
        mask = region
    return as_region(mask, shape)


def explained_region(model: Any, image: Any, target: object = None) -> np.ndarray:
    """The region a detector's or a segmenter's target explains, as a boolean ``(H, W)`` array
    at the model input's size: the pixels of the box (the clean prediction's box that the
    :class:`~seethrough.targets.Box` binds to, or its corners where no predicted box matches),
    or the mask's pixels (the class's predicted mask, or the ``pixels`` given).

    Used as the ground truth of :func:`~seethrough.metrics.pointing_game` and
    :func:`~seethrough.metrics.energy_pointing_game` where no other is given: "does the map
    of box k lie in box k".

    Raises:
        InvalidTargetError: a classifier's class (it has no region), or a target that does not
            bind (see :class:`ModelProbe`).
    """
    probe = ModelProbe.create(model, image, target, "logit")
    region = probe.region
    if region is None:
        raise InvalidTargetError(
            "a class of a classifier has no region: give a ground-truth mask instead"
        )
    return region

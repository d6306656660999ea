"""Targets beyond a class: a detector's box, a segmenter's class mask.

``explain(detector, image, "gradcam", target=Box(index=0))`` explains the detector's top box;
``explain(segmenter, image, "gradcam", target=Mask("dog"))`` the class "dog" over the pixels
the segmenter gives it. Both are *bindable* targets (see :mod:`seethrough.core.targets`): fixed
once against the model's output on the clean image, then scoring every output of that image
(the perturbed ones of a perturbation method too) with one number per output.

- :class:`Box` works on a detector's packed output ``(N, boxes, 7 + C)``
  (:mod:`seethrough.core.detection`). The reference box (corners and label) is taken from the
  clean prediction; in any other output it is *re-matched*: among the boxes of the same label
  whose IoU with the reference is at least ``iou`` (default 0.5), the one that overlaps most.
  Its score is the logit of the label where the model exposes per-class logits
  (``class_scores``), else the box's confidence. No match scores 0: a perturbation that
  removes the object gives it no evidence; this is not an error.
- :class:`Mask` works on a segmenter's logits ``(N, C, H, W)``: the mean of class ``c``'s
  logits over a fixed pixel mask (the pixels the clean prediction gives the class, or the
  ``pixels`` given).

Without a target, a detector explains its top box (``Box(index=0)``) and a segmenter its most
frequent predicted class other than the background (``Mask()``); a class index or label given
as target means the top box of that class, or that class's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .core.detection import (
    box_iou,
    packed_boxes,
    packed_class_scores,
    packed_labels,
    packed_scores,
    packed_valid,
    unpack,
)
from .core.targets import ClassIndexer
from .errors import InvalidParameterError, InvalidTargetError

__all__ = ["Box", "BoxScore", "Mask", "MaskScore", "IOU_THRESHOLD"]

IOU_THRESHOLD = 0.5
"""The least IoU with the reference box for a box to be the same object (the usual PASCAL /
COCO match threshold)."""


def _fmt_box(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.1f}" for v in box) + ")"


@dataclass(frozen=True)
class BoxScore:
    """The score of a fixed box in a detector's packed outputs: see :class:`Box`.

    Attributes:
        box: the reference corners ``(4,)`` in model-input pixels.
        label: the reference class index.
        iou: the least IoU of a re-matched box.
        logits: score by the label's class score (True) or by the box's confidence (False).
    """

    box: torch.Tensor
    label: int
    iou: float = IOU_THRESHOLD
    logits: bool = True

    def match(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each output ``(B, M, 7 + C)``: the row that re-matches the reference and whether
        there is one, ``((B,) long, (B,) bool)``."""
        boxes = packed_boxes(output)
        overlap = box_iou(boxes.detach(), self.box.to(boxes.device))
        ok = packed_valid(output) & (packed_labels(output) == self.label) & (overlap >= self.iou)
        overlap = torch.where(ok, overlap, torch.full_like(overlap, -1.0))
        best = overlap.argmax(dim=1)
        return best, ok.any(dim=1)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)``: the re-matched box's class logit (or confidence); 0 without one."""
        best, found = self.match(output)
        classes = packed_class_scores(output)
        if self.logits and classes is not None:
            values = classes[..., self.label]
        else:
            values = packed_scores(output)
        picked = values.gather(1, best[:, None]).squeeze(1)
        return torch.where(found, picked, torch.zeros_like(picked))


@dataclass(frozen=True)
class Box:
    """A detector's box as the target of an explanation.

    Give one of:

    - ``index``: the ``index``-th box of the clean prediction (boxes ranked by confidence, 0 is
      the top box);
    - ``xyxy`` (corners in pixels of the model input, which for torchvision's detectors is the
      image itself), optionally with ``label``: the clean box of that label that overlaps it
      most (IoU >= ``iou``); where none does and ``label`` is given, the box itself is the
      reference (a region the model should find an object of that class in);
    - ``label`` alone: the top box of that class.

    The explained class (the explanation's ``target`` and ``label``) is the box's label.

    Args:
        index: position of the box in the clean prediction.
        xyxy: a box's corners ``(x0, y0, x1, y1)``.
        label: a class index or label.
        iou: the least IoU of a re-matched box in other outputs (default 0.5).

    Raises (when the target is bound to the clean output):
        InvalidTargetError: an index past the last box (naming how many there are), no box of
            the label, no box overlapping ``xyxy`` without a label.
        UnknownClassError: a label the model does not have (with suggestions).
    """

    index: int | None = None
    xyxy: tuple[float, float, float, float] | None = None
    label: int | str | None = None
    iou: float = IOU_THRESHOLD

    def __post_init__(self) -> None:
        if self.index is not None and (self.xyxy is not None or self.label is not None):
            raise InvalidParameterError("Box: give index, or xyxy and/or label, not both")
        if self.index is not None and (
            isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0
        ):
            raise InvalidParameterError(f"Box index must be an integer >= 0, got {self.index!r}")
        if self.xyxy is not None:
            box = tuple(float(v) for v in self.xyxy)
            if len(box) != 4 or not all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
                raise InvalidParameterError(
                    f"Box xyxy must be 4 finite numbers x0 <= x1, y0 <= y1, got {self.xyxy!r}"
                )
            object.__setattr__(self, "xyxy", box)
        if not 0.0 < self.iou <= 1.0:
            raise InvalidParameterError(f"Box iou must be in (0, 1], got {self.iou!r}")
        if self.index is None and self.xyxy is None and self.label is None:
            object.__setattr__(self, "index", 0)

    def bind(self, clean: torch.Tensor, class_index: ClassIndexer) -> tuple[int, BoxScore]:
        """Fix the reference box against the clean output ``(1, M, 7 + C)``."""
        (det,) = unpack(clean)
        logits = packed_class_scores(clean) is not None
        label = None if self.label is None else class_index(self.label)
        count = len(det)
        if self.index is not None:
            if self.index >= count:
                found = "no box" if count == 0 else f"{count} box{'es' if count > 1 else ''}"
                raise InvalidTargetError(
                    f"box index {self.index}: the model found {found} in this image "
                    + (
                        "(indices 0.." + str(count - 1) + ")"
                        if count
                        else "above its score threshold"
                    )
                )
            row = self.index
        elif self.xyxy is None:
            rows = (det.labels == label).nonzero().flatten()
            if len(rows) == 0:
                raise InvalidTargetError(
                    f"the model found no box of class {self.label!r} in this image "
                    f"({count} boxes, of classes {sorted(set(det.labels.tolist()))})"
                )
            row = int(rows[0])
        else:
            ref = torch.tensor(self.xyxy, dtype=det.boxes.dtype)
            overlap = box_iou(det.boxes.detach().cpu(), ref)
            ok = overlap >= self.iou
            if label is not None:
                ok &= det.labels.cpu() == label
            if not bool(ok.any()):
                if label is None:
                    raise InvalidTargetError(
                        f"no box of the model overlaps {_fmt_box(self.xyxy)} with IoU >= "
                        f"{self.iou:g}; give label= too to explain that region as a box of a class"
                    )
                return label, BoxScore(ref, label, self.iou, logits)
            row = int(torch.where(ok, overlap, torch.full_like(overlap, -1.0)).argmax())
        box = det.boxes[row].detach().cpu().clone()
        return int(det.labels[row]), BoxScore(box, int(det.labels[row]), self.iou, logits)


@dataclass(frozen=True)
class MaskScore:
    """The mean logit of one class over fixed pixels of a segmenter's output: see :class:`Mask`.

    Attributes:
        label: the class index.
        pixels: ``(H, W)`` boolean mask at the output's resolution.
    """

    label: int
    pixels: torch.Tensor

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)``: ``sum_{p in mask} logits[:, c, p] / |mask|``."""
        weights = self.pixels.to(output.device, output.dtype)
        return (output[:, self.label] * weights).sum(dim=(1, 2)) / weights.sum().clamp_min(1.0)


@dataclass(frozen=True)
class Mask:
    """A segmenter's class over a region as the target of an explanation.

    The score of an output ``(N, C, H, W)`` of logits is the *mean* of class ``c``'s logits over
    a fixed pixel mask ``P`` (the sum divided by ``|P|``, so scores of regions of different
    sizes compare)::

        y = 1 / |P| * sum_{(i, j) in P} logits[c, i, j]

    ``P`` is the region the clean prediction gives the class (``argmax`` over classes equals
    ``c``), or ``pixels``: a boolean ``(H, W)`` array at the model input's size.

    Args:
        label: a class index or label; ``None``: the most frequent predicted class other than
            the background (``background``, class 0 for torchvision's segmenters), the
            background only where nothing else is predicted.
        pixels: the region, instead of the predicted mask of the class.
        background: the class left out when ``label`` is ``None`` (``None``: none).

    Raises (when the target is bound to the clean output):
        UnknownClassError: a class the model does not have (with suggestions).
        InvalidTargetError: ``pixels`` of another size than the output, an empty region, a
            class the model predicts nowhere (without ``pixels``), an output that is not
            ``(N, C, H, W)``.
    """

    label: int | str | None = None
    pixels: np.ndarray | torch.Tensor | None = field(default=None, compare=False)
    background: int | None = 0

    def bind(self, clean: torch.Tensor, class_index: ClassIndexer) -> tuple[int, MaskScore]:
        """Fix the class and the pixels against the clean logits ``(1, C, H, W)``."""
        if clean.dim() != 4:
            raise InvalidTargetError(
                f"a Mask target needs segmentation logits (N, C, H, W); the model gives "
                f"{tuple(clean.shape)}"
            )
        predicted = clean[0].argmax(dim=0)
        if self.label is None:
            counts = torch.bincount(predicted.flatten(), minlength=clean.shape[1])
            if self.background is not None and counts.sum() > counts[self.background]:
                counts[self.background] = -1
            label = int(counts.argmax())
        else:
            label = class_index(self.label)
        if self.pixels is None:
            pixels = predicted == label
            if not bool(pixels.any()):
                present = sorted(set(predicted.flatten().tolist()))
                raise InvalidTargetError(
                    f"the model predicts no pixel of class {self.label!r} in this image (it "
                    f"predicts classes {present}); give pixels= to explain a region"
                )
        else:
            pixels = torch.as_tensor(np.asarray(self.pixels)).to(clean.device) != 0
            if tuple(pixels.shape) != tuple(clean.shape[-2:]):
                raise InvalidTargetError(
                    f"Mask pixels of shape {tuple(pixels.shape)}; the model's output is "
                    f"{tuple(clean.shape[-2:])} (its input size)"
                )
            if not bool(pixels.any()):
                raise InvalidTargetError("Mask pixels select no pixel")
        return label, MaskScore(label, pixels)

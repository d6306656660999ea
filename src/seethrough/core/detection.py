"""Detections as one fixed-shape tensor: how a detector's boxes reach the targets.

Every method runs a model through a runner whose ``forward(x)`` returns one tensor, batch first
(:mod:`seethrough.core.runner`). A detector returns a variable number of boxes per image, so its
runner *packs* them with :func:`pack` into ``(N, max_boxes, 7 + C)``, one row per box::

    [x0, y0, x1, y1, score, valid, label, class_scores[0], ..., class_scores[C - 1]]

- ``x0, y0, x1, y1``: the box, corners in pixels of the model input (xyxy);
- ``score``: the detector's confidence of the box (what it ranks and thresholds by);
- ``valid``: 1 for a box, 0 for a padding row (its other values are 0);
- ``label``: the box's class index (a float holding an integer);
- ``class_scores``: per-class logits (or pre-NMS scores) of the box, where the model exposes
  them (``C = 0`` where it does not).

Rows keep the detector's order (highest score first for torchvision's detectors). Packing is
differentiable: gradients flow from the packed tensor to the boxes, scores and class scores.
:func:`unpack` gives the :class:`Detections` back.

A detector plugs in as a module plus an *adapter*, a function from the module's raw output on a
batch to one :class:`Detections` per image. For a YOLO-style model whose output is, say, a
tensor ``(N, K, 5 + C)`` of ``(cx, cy, w, h, objectness, class logits)`` rows after its own
NMS, the adapter converts the boxes to corners, takes ``label = argmax`` of the logits and
``score = objectness * max softmax`` (or whatever the model ranks by), and keeps the logits as
``class_scores``; :func:`torchvision_adapter` (in :mod:`seethrough.models.detection`) is the
adapter of torchvision's detectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidParameterError, ModelOutputError

__all__ = [
    "Detections",
    "DetectorAdapter",
    "FIELDS",
    "box_iou",
    "pack",
    "unpack",
    "packed_boxes",
    "packed_scores",
    "packed_valid",
    "packed_labels",
    "packed_class_scores",
]

FIELDS = 7
"""Columns of a packed row before the class scores: x0, y0, x1, y1, score, valid, label."""


@dataclass
class Detections:
    """The boxes a detector found in one image.

    Attributes:
        boxes: ``(K, 4)`` corners ``x0, y0, x1, y1`` in pixels of the model input.
        labels: ``(K,)`` integer class indices.
        scores: ``(K,)`` the detector's confidence of each box.
        class_scores: ``(K, C)`` per-class logits or pre-NMS scores of each box, or ``None``
            where the model does not expose them.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    class_scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        k = self.boxes.shape[0] if self.boxes.dim() == 2 else -1
        if self.boxes.dim() != 2 or self.boxes.shape[1] != 4:
            raise ModelOutputError(f"boxes must be (K, 4), got {tuple(self.boxes.shape)}")
        if self.labels.shape != (k,) or self.scores.shape != (k,):
            raise ModelOutputError(
                f"{k} boxes but labels {tuple(self.labels.shape)} and scores "
                f"{tuple(self.scores.shape)}: expected ({k},) each"
            )
        if self.class_scores is not None and (
            self.class_scores.dim() != 2 or self.class_scores.shape[0] != k
        ):
            raise ModelOutputError(
                f"{k} boxes but class scores {tuple(self.class_scores.shape)}: expected ({k}, C)"
            )

    def __len__(self) -> int:
        return self.boxes.shape[0]


DetectorAdapter = Callable[[object], Sequence[Detections]]
"""A detector's output adapter: the module's raw output on a batch -> one Detections per image."""


def pack(
    detections: Sequence[Detections],
    max_boxes: int,
    num_classes: int = 0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Pack one :class:`Detections` per image into ``(N, max_boxes, 7 + num_classes)``.

    The first ``max_boxes`` boxes of each image are kept (in the given order); rows beyond an
    image's boxes are zeros (``valid = 0``). With ``num_classes > 0`` every image must have
    ``class_scores`` with that many columns; with 0 they are left out. Differentiable: the result
    is built by concatenation and padding, so gradients reach the boxes, scores and class scores.

    Raises:
        InvalidParameterError: ``max_boxes < 1`` or ``num_classes < 0``.
        ModelOutputError: class scores missing or of another width.
    """
    if max_boxes < 1 or num_classes < 0:
        raise InvalidParameterError(
            f"max_boxes must be >= 1 and num_classes >= 0, got {max_boxes} and {num_classes}"
        )
    if not detections:
        raise ModelOutputError("no detections to pack: the adapter returned an empty list")
    first = detections[0].boxes
    dtype = dtype or (first.dtype if first.is_floating_point() else torch.float32)
    device = device or first.device
    rows = []
    for det in detections:
        k = min(len(det), max_boxes)
        parts = [
            det.boxes[:k].to(device, dtype),
            det.scores[:k, None].to(device, dtype),
            torch.ones(k, 1, dtype=dtype, device=device),
            det.labels[:k, None].to(device, dtype),
        ]
        if num_classes:
            if det.class_scores is None or det.class_scores.shape[1] != num_classes:
                got = None if det.class_scores is None else det.class_scores.shape[1]
                raise ModelOutputError(
                    f"packing {num_classes} class scores per box, but the detections have {got}"
                )
            parts.append(det.class_scores[:k].to(device, dtype))
        table = torch.cat(parts, dim=1)
        rows.append(torch.nn.functional.pad(table, (0, 0, 0, max_boxes - k)))
    return torch.stack(rows)


def _check_packed(packed: torch.Tensor) -> None:
    if packed.dim() != 3 or packed.shape[-1] < FIELDS:
        raise ModelOutputError(
            f"expected packed detections (N, boxes, {FIELDS} + classes), got "
            f"{tuple(packed.shape)}: is this model a detector?"
        )


def packed_boxes(packed: torch.Tensor) -> torch.Tensor:
    """``(N, M, 4)`` boxes of a packed tensor."""
    _check_packed(packed)
    return packed[..., :4]


def packed_scores(packed: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` confidences of a packed tensor."""
    return packed[..., 4]


def packed_valid(packed: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` booleans: which rows are boxes (not padding)."""
    return packed[..., 5] > 0.5


def packed_labels(packed: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` integer labels of a packed tensor (0 on padding rows)."""
    return packed[..., 6].round().long()


def packed_class_scores(packed: torch.Tensor) -> torch.Tensor | None:
    """``(N, M, C)`` class scores of a packed tensor, or ``None`` where ``C = 0``."""
    return packed[..., FIELDS:] if packed.shape[-1] > FIELDS else None


def unpack(packed: torch.Tensor) -> list[Detections]:
    """The :class:`Detections` of each image of a packed tensor (padding rows dropped)."""
    _check_packed(packed)
    valid = packed_valid(packed)
    labels = packed_labels(packed)
    classes = packed_class_scores(packed)
    out = []
    for i in range(packed.shape[0]):
        keep = valid[i]
        out.append(
            Detections(
                packed[i, keep, :4],
                labels[i, keep],
                packed[i, keep, 4],
                None if classes is None else classes[i, keep],
            )
        )
    return out


def box_iou(boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Intersection over union of ``boxes`` ``(..., 4)`` with one box ``reference`` ``(4,)``
    (xyxy), shape ``(...)``; 0 where both are empty."""
    ref = reference.to(boxes.dtype)
    x0 = torch.maximum(boxes[..., 0], ref[0])
    y0 = torch.maximum(boxes[..., 1], ref[1])
    x1 = torch.minimum(boxes[..., 2], ref[2])
    y1 = torch.minimum(boxes[..., 3], ref[3])
    inter = (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0)
    area = (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(
        0
    )
    ref_area = (ref[2] - ref[0]).clamp_min(0) * (ref[3] - ref[1]).clamp_min(0)
    union = area + ref_area - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))

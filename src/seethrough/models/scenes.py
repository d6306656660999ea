"""A small segmenter and a small detector of the synthetic scenes
(:func:`seethrough.datasets.synthetic.make_scenes`: 2-3 digits on clutter), trained once and
cached on disk like the digits model (:mod:`seethrough.models.digits`).

* :class:`SceneSegmenter`, a fully convolutional net: per-pixel logits ``(N, 11, H, W)`` of the
  background and the ten digits, the layout of a torchvision segmenter's ``"out"``.
* :class:`SceneDetector`, a CenterNet-style detector (Zhou et al., "Objects as Points", 2019): a
  heatmap of object centres per class, and each centre's sub-cell offset and box size, on a
  stride-4 grid; :func:`decode` (its output adapter) turns them into boxes with per-class
  logits.
* :func:`train_segmenter` / :func:`train_detector` train them in about 365 s and 60 s on one
  torch thread (the segmenter's next scenes rendered on a second core meanwhile), their trunks
  started from the trained digits model's (held-out mean IoU about 0.95, recall at IoU 0.5
  about 0.98);
  :func:`load_segmenter` / :func:`load_detector` train once and cache the weights
  (safetensors, written atomically) beside the digits model's.

Both see the whole digit from each unit of their last block (a 41-pixel view at stride 4), so a
class map or a box is the evidence of the object under it, which is what lets "the explanation
of box k lies on object k" be checked.

The segmenter is scored against the scenes' stroke masks, the pixels painted more digit than
background. Until the cache version ``v4`` the masks were dilated by one pixel, a ring that is
mostly not drawn (two thirds of it within 5 grey levels of the bare background): the v4
recipe scored 0.89 on those and 0.85 on the drawn strokes, about 80 % of its wrong pixels on a
stroke's edge. Since v5 the edge is decided at full resolution (``edge``) and training runs 9
epochs instead of 5: held-out mean IoU 0.92 (on 200 held-out scenes, the v4 net with 5 epochs
scored 0.84, with 9 epochs 0.88; with ``edge``, 5 epochs 0.87 and 9 epochs 0.92). That net
scored 0.974 on its own training scenes and 0.92 on new scenes of the same digit sources: it
memorised its 3000 scenes. Since v6 every epoch renders new ones (``fresh``): 0.935 on 500
held-out scenes, for 40 s more (the rendering). Since v8 (segmenter) and v6 (detector) both
trunks start from the digits model's (:func:`_digits_trunk`) and the segmenter's loss weighs a
stroke's edge 4 times (:func:`_segmentation_loss`): 0.945 in 395 s (the trunk alone: 0.933;
its gain is in short training: 0.82 instead of 0.64 after 2 epochs, 68 s). v9 trains 12 epochs
instead of 9: 0.951 in 470 s (365 s since the class maps are built slot by slot and each
epoch's scenes are rendered while the one before trains, the same weights). The detector's
recall rose from 0.971 to 0.978 and its precision from 0.77 to 0.88, in the same 60 s, and
Grad-CAM of a box now peaks on its object in 0.92 of the boxes (0.79). What remains is shared
by the two decisions: with every digit's class right (read off the truth) the v6 net would
score 0.964, with every stroke right and each digit's pixels given the class the net gives
most of them, 0.981 (1 % of the held-out digits are read as another digit). A wider view for
the class buys IoU at the cost of the explanations this model is for: a residual block dilated
by 2 after ``block4`` scored 0.950, and a 3x3 vote over the class logits 0.941, but Grad-CAM of
a class (on ``block4``) put 0.76 and 0.79 of its mass on the class's pixels, against 0.93
without. A vote per connected blob of ink after the argmax (each blob takes the class most of
its pixels get) would add about 0.014, but is not done: the mask a ``Mask`` target explains by
default is the argmax, and touching digits would share one class.
"""

from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.threads import torch_threads
from ..datasets.synthetic import LABEL_NAMES, SyntheticScenes, make_scenes
from ..errors import InvalidParameterError
from . import digits
from ._trained import check_training, fit, load_or_train, to_input
from .preprocessing import Preprocessing

__all__ = [
    "SEGMENTER_LABELS",
    "DETECTOR_LABELS",
    "PREPROCESSING",
    "SEGMENTER_LAYER",
    "DETECTOR_LAYER",
    "CACHE_VERSIONS",
    "SceneSegmenter",
    "SceneDetector",
    "decode",
    "train_segmenter",
    "train_detector",
    "load_segmenter",
    "load_detector",
    "mean_iou",
    "detection_recall",
    "cache_path",
    "scene_model",
    "NAMES",
]

SIZE = 96  # the scenes' side, and the input size of both nets
STRIDE = 4  # of the detector's grid
SEGMENTER_LABELS: tuple[str, ...] = ("background", *LABEL_NAMES)
DETECTOR_LABELS: tuple[str, ...] = LABEL_NAMES
PREPROCESSING = Preprocessing(size=SIZE, resize="squash", mean=digits.MEAN, std=digits.STD)
"""What both nets expect (the digits model's normalisation, at the scenes' size)."""
SEGMENTER_LAYER = "features.block4"
DETECTOR_LAYER = "features.block4"
Kind = Literal["segmenter", "detector"]
CACHE_VERSIONS: dict[Kind, str] = {"segmenter": "v9", "detector": "v6"}
"""Each model's cache version: bump one when the generator, its architecture or its recipe changes."""
M = TypeVar("M", bound=nn.Module)


# ------------------------------------------------------------------------------------- models


def _features(width: int = 64) -> nn.Sequential:
    """The stride-4 trunk both nets share: 96x96 in, 24x24 maps out (a 41-pixel view)."""
    block = digits._block
    return nn.Sequential(
        OrderedDict(
            stem=block(3, width // 4, stride=2),
            block1=block(width // 4, width // 2),
            pool=nn.MaxPool2d(2),
            block2=block(width // 2, width),
            block3=block(width, width, dilation=2),
            block4=block(width, width),
        )
    )


class SceneSegmenter(nn.Module):
    """A tiny fully convolutional segmenter: per-pixel logits of background and ten digits.

    FCN-style (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR
    2015) with U-Net-like skips (Ronneberger et al., "U-Net", MICCAI 2015). Which digit a pixel
    belongs to is decided on the trunk's 24x24 maps (:func:`_features`; ``features.block4``, the
    default Grad-CAM layer, whose units see 41 pixels, a whole digit): a 1x1 ``classifier``
    gives the class logits, upsampled bilinearly. Where the strokes end is decided at full
    resolution, for the background's score only: ``skip`` (a 1x1 convolution of
    ``features.block1``'s 48x48 maps) corrects it at 48x48, and ``edge``, two conv blocks on the
    input's pixels stacked with ``project`` (8 channels of ``features.block1``, upsampled) and
    the background's log-odds so far (a constant to it: no gradient flows back through them),
    corrects it at 96x96:
    ``z = up96(up48(classifier(b4)) + bg(skip(f1)))``,
    ``out = z + bg(edge([x, up96(project(f1)), z_0 - logsumexp(z_1..10)]))``,
    ``bg`` padding a background channel with zeros for the digits. A digit's logits depend on
    ``features`` and ``classifier`` only, so its Grad-CAM is the evidence the digit is decided on.
    Input: RGB in [0, 1] normalised with :data:`PREPROCESSING`'s mean and std.
    """

    def __init__(
        self, num_classes: int = len(SEGMENTER_LABELS), width: int = 64, edge: int = 16
    ) -> None:
        """Build the network.

        Args:
            num_classes: the number of classes (the background included).
            width: the channels of the 24x24 blocks.
            edge: the channels of the full-resolution edge blocks.
        """
        super().__init__()
        self.num_classes = num_classes
        self.features = _features(width)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.skip = nn.Conv2d(width // 2, 1, 1)
        self.project = nn.Conv2d(width // 2, 8, 1)
        self.edge = nn.Sequential(
            OrderedDict(
                hidden=digits._block(3 + 8 + 1, edge),
                hidden2=digits._block(edge, edge),
                out=nn.Conv2d(edge, 1, 1),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)`` of a normalised batch ``(N, 3, H, W)`` (``H`` and
        ``W`` multiples of 4)."""
        f = self.features
        fine = f.block1(f.stem(x))
        deep = f.block4(f.block3(f.block2(f.pool(fine))))
        coarse = self.classifier(deep)
        up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        background = (0, 0, 0, 0, 0, self.num_classes - 1)  # pads one channel to all classes
        logits = up + F.pad(self.skip(fine), background)
        out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        context = F.interpolate(
            self.project(fine), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        odds = (out[:, :1] - out[:, 1:].logsumexp(1, keepdim=True)).detach()
        return out + F.pad(self.edge(torch.cat([x, context, odds], 1)), background)


class SceneDetector(nn.Module):
    """A CenterNet-style detector (Zhou et al., "Objects as Points", 2019) on a stride-4 grid.

    Its output ``(N, C + 4, H / 4, W / 4)`` holds, per cell, the logits of an object centre of
    each class (``C`` channels), then the centre's offset inside the cell (2, in cells) and the
    box's log width and height (2, in cells); :func:`decode` makes boxes of it.
    ``features.block4`` (the default Grad-CAM layer) feeds the ``head``.
    Input: RGB in [0, 1] normalised with :data:`PREPROCESSING`'s mean and std.
    """

    def __init__(self, num_classes: int = len(DETECTOR_LABELS), width: int = 64) -> None:
        """Build the network.

        Args:
            num_classes: the number of object classes.
            width: the channels of the 24x24 blocks.
        """
        super().__init__()
        self.num_classes = num_classes
        self.features = _features(width)
        self.head = nn.Sequential(
            OrderedDict(
                hidden=digits._block(width, width), out=nn.Conv2d(width, num_classes + 4, 1)
            )
        )
        with torch.no_grad():  # a centre prior of 0.01 (the paper's focal-loss start)
            self.head.out.bias[:num_classes] = -4.6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The raw map ``(N, num_classes + 4, H / 4, W / 4)`` of a normalised batch."""
        return self.head(self.features(x))


def decode(
    raw: torch.Tensor, *, threshold: float = 0.3, max_boxes: int = 20, stride: int = STRIDE
) -> list[Any]:
    """The detector's output adapter: its raw map to one ``Detections`` per image.

    A box is a cell whose centre probability ``sigmoid(logit)`` for some class is the largest
    of its 3x3 neighbourhood (the paper's max-pool instead of NMS) and above ``threshold``; its
    centre is ``(cell + offset) * stride`` and its size ``exp(log size) * stride`` pixels. Its
    ``class_scores`` are the centre logits of every class at that cell and its ``score`` the
    probability of its label; boxes come highest score first. Differentiable in ``raw``.

    Args:
        raw: :class:`SceneDetector`'s output ``(N, C + 4, h, w)``.
        threshold: the least centre probability of a box.
        max_boxes: the most boxes per image.
        stride: input pixels per cell.

    Returns:
        ``list[Detections]`` (:class:`seethrough.core.detection.Detections`), one per image;
        boxes in pixels of the model input, ``(x0, y0, x1, y1)``.
    """
    from ..core.detection import Detections

    n, channels, h, w = raw.shape
    classes = channels - 4
    logits, offset, size = raw[:, :classes], raw[:, classes : classes + 2], raw[:, classes + 2 :]
    with torch.no_grad():
        prob = logits.sigmoid()
        peak = (prob == F.max_pool2d(prob, 3, stride=1, padding=1)) & (prob > threshold)
        ranked = torch.where(peak, prob, torch.zeros_like(prob)).flatten(1)
    out = []
    for i in range(n):
        top = ranked[i].topk(min(max_boxes, ranked.shape[1]))
        keep = top.indices[top.values > 0]
        label, cell = keep // (h * w), keep % (h * w)
        ys, xs = cell // w, cell % w
        centre = torch.stack([xs, ys], 1).to(raw.dtype) + offset[i, :, ys, xs].T
        half = size[i, :, ys, xs].T.exp() / 2
        boxes = torch.cat([centre - half, centre + half], 1) * stride
        scores = logits[i, :, ys, xs].T
        out.append(
            Detections(boxes, label, scores.gather(1, label[:, None])[:, 0].sigmoid(), scores)
        )
    return out


# ------------------------------------------------------------------------------------ targets


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` images to a normalised float batch ``(N, 3, H, W)``."""
    return to_input(images, PREPROCESSING)


def _segmentation_targets(data: SyntheticScenes) -> torch.Tensor:
    """int64 ``(N, H, W)`` class maps (0 background, digit + 1)."""
    return torch.from_numpy(data.segmentation())


EDGE_WEIGHT = 4.0
"""The segmenter's loss weight of a pixel on a stroke's edge (:func:`_segmentation_loss`)."""


def _segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy, a pixel on a stroke's edge (the digits' pixels within one pixel
    of the background, and the background's within one pixel of a digit) weighted
    :data:`EDGE_WEIGHT` times the others (a border weight map as in U-Net, Ronneberger et al.,
    MICCAI 2015): ``sum(w * CE) / sum(w)``. Most of the net's wrong pixels lie on that edge.
    """
    ink = target.gt(0).float()[:, None]
    edge = F.max_pool2d(ink, 3, 1, 1) + F.max_pool2d(-ink, 3, 1, 1)  # dilated - eroded
    weight = 1 + (EDGE_WEIGHT - 1) * edge[:, 0]
    return (F.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum()


def _detection_targets(data: SyntheticScenes, stride: int = STRIDE) -> torch.Tensor:
    """Per-image maps ``(N, 10 + 5, h, w)``: Gaussian centre heatmaps per class (1 at each
    object's centre cell, sigma a sixth of the box's geometric-mean side), then the offset and
    log size to regress (in cells) and a 1 where a centre lies."""
    n, size = len(data), data.images.shape[1]
    h = w = size // stride
    out = torch.zeros(n, 10 + 5, h, w)
    boxes = torch.from_numpy(data.boxes).float() / stride  # (N, K, 4) in cells
    labels, real = torch.from_numpy(data.labels), torch.from_numpy(data.labels >= 0)
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    extent = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1e-3)
    cell = centre.floor().clamp(0, h - 1)
    sigma = (extent.prod(-1).sqrt() / 6).clamp_min(0.5)
    ys, xs = torch.arange(h, dtype=torch.float32)[:, None], torch.arange(w, dtype=torch.float32)
    for k in range(boxes.shape[1]):
        gx, gy, sk = (v[:, None, None] for v in (cell[:, k, 0], cell[:, k, 1], sigma[:, k]))
        blob = torch.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * sk**2)) * real[:, k, None, None]
        one_hot = F.one_hot(labels[:, k].clamp_min(0), 10).float()[:, :, None, None]
        out[:, :10] = torch.maximum(out[:, :10], one_hot * blob[:, None])
    i, k = torch.nonzero(real, as_tuple=True)
    gx, gy = cell[i, k, 0].long(), cell[i, k, 1].long()
    values = torch.cat([centre[i, k] - cell[i, k], extent[i, k].log(), torch.ones(len(i), 1)], 1)
    out[i, 10:, gy, gx] = values
    return out


def _detection_loss(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's loss: the penalty-reduced focal loss of the heatmaps (alpha 2, beta 4) plus
    the L1 loss of the offsets and log sizes at the centres, both per object."""
    classes = raw.shape[1] - 4
    logits, heat = raw[:, :classes], target[:, :classes]
    centre = target[:, -1:]
    objects = centre.sum().clamp_min(1)
    positive = heat.eq(1).float()
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    focal = -(positive * (1 - p) ** 2 * log_p + (1 - positive) * (1 - heat) ** 4 * p**2 * log_q)
    regression = (centre * (raw[:, classes:] - target[:, classes:-1]).abs()).sum()
    return (focal.sum() + regression) / objects


# -------------------------------------------------------------------------------- evaluation


def _batches(model: nn.Module, images: np.ndarray, batch: int = 250) -> list[torch.Tensor]:
    """``model``'s outputs (eval mode, no gradients) on ``images``, in batches."""
    model.eval()
    with torch.no_grad():
        return [model(_to_input(images[i : i + batch])) for i in range(0, len(images), batch)]


def mean_iou(model: nn.Module, data: SyntheticScenes) -> tuple[float, list[float]]:
    """The mean over classes of the IoU of the predicted and true class maps on ``data``.

    Per class ``c``, ``IoU_c = |pred = c and true = c| / |pred = c or true = c|`` summed over
    all pixels of all images (the PASCAL VOC measure); classes absent from both are left out.

    Returns:
        The mean IoU and the per-class IoUs (background first; NaN for an absent class).
    """
    predicted = torch.cat([logits.argmax(1) for logits in _batches(model, data.images)])
    truth = _segmentation_targets(data)
    classes = model.num_classes
    confusion = torch.bincount(
        truth.flatten() * classes + predicted.flatten(), minlength=classes**2
    )
    confusion = confusion.view(classes, classes).double()
    hits = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - hits
    per_class = torch.where(union > 0, hits / union.clamp_min(1), torch.nan)
    return float(per_class.nanmean()), per_class.tolist()


def detection_recall(
    model: nn.Module, data: SyntheticScenes, *, iou: float = 0.5, threshold: float = 0.3
) -> dict[str, float]:
    """Recall and precision of the detector's boxes on ``data`` at IoU ``iou``.

    A true object is found when a predicted box of its label overlaps it by at least ``iou``
    (each predicted box finds one object at most, greedily in score order).

    Returns:
        ``{"recall", "precision", "class_agnostic_recall"}``.
    """
    from ..core.detection import box_iou

    found = found_any = predicted = matched = 0
    outputs = _batches(model, data.images)
    detections = [det for raw in outputs for det in decode(raw, threshold=threshold)]
    for i, det in enumerate(detections):
        _, boxes, labels = data.instances(i)
        truth = torch.from_numpy(boxes).float()
        predicted += len(det)
        used = torch.zeros(len(truth), dtype=torch.bool)
        for box, label in zip(det.boxes, det.labels.tolist(), strict=True):
            overlap = box_iou(truth, box)
            ok = (overlap >= iou) & ~used & torch.from_numpy(labels == label)
            if ok.any():
                used[int(torch.where(ok, overlap, -1).argmax())] = True
                matched += 1
        found += int(used.sum())
        found_any += sum(
            bool((box_iou(det.boxes, t) >= iou).any()) if len(det) else False for t in truth
        )
    total = int(data.counts.sum())
    return {
        "recall": found / max(total, 1),
        "precision": matched / max(predicted, 1),
        "class_agnostic_recall": found_any / max(total, 1),
    }


# ----------------------------------------------------------------------------------- training


def _train_scene(
    kind: Kind,
    build: Callable[[], M],
    targets_of: Callable[[SyntheticScenes], torch.Tensor],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score: Callable[[M, SyntheticScenes], dict[str, Any]],
    *,
    n_train: int,
    epochs: int,
    batch: int,
    lr: float,
    n_test: int,
    seed: int,
    threads: int | None,
    progress: bool,
    data: SyntheticScenes | None,
    fresh: bool,
    trunk: bool,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[M, dict[str, Any]]:
    """Train a fresh ``build()`` on ``data`` (:func:`~seethrough.models._trained.fit`: the
    digits model's recipe), with ``fresh`` on new scenes in every epoch after the first
    (``make_scenes(n_train, seed=seed + epoch)``), and ``score`` it on ``n_test`` scenes of
    the test split (clutter of seed ``seed + 1``); with ``trunk`` its ``features`` start from
    the digits model's (:func:`_digits_trunk`). The info holds the scores, the seconds (the
    digits model's loading or training not counted), the threads and the recipe."""
    check_training(n_train, epochs, batch, lr, n_test)
    with torch_threads(threads):
        start_from = _digits_trunk(cache_dir, progress) if trunk else None
        start = time.perf_counter()
        torch.manual_seed(seed)
        data = make_scenes(n_train, seed=seed, split="train") if data is None else data

        def refresh(epoch: int) -> tuple[np.ndarray, torch.Tensor]:
            scenes = make_scenes(len(data), seed=seed + epoch, split="train")
            return scenes.images, targets_of(scenes)

        model = build()
        if start_from is not None:
            model.features.load_state_dict(start_from)
        model = fit(
            model, data.images, targets_of(data), loss_of, _to_input,
            epochs=epochs, batch=batch, lr=lr, seed=seed, label=f"training the scene {kind}",
            progress=progress, refresh=refresh if fresh else None,
        )  # fmt: skip
        info = score(model, make_scenes(n_test, seed=seed + 1, split="test"))
        info |= {"seconds": round(time.perf_counter() - start, 1)}
        info |= {"threads": torch.get_num_threads()}
    info |= {"seed": seed, "n_train": len(data), "epochs": epochs, "batch": batch, "lr": lr}
    info |= {"fresh": fresh, "trunk": digits.cache_path(cache_dir).stem if trunk else None}
    return model, info


def _digits_trunk(
    cache_dir: str | os.PathLike[str] | None, progress: bool
) -> dict[str, torch.Tensor]:
    """The trained digits model's ``features`` (:func:`seethrough.models.digits.load_digits_model`,
    trained once and cached in ``cache_dir`` if absent): the same blocks as :func:`_features`,
    trained on the same renderer's digits at about the same size (cells of 19-38 pixels there,
    19-31 here), so a scene model starts knowing the digits and learns where they are.
    Started from it, the segmenter's held-out mean IoU after 2 epochs rose from 0.64 to 0.82
    (after 9 it stayed about the same: 0.933 against 0.935); the detector's recall after its 3
    epochs from 0.971 to 0.978 and its precision from 0.77 to 0.88."""
    return digits.load_digits_model(cache_dir=cache_dir, progress=progress).features.state_dict()


def train_segmenter(
    *,
    n_train: int = 3000,
    epochs: int = 12,
    batch: int = 8,
    lr: float = 8e-3,
    n_test: int = 500,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    data: SyntheticScenes | None = None,
    fresh: bool = True,
    trunk: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[SceneSegmenter, dict[str, Any]]:
    """Train a :class:`SceneSegmenter` on :func:`make_scenes` (about 365 s on one torch thread).

    Per-pixel cross-entropy with a stroke's edge weighted more (:func:`_segmentation_loss`),
    AdamW with a one-cycle learning rate, one seeded data order: the same seed, library
    versions and thread count give the same weights. The mean IoU
    (:func:`mean_iou`) is measured on ``n_test`` scenes of the test split (held-out digit
    sources, clutter of seed ``seed + 1``).

    Args:
        n_train: training scenes per epoch (rendered before the epoch; once, without
            ``fresh``).
        epochs: training epochs.
        batch: scenes per step.
        lr: the peak learning rate.
        n_test: held-out scenes for the reported IoU.
        seed: seeds the data, the initial weights and the data order.
        threads: torch intra-op threads while training (``None``: torch's current setting).
        progress: show a progress bar.
        data: training scenes already rendered (``make_scenes(n_train, seed=seed)`` if None).
        fresh: render new scenes for every epoch after the first
            (``make_scenes(n_train, seed=seed + epoch)``), so no scene is seen twice: the net
            cannot memorise its training scenes (the v5 recipe, on one set, scored 0.974 on its
            training scenes and 0.92 on new ones).
        trunk: start ``features`` from the trained digits model's (:func:`_digits_trunk`;
            loaded from ``cache_dir``, or trained there once first, about 90 s); off: random.
        cache_dir: where the digits model is cached (see :func:`cache_path`).

    Returns:
        The model in eval mode, and ``{"test_miou", "test_iou", "seconds", ...}``.
    """

    def score(model: SceneSegmenter, test: SyntheticScenes) -> dict[str, Any]:
        miou, per_class = mean_iou(model, test)
        return {"test_miou": miou, "test_iou": per_class}

    model, info = _train_scene(
        "segmenter", SceneSegmenter, _segmentation_targets, _segmentation_loss, score,
        n_train=n_train, epochs=epochs, batch=batch, lr=lr, n_test=n_test, seed=seed,
        threads=threads, progress=progress, data=data, fresh=fresh, trunk=trunk,
        cache_dir=cache_dir,
    )  # fmt: skip
    if progress:
        print(
            f"scene segmenter: held-out mean IoU {info['test_miou']:.3f} in "
            f"{info['seconds']:.0f} s",
            file=sys.stderr,
        )
    return model, info


def train_detector(
    *,
    n_train: int = 3000,
    epochs: int = 3,
    batch: int = 16,
    lr: float = 8e-3,
    n_test: int = 500,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    data: SyntheticScenes | None = None,
    fresh: bool = False,
    trunk: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[SceneDetector, dict[str, Any]]:
    """Train a :class:`SceneDetector` on :func:`make_scenes` (about 60 s on one CPU thread).

    CenterNet's loss (:func:`_detection_loss`), AdamW with a one-cycle learning rate, one
    seeded data order. Recall and precision at IoU 0.5 (:func:`detection_recall`) are measured
    on ``n_test`` scenes of the test split (clutter of seed ``seed + 1``).

    Args:
        n_train: training scenes (rendered once, before training).
        epochs: passes over them.
        batch: scenes per step.
        lr: the peak learning rate.
        n_test: held-out scenes for the reported recall.
        seed: seeds the data, the initial weights and the data order.
        threads: torch intra-op threads while training (``None``: torch's current setting).
        progress: show a progress bar.
        data: training scenes already rendered (``make_scenes(n_train, seed=seed)`` if None).
        fresh: render new scenes for every epoch after the first, as
            :func:`train_segmenter` does (off: three epochs over one set already recall 0.98).
        trunk: start ``features`` from the trained digits model's (:func:`_digits_trunk`;
            loaded from ``cache_dir``, or trained there once first, about 90 s); off: random.
        cache_dir: where the digits model is cached (see :func:`cache_path`).

    Returns:
        The model in eval mode, and ``{"test_recall", "test_precision", "seconds", ...}``.
    """

    def score(model: SceneDetector, test: SyntheticScenes) -> dict[str, Any]:
        return {f"test_{key}": value for key, value in detection_recall(model, test).items()}

    model, info = _train_scene(
        "detector", SceneDetector, _detection_targets, _detection_loss, score,
        n_train=n_train, epochs=epochs, batch=batch, lr=lr, n_test=n_test, seed=seed,
        threads=threads, progress=progress, data=data, fresh=fresh, trunk=trunk,
        cache_dir=cache_dir,
    )  # fmt: skip
    if progress:
        print(
            f"scene detector: held-out recall {info['test_recall']:.3f} (precision "
            f"{info['test_precision']:.3f}) at IoU 0.5 in {info['seconds']:.0f} s",
            file=sys.stderr,
        )
    return model, info


# -------------------------------------------------------------------------------------- cache

_TRAIN: dict[str, Callable[..., tuple[nn.Module, dict[str, Any]]]] = {
    "segmenter": train_segmenter,
    "detector": train_detector,
}
_BUILD: dict[str, Callable[[], nn.Module]] = {
    "segmenter": SceneSegmenter,
    "detector": SceneDetector,
}
_MINUTES = {"segmenter": "~6 min", "detector": "~1 min"}


def _kind(kind: str) -> Kind:
    if kind not in _TRAIN:
        raise InvalidParameterError(f"kind must be 'segmenter' or 'detector', got {kind!r}")
    return kind  # type: ignore[return-value]


def cache_path(kind: Kind, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the trained weights of ``kind`` (``"segmenter"`` or ``"detector"``) are cached, a
    JSON sidecar with the same stem beside them.

    Args:
        kind: which model.
        cache_dir: the folder; default the digits model's
            (:func:`seethrough.models.digits.cache_path`: ``$SEETHROUGH_CACHE``, else
            ``$XDG_CACHE_HOME/seethrough``, else ``~/.cache/seethrough``).
    """
    folder = digits.cache_path(cache_dir).parent
    return folder / f"synthetic_scene_{_kind(kind)}-{CACHE_VERSIONS[kind]}.safetensors"


def _load(
    kind: Kind,
    cache_dir: str | os.PathLike[str] | None,
    retrain: bool,
    progress: bool,
    threads: int | None,
) -> nn.Module:
    """The trained model of ``kind``: from the cache, else trained once and cached."""
    path = cache_path(kind, cache_dir)
    return load_or_train(
        path,
        build=_BUILD[kind],
        train=lambda: _TRAIN[kind](progress=progress, threads=threads, cache_dir=cache_dir),
        retrain=retrain,
        announce=(
            f"training the synthetic scene {kind} once ({_MINUTES[kind]}); cached in {path.parent}"
        ),
        what=f"scene {kind}",
        remedy=f"delete it or pass retrain=True to train again ({_MINUTES[kind]})",
        version=CACHE_VERSIONS[kind],
    )


def load_segmenter(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> SceneSegmenter:
    """The trained :class:`SceneSegmenter` (eval mode): from the cache, else trained once
    (:func:`train_segmenter`'s defaults, about 365 s) and cached atomically.

    Args:
        cache_dir: the cache folder (see :func:`cache_path`).
        retrain: train again and overwrite the cache.
        progress: show training progress.
        threads: torch threads while training (``None``: torch's current setting).

    Raises:
        WeightsUnavailableError: the cache file cannot be read.
        WeightsMismatchError: its tensors do not fit the network (never silently retrained).
    """
    return _load("segmenter", cache_dir, retrain, progress, threads)  # type: ignore[return-value]


def load_detector(
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    progress: bool = True,
    threads: int | None = None,
) -> SceneDetector:
    """The trained :class:`SceneDetector` (eval mode): from the cache, else trained once
    (:func:`train_detector`'s defaults, about a minute) and cached atomically.

    Args:
        cache_dir: the cache folder (see :func:`cache_path`).
        retrain: train again and overwrite the cache.
        progress: show training progress.
        threads: torch threads while training (``None``: torch's current setting).

    Raises:
        WeightsUnavailableError: the cache file cannot be read.
        WeightsMismatchError: its tensors do not fit the network (never silently retrained).
    """
    return _load("detector", cache_dir, retrain, progress, threads)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------- zoo

NAMES = {"synthetic_segmenter": "segmenter", "synthetic_detector": "detector"}
"""The names :func:`~seethrough.models.load_model` knows them by."""


def scene_model(
    name: str,
    *,
    pretrained: bool = True,
    score_threshold: float | None = None,
    max_boxes: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """``"synthetic_segmenter"`` or ``"synthetic_detector"`` as a
    :class:`~seethrough.models.VisionModel` (``task`` ``"segmentation"`` / ``"detection"``).

    Args:
        name: one of :data:`NAMES`.
        pretrained: the trained weights (from the cache, trained once if absent) or random ones.
        score_threshold: the detector's least centre probability of a box (default 0.3 trained,
            0 random: a random net's probabilities all lie near its 0.01 prior).
        max_boxes: the detector's most boxes per image (default 20).
        cache_dir: the weights cache folder (see :func:`cache_path`).
    """
    from functools import partial

    from .detection import detector_model, segmenter_model

    kind = NAMES.get(name)
    if kind is None:
        raise InvalidParameterError(f"unknown scene model {name!r}: use one of {', '.join(NAMES)}")
    if pretrained:
        module = _load(kind, cache_dir, False, True, None)
        weights = f"trained on synthetic scenes (cached in {cache_path(kind, cache_dir)})"
    else:
        module, weights = _BUILD[kind]().eval(), "none (random)"
    common = {
        "name": name,
        "source": "synthetic",
        "weights": weights,
        "preprocessing": PREPROCESSING,
    }
    if kind == "segmenter":
        if score_threshold is not None or max_boxes is not None:
            raise InvalidParameterError("score_threshold and max_boxes apply to detectors only")
        return segmenter_model(module, SEGMENTER_LABELS, default_layer=SEGMENTER_LAYER, **common)
    threshold = (0.3 if pretrained else 0.0) if score_threshold is None else float(score_threshold)
    boxes = 20 if max_boxes is None else max_boxes
    if not 0.0 <= threshold <= 1.0:
        raise InvalidParameterError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
    if isinstance(boxes, bool) or not isinstance(boxes, int) or boxes < 1:
        raise InvalidParameterError(f"max_boxes must be an integer >= 1, got {max_boxes!r}")
    return detector_model(
        module,
        DETECTOR_LABELS,
        adapter=partial(decode, threshold=threshold, max_boxes=boxes),
        num_classes=len(DETECTOR_LABELS),
        max_boxes=boxes,
        default_layer=DETECTOR_LAYER,
        list_input=False,
        **common,
    )

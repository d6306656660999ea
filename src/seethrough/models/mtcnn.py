"""MTCNN, a trained face detector, through the detector adapter (``load_model("mtcnn")``).

MTCNN (Zhang et al., "Joint Face Detection and Alignment Using Multitask Cascaded Convolutional
Networks", IEEE SPL 2016) finds faces with a cascade of three small networks: P-Net proposes
windows over an image pyramid, R-Net and O-Net reject and refine them (each stage a threshold on
its face probability, then non-maximum suppression). The trained networks and the cascade come
from the ``facenet-pytorch`` package, an optional install: ``pip install --no-deps
facenet-pytorch`` (its declared pins of torch, numpy and Pillow are older than the ones
seethrough runs on; it runs on them, and needs nothing else). Its weight files are read as plain
tensors (``weights_only=True``).

How a box is explained. The cascade decides *where* the faces are; it runs without gradients
(its crops are integer slices and its thresholds are steps). Each box it keeps is then scored
again, differentiably: O-Net looks at the box's pixels, taken from the input by bilinear
sampling (:func:`torchvision.ops.roi_align` to O-Net's 48x48 input), and gives two logits
``(l_0, l_1)`` = ``(not face, face)``. The box's confidence is O-Net's face probability
``p = softmax(l)_1``, and its class scores are the log-odds of each class,
``(l_0 - l_1, l_1 - l_0)``: the face score ``log(p / (1 - p))`` is above ``logit(0.7) = 0.85``
for every box kept with the default threshold, so a face that a perturbation hides (its box no
longer found: score 0) counts as a drop, as it should. So

- the gradient methods reach the input's pixels through the crop (pixels outside every box get
  no gradient: O-Net never sees them);
- the perturbation methods run the whole cascade again on every perturbed image: a box that
  moves is re-matched by IoU (:class:`~seethrough.targets.Box`), one that disappears (a hidden
  face) scores 0;
- the CAM family's default layer, ``box_features``, is O-Net's last convolution (after its
  PReLU: 128 channels on a 3x3 grid over the box's crop) of every box of an image, laid out
  block-diagonally: box ``j``'s channels in channel block ``j`` and on tile ``j`` of a row of
  tiles, zeros elsewhere, ``(N, boxes * 128, 3, boxes * 3)``. A box's score depends only on its
  own block, so a gradient-weighted CAM of one box is that box's 3x3 map on its own tile (with
  one box per image the layout is O-Net's map itself); :meth:`MTCNNDetector.align_map` pastes
  each tile back onto its box in the image (bilinear over the box, 0 outside). Such a CAM says
  *which part of the face box* O-Net's face score rests on; it lies inside the box by
  construction. Methods that stretch a layer's channels over the whole input as masks
  (Score-CAM) do not fit this layout: their maps spread over the image. For evidence outside
  the box use the perturbation methods.

Boxes are in input pixels (the image at its own size, pixels in [0, 1]; clipped to the image),
highest confidence first; labels ``("not face", "face")``, every box of label 1.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.detection import Detections
from ..core.threads import torch_threads
from ..errors import InvalidParameterError, MissingDependencyError
from .detection import MAX_BOXES, DetectorRunner, _predict_detections
from .preprocessing import Preprocessing
from .vision_model import VisionModel

__all__ = [
    "NAME",
    "LABELS",
    "DEFAULT_LAYER",
    "PREPROCESSING",
    "THRESHOLDS",
    "INSTALL",
    "MTCNNDetector",
    "MTCNNRunner",
    "BoxFeatures",
    "mtcnn_adapter",
    "load_mtcnn",
    "require_facenet",
]

NAME = "mtcnn"
LABELS = ("not face", "face")
"""O-Net's two outputs; every box is a ``face`` (label 1)."""
DEFAULT_LAYER = "box_features"
PREPROCESSING = Preprocessing(resize="keep", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
"""The image at its own size, pixels in [0, 1] (the module scales them as MTCNN was trained)."""
THRESHOLDS = (0.6, 0.7, 0.7)
"""The face probability each stage (P-, R-, O-Net) needs to keep a window (MTCNN's defaults)."""
CROP = 48
"""O-Net's input size."""
INSTALL = "pip install --no-deps facenet-pytorch==2.6.0"
"""The one install command (``--no-deps``: facenet-pytorch's declared pins are too old)."""


def require_facenet() -> None:
    """Raise :class:`~seethrough.errors.MissingDependencyError` naming the pip command when
    ``facenet-pytorch`` is not installed."""
    if importlib.util.find_spec("facenet_pytorch") is None:
        raise MissingDependencyError(f"the MTCNN face detector needs facenet-pytorch: {INSTALL}")


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] as the MTCNN networks take them: ``(255 x - 127.5) / 128``."""
    return (x * 255.0 - 127.5) * 0.0078125


@dataclass(frozen=True)
class _Layout:
    """Where the boxes of the last forward lie: the input's size, each image's boxes in the
    order of their tiles in :class:`BoxFeatures`, and the size of one tile."""

    size: tuple[int, int]
    boxes: list[torch.Tensor]
    tile: tuple[int, int]

    @property
    def slots(self) -> int:
        return max((len(b) for b in self.boxes), default=0)


def _indices(counts: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The image and the slot of every box, image after image."""
    image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(list(counts)))
    slot = torch.cat([torch.arange(c) for c in counts])
    return image.to(device), slot.to(device)


class BoxFeatures(nn.Module):
    """Per-box feature maps ``(K, C, h, w)`` of a batch laid out per image, block-diagonally:
    ``(N, S * C, h, S * w)`` with ``S`` the most boxes of an image; box ``j`` of image ``n`` is
    channel block ``j`` on tile ``j`` (columns ``j w`` to ``(j + 1) w``), zeros elsewhere.

    :meth:`split` undoes it exactly: the layout only gives the CAM methods one map per image in
    which each box keeps its own channels and its own place.
    """

    def forward(self, features: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Lay out ``features`` (the boxes of every image, image after image)."""
        _, c, h, w = features.shape
        slots = max(counts)
        image, slot = _indices(counts, features.device)
        padded = features.new_zeros(len(counts), slots, c, h, w).index_put((image, slot), features)
        eye = torch.eye(slots, dtype=features.dtype, device=features.device)
        tiled = torch.einsum("njchw,jk->njchkw", padded, eye)
        return tiled.reshape(len(counts), slots * c, h, slots * w)

    @staticmethod
    def split(tiled: torch.Tensor, counts: Sequence[int], channels: int) -> torch.Tensor:
        """The features ``(K, C, h, w)`` back from their layout (the diagonal blocks)."""
        n, _, h, width = tiled.shape
        slots = max(counts)
        blocks = tiled.reshape(n, slots, channels, h, slots, width // slots)
        diagonal = torch.diagonal(blocks, dim1=1, dim2=4)  # (N, C, h, w, S)
        image, slot = _indices(counts, tiled.device)
        return diagonal.permute(0, 4, 1, 2, 3)[image, slot]


class MTCNNDetector(nn.Module):
    """The MTCNN cascade with a differentiable O-Net score per box (see the module's notes).

    ``forward(x)`` takes a batch ``(N, 3, H, W)`` of pixels in [0, 1] and returns per image a
    dict: ``boxes`` ``(K, 4)`` (corners in input pixels, without gradients) and ``logits``
    ``(K, 2)`` (O-Net's ``not face, face`` logits on the box's bilinear crop, differentiable in
    ``x``), highest face probability first.

    Args:
        pnet: facenet-pytorch's P-Net.
        rnet: its R-Net.
        onet: its O-Net.
        thresholds: each stage's least face probability (the last one is the score threshold).
        min_face_size: the smallest face the image pyramid looks for, in pixels.
        factor: the scale between two levels of the pyramid.
    """

    def __init__(
        self,
        pnet: nn.Module,
        rnet: nn.Module,
        onet: nn.Module,
        *,
        thresholds: Sequence[float] = THRESHOLDS,
        min_face_size: int = 20,
        factor: float = 0.709,
    ) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.box_features = BoxFeatures()
        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_face_size = min_face_size
        self.factor = factor
        self.layout: _Layout | None = None

    def cascade(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The boxes ``(K, 4)`` the cascade keeps in each image of ``x`` (clipped to the
        image), without gradients, on one torch thread."""
        from facenet_pytorch.models.utils.detect_face import detect_face

        height, width = x.shape[-2:]
        # one thread: the cascade is hundreds of tiny crops and resizes, each of which costs
        # more to split across threads than to run (10 to 20 times the time on 2 busy cores)
        with torch.no_grad(), torch_threads(1):
            pixels = (x.detach().float() * 255.0).permute(0, 2, 3, 1)
            found, _ = detect_face(
                pixels,
                self.min_face_size,
                self.pnet,
                self.rnet,
                self.onet,
                list(self.thresholds),
                self.factor,
                x.device,
            )
        out = []
        for rows in found:
            boxes = torch.as_tensor(rows[:, :4].astype("float64") if len(rows) else [])
            boxes = boxes.reshape(-1, 4).to(x.device, x.dtype)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            out.append(boxes)
        return out

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The boxes of each image and their O-Net logits (see the class)."""
        from torchvision.ops import roi_align

        boxes = self.cascade(x)
        counts = [len(b) for b in boxes]
        self.layout = None
        if not sum(counts):
            # no face: empty logits that still hang on the input's graph, so that a backward
            # through an image without faces (an integrated-gradients baseline) gives zeros
            empty = x.reshape(-1)[:0].reshape(0, 1).expand(0, len(LABELS))
            return [{"boxes": b, "logits": empty} for b in boxes]
        crops = roi_align(_scaled(x), boxes, CROP, spatial_scale=1.0, aligned=True)
        features = self._features(crops)
        self.layout = _Layout(tuple(x.shape[-2:]), boxes, tuple(features.shape[-2:]))  # type: ignore[arg-type]
        features = BoxFeatures.split(self.box_features(features, counts), counts, features.shape[1])
        out = []
        for b, logits in zip(boxes, self._logits(features).split(counts), strict=True):
            order = (logits[:, 1] - logits[:, 0]).detach().argsort(descending=True)
            out.append({"boxes": b[order], "logits": logits[order]})
        return out

    def _features(self, crops: torch.Tensor) -> torch.Tensor:
        """O-Net's last convolution (after its PReLU) on the crops ``(K, 3, 48, 48)``."""
        net = self.onet
        y = net.pool1(net.prelu1(net.conv1(crops)))
        y = net.pool2(net.prelu2(net.conv2(y)))
        y = net.pool3(net.prelu3(net.conv3(y)))
        return net.prelu4(net.conv4(y))

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        """O-Net's ``(not face, face)`` logits from its last convolution's maps (O-Net reads
        them transposed, ``(w, h, C)`` order, as the weights were converted)."""
        net = self.onet
        flat = features.permute(0, 3, 2, 1).reshape(features.shape[0], -1)
        return net.dense6_1(net.prelu5(net.dense5(flat)))

    def align_map(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, h, S w)`` over the layout of :attr:`box_features` (of the last forward)
        as maps over the input ``(N, H, W)``: tile ``j`` is pasted onto box ``j``, the input's
        pixel centre ``(y + 1/2, x + 1/2)`` inside the box ``(x0, y0, x1, y1)`` sampling the
        tile at ``((y + 1/2 - y0) / (y1 - y0), (x + 1/2 - x0) / (x1 - x0))`` of its height and
        width (bilinear); pixels outside every box are 0 (where boxes overlap, their tiles
        add). Other maps (at the input's size, or of another layer) pass unchanged."""
        layout = self.layout
        if layout is None or maps.dim() != 3:
            return maps
        h, w = layout.tile
        if tuple(maps.shape[1:]) != (h, w * layout.slots) or maps.shape[0] != len(layout.boxes):
            return maps
        height, width = layout.size
        out = maps.new_zeros(maps.shape[0], height, width)
        ys = torch.arange(height, dtype=maps.dtype, device=maps.device) + 0.5
        xs = torch.arange(width, dtype=maps.dtype, device=maps.device) + 0.5
        for n, boxes in enumerate(layout.boxes):
            for j, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
                v = (ys - y0) / max(y1 - y0, 1e-6)
                u = (xs - x0) / max(x1 - x0, 1e-6)
                inside = ((v >= 0) & (v <= 1))[:, None] & ((u >= 0) & (u <= 1))[None]
                grid = torch.stack(torch.meshgrid(u * 2 - 1, v * 2 - 1, indexing="xy"), -1)
                tile = maps[n, :, j * w : (j + 1) * w]
                pasted = F.grid_sample(
                    tile[None, None],
                    grid[None],
                    mode="bilinear",
                    padding_mode="border",
                    align_corners=False,
                )[0, 0]
                out[n] += torch.where(inside, pasted, torch.zeros_like(pasted))
        return out


class MTCNNRunner(DetectorRunner):
    """The detector runner of :class:`MTCNNDetector`: a layer's maps over the boxes' tiles
    are pasted back onto the boxes (:meth:`MTCNNDetector.align_map`)."""

    kind = "the MTCNN face detector"

    def align_map(self, maps: torch.Tensor) -> torch.Tensor:
        """See :meth:`MTCNNDetector.align_map`."""
        return self.module.align_map(maps)  # type: ignore[operator]


def mtcnn_adapter(raw: object) -> list[Detections]:
    """:class:`MTCNNDetector`'s output as :class:`~seethrough.core.detection.Detections`:
    label 1 (``face``) for every box, confidence ``softmax(l)_1``, class scores the log-odds
    ``(l_0 - l_1, l_1 - l_0)`` of O-Net's logits ``l``."""
    out = []
    for image in raw:  # type: ignore[attr-defined]
        logits = image["logits"]
        odds = logits - logits.flip(-1)
        labels = torch.ones(len(logits), dtype=torch.long, device=logits.device)
        out.append(Detections(image["boxes"], labels, logits.softmax(-1)[:, 1], odds))
    return out


def _networks(pretrained: bool) -> tuple[nn.Module, nn.Module, nn.Module]:
    """facenet-pytorch's P-, R- and O-Net, with the weights its package ships (read as plain
    tensors) or random ones."""
    from importlib.resources import files

    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    nets = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls(pretrained=False)
        if pretrained:
            with (files("facenet_pytorch") / "data" / f"{name}.pt").open("rb") as fp:
                net.load_state_dict(torch.load(fp, map_location="cpu", weights_only=True))
        nets.append(net.eval())
    return nets[0], nets[1], nets[2]


def load_mtcnn(
    *,
    pretrained: bool = True,
    score_threshold: float | None = None,
    max_boxes: int | None = None,
) -> VisionModel:
    """MTCNN as a detector :class:`~seethrough.models.VisionModel` (``task="detection"``).

    Args:
        pretrained: the trained weights facenet-pytorch ships (``False``: random weights,
            which find no faces; for tests of the plumbing only).
        score_threshold: O-Net's least face probability, the cascade's last threshold (default
            0.7, MTCNN's).
        max_boxes: faces kept per image (default 100).

    Raises:
        MissingDependencyError: facenet-pytorch is not installed (the message names the
            install command).
        InvalidParameterError: a score threshold outside [0, 1] or ``max_boxes < 1``.
    """
    threshold = THRESHOLDS[2] if score_threshold is None else float(score_threshold)
    boxes = MAX_BOXES if max_boxes is None else max_boxes
    if not 0.0 <= threshold <= 1.0:
        raise InvalidParameterError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
    if isinstance(boxes, bool) or not isinstance(boxes, int) or boxes < 1:
        raise InvalidParameterError(f"max_boxes must be an integer >= 1, got {max_boxes!r}")
    require_facenet()
    module = MTCNNDetector(*_networks(pretrained), thresholds=(*THRESHOLDS[:2], threshold))
    module.eval()
    return VisionModel(
        module,
        PREPROCESSING,
        list(LABELS),
        name=NAME,
        source="faces",
        weights="facenet-pytorch MTCNN (trained)" if pretrained else "none (random)",
        default_layer=DEFAULT_LAYER,
        task="detection",
        runner=lambda: MTCNNRunner(
            module, mtcnn_adapter, max_boxes=boxes, num_classes=len(LABELS), list_input=False
        ),
        predictor=_predict_detections,
    )

"""Detectors and segmenters: torchvision's, or any module with an output adapter.

A detector is run by a :class:`DetectorRunner`: ``forward(x)`` runs the module on the images of
``x`` (as a list, the way torchvision's detectors take them), turns its raw output into one
:class:`~seethrough.core.detection.Detections` per image with the model's *adapter*, and packs
them into one tensor ``(N, max_boxes, 7 + C)`` (:func:`~seethrough.core.detection.pack`), which
:class:`~seethrough.targets.Box` targets score. Any detector plugs in the same way::

    def adapt(raw) -> list[Detections]:          # the module's output on a batch
        ...                                       # boxes xyxy in input pixels, labels, scores
    model = detector_model(module, labels, adapter=adapt)

A segmenter is run by a :class:`SegmenterRunner`: its output is the class logits
``(N, C, H, W)`` at the input's size (torchvision's ``"out"`` entry), which
:class:`~seethrough.targets.Mask` targets score.

Layers: both runners accept ``"name:key"`` for a module that returns a dict of feature maps (a
feature pyramid, torchvision's backbones): ``"backbone.fpn:0"`` is level ``"0"`` of the FPN.
:meth:`KeyedLayersRunner.spatial_layers` lists them.

Map alignment (detectors): torchvision's detectors resize the images inside (to ``min_size``)
and pad the batch to a multiple of 32; a layer's map covers that padded batch. The runner
records the resized size and the padded size of each forward, and maps a layer's map back to
the input: the part that covers the resized image is sampled bilinearly onto the input's pixel
grid (the padding is cropped), so a map lines up with the image (:meth:`DetectorRunner.align_map`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.detection import Detections, DetectorAdapter, pack, unpack
from ..core.hooks import Recorder
from ..core.layers import LayerRef, finishing_order
from ..core.runner import TorchRunner
from ..errors import InvalidParameterError, MethodNotApplicableError, UnknownLayerError, suggest
from ..targets import Box, Mask
from ._common import download_errors
from .preprocessing import Preprocessing
from .vision_model import VisionModel, prepare_inputs

__all__ = [
    "BoxPrediction",
    "MaskPrediction",
    "DetectorRunner",
    "SegmenterRunner",
    "KeyedLayersRunner",
    "TorchvisionAdapter",
    "torchvision_adapter",
    "detector_model",
    "segmenter_model",
    "detector_names",
    "segmenter_names",
    "SCORE_THRESHOLD",
    "RANDOM_SCORE_THRESHOLD",
    "MAX_BOXES",
]

SCORE_THRESHOLD = 0.05
"""Boxes below this confidence are dropped, with pretrained weights (torchvision's own default
for its R-CNNs and RetinaNet)."""
RANDOM_SCORE_THRESHOLD = 0.0
"""The score threshold with random weights: such a detector scores every class near ``1 / C``
(0.011 for COCO's 91 classes through a softmax, 0.01 for RetinaNet's prior), below 0.05, and
would find no box; with 0 it keeps its ``max_boxes`` best, so tests and demos have boxes."""
MAX_BOXES = 100
"""Boxes kept per image (torchvision's default)."""


class BoxPrediction(NamedTuple):
    """One box of a detector's prediction: corners in image pixels, class name, confidence."""

    box: tuple[float, float, float, float]
    label: str
    score: float


class MaskPrediction(NamedTuple):
    """A segmenter's prediction: the class of each pixel, and the classes present.

    Attributes:
        classes: ``(H, W)`` integer class map at the model input's size.
        present: ``(label, fraction of the pixels)`` of each predicted class, most first.
    """

    classes: np.ndarray
    present: list[tuple[str, float]]


# ------------------------------------------------------------------------------ keyed layers


def _split(name: str) -> tuple[str, str | None]:
    module, colon, key = name.partition(":")
    return module, key if colon else None


class _KeyedRecorder(Recorder):
    """A recorder whose ``"name:key"`` entries pick one map of a module's dict output."""

    def __init__(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> None:
        super().__init__(modules, inputs=inputs)

    def _output_hook(self, name: str):  # noqa: ANN202 - hook signature is torch's
        _, key = _split(name)
        if key is None:
            return super()._output_hook(name)

        def hook(module: nn.Module, args: tuple, output: object) -> object:
            if not isinstance(output, Mapping) or key not in output:
                keys = list(output) if isinstance(output, Mapping) else []
                raise MethodNotApplicableError(
                    f"layer '{name}': the module returns {type(output).__name__}"
                    + (f" with keys {', '.join(map(str, keys))}" if keys else ", not a dict")
                )
            self.outputs[name] = output[key]
            changed = type(output)(output) if isinstance(output, dict) else dict(output)
            changed[key] = output[key].clone()
            return changed

        return hook


def _starts_graph(output: object) -> object | None:
    """``output`` detached and made to require gradients (a tensor, or every floating tensor
    of a dict), or ``None`` to leave it."""
    if isinstance(output, torch.Tensor):
        return output.detach().requires_grad_() if output.is_floating_point() else None
    if isinstance(output, dict):
        changed = type(output)(output)
        for k, v in output.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                changed[k] = v.detach().requires_grad_()
        return changed
    return None


class KeyedLayersRunner(TorchRunner):
    """A :class:`~seethrough.core.runner.TorchRunner` whose layers may be one entry of a
    module's dict output, named ``"module.name:key"`` (a feature pyramid's level)."""

    def resolve_layer(
        self, layer: LayerRef, example: torch.Tensor | None = None, default: str | None = None
    ) -> tuple[str, nn.Module]:
        """``(name, module)``; for ``"name:key"`` the module that returns the dict."""
        if layer is None:
            layer = default
        if isinstance(layer, str) and ":" in layer:
            module_name, key = _split(layer)
            _, module = super().resolve_layer(module_name, example, default)
            if example is not None:
                keys = [
                    n for n, _ in self.spatial_layers(example) if n.startswith(module_name + ":")
                ]
                if keys and layer not in keys:
                    raise UnknownLayerError(
                        f"no layer named '{layer}' in this model.{suggest(layer, keys)} "
                        f"Its levels: {', '.join(keys)}."
                    )
            return layer, module
        return super().resolve_layer(layer, example, default)

    def record(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> Recorder:
        """A recorder that also picks ``"name:key"`` entries of dict outputs."""
        return _KeyedRecorder(modules, inputs=inputs)

    def graph_from(self, layer: nn.Module | None) -> AbstractContextManager[None]:
        """The graph starts at ``layer``'s output, every map of it for a dict output."""
        return _graph_from(layer)

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """Layers with an ``(N, C, H, W)`` output, and ``"name:key"`` for each such map of a
        dict output, in the order they finish during a forward of ``example``."""

        def maps(name: str, module: nn.Module, output: object) -> list[tuple[str, tuple[int, ...]]]:
            items = output.items() if isinstance(output, Mapping) else [(None, output)]
            return [
                (name if key is None else f"{name}:{key}", tuple(value.shape))
                for key, value in items
                if isinstance(value, torch.Tensor)
                and value.dim() == 4
                and value.shape[0] == 1
                and value.shape[2] * value.shape[3] > 1
            ]

        def run() -> None:
            with self.protected(parameters=False), torch.no_grad():
                self.forward(example[:1].to(self.device, self.dtype))

        return finishing_order(((n, m) for n, m in self.named_modules.items() if n), run, maps)


@contextmanager
def _graph_from(module: nn.Module | None) -> Iterator[None]:
    if module is None:
        yield
        return
    handle = module.register_forward_hook(lambda m, a, out: _starts_graph(out), prepend=True)
    try:
        yield
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------- adapters


class TorchvisionAdapter:
    """The adapter of torchvision's detectors: their eval output, a list of dicts with
    ``boxes``, ``labels`` and ``scores``, to :class:`~seethrough.core.detection.Detections`.

    Class scores: for the R-CNNs (Faster, Mask, Keypoint R-CNN), whose box predictor gives
    class logits per proposal, each kept box gets the logits of the proposal it was decoded
    from: within :meth:`capturing`, the proposals per image and the box predictor's logits are
    recorded, and a kept box of label ``l`` and score ``s`` comes from the proposal whose
    ``softmax(logits)[l]`` equals ``s`` (torchvision scores a box so). A :class:`~seethrough.targets.Box`
    then explains the logit of its label. RetinaNet, FCOS and SSD keep no per-box class scores
    through their post-processing: ``class_scores`` is ``None`` and a box is explained by its
    confidence (sigmoid or softmax score).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        heads = getattr(module, "roi_heads", None)
        self.predictor = getattr(heads, "box_predictor", None)
        self.num_classes = (
            int(self.predictor.cls_score.out_features)
            if self.predictor is not None and hasattr(self.predictor, "cls_score")
            else 0
        )
        self._counts: list[int] | None = None
        self._logits: torch.Tensor | None = None

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """A block in which a forward's proposals and class logits are recorded (R-CNNs)."""
        if not self.num_classes:
            yield
            return
        heads = self.module.roi_heads  # type: ignore[union-attr]

        def proposals(module: nn.Module, args: tuple) -> None:
            self._counts = [len(p) for p in args[1]]

        def logits(module: nn.Module, args: tuple, output: tuple) -> None:
            self._logits = output[0]

        handles = [
            heads.register_forward_pre_hook(proposals),
            self.predictor.register_forward_hook(logits),  # type: ignore[union-attr]
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def __call__(self, raw: object) -> list[Detections]:
        """One :class:`Detections` per image of torchvision's output."""
        if not isinstance(raw, (list, tuple)) or not all(isinstance(d, Mapping) for d in raw):
            raise MethodNotApplicableError(
                f"a torchvision detector returns a list of dicts in eval mode, got {type(raw).__name__}"
            )
        dets = [Detections(d["boxes"], d["labels"], d["scores"]) for d in raw]
        if self.num_classes and self._logits is not None and self._counts is not None:
            parts = torch.split(self._logits, self._counts)
            for det, logits in zip(dets, parts, strict=True):
                det.class_scores = _proposal_logits(det, logits)
            self._logits = self._counts = None
        return dets


def _proposal_logits(det: Detections, logits: torch.Tensor) -> torch.Tensor:
    """The logits ``(K, C)`` of the proposal each kept box comes from (see
    :class:`TorchvisionAdapter`)."""
    if len(det) == 0 or logits.shape[0] == 0:
        return logits.new_zeros(len(det), logits.shape[1])
    probs = logits.detach().softmax(-1)[:, det.labels]  # (P, K)
    source = (probs - det.scores.detach()[None]).abs().argmin(dim=0)
    return logits[source]


def torchvision_adapter(raw: object) -> list[Detections]:
    """torchvision's detector output (a list of dicts ``boxes``, ``labels``, ``scores``) as
    :class:`~seethrough.core.detection.Detections`, without class scores (see
    :class:`TorchvisionAdapter` for the R-CNNs' logits)."""
    return TorchvisionAdapter(nn.Module())(raw)


# ----------------------------------------------------------------------------------- runners


class DetectorRunner(KeyedLayersRunner):
    """A detector: ``forward(x)`` = :func:`~seethrough.core.detection.pack` of the adapter's
    detections of ``module(list(x))``, ``(N, max_boxes, 7 + C)``; without a target it explains
    the top box (``Box(index=0)``), for a class the top box of that class."""

    kind = "a PyTorch detector"
    default_target = Box(index=0)

    def __init__(
        self,
        module: nn.Module,
        adapter: DetectorAdapter,
        *,
        max_boxes: int = MAX_BOXES,
        num_classes: int = 0,
        list_input: bool = True,
    ) -> None:
        """Run ``module`` (given a list of images when ``list_input``), read by ``adapter``;
        ``num_classes``: the width of the adapter's class scores (0: none)."""
        super().__init__(module)
        self.adapter = adapter
        self.max_boxes = max_boxes
        self.num_classes = num_classes
        self.list_input = list_input
        self.geometry: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None

    def class_target(self, index: int) -> object | None:
        """The top box of class ``index``."""
        return Box(label=index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The packed detections of ``x``."""
        transform = getattr(self.module, "transform", None)
        capturing = getattr(self.adapter, "capturing", None)
        handles = []
        if isinstance(transform, nn.Module):

            def geometry(module: nn.Module, args: tuple, output: tuple) -> None:
                images = output[0]
                self.geometry = (
                    tuple(images.image_sizes[0]),
                    tuple(images.tensors.shape[-2:]),
                    tuple(x.shape[-2:]),
                )

            handles.append(transform.register_forward_hook(geometry))
        try:
            with capturing() if capturing is not None else nullcontext():
                raw = self.module(list(x) if self.list_input else x)
        finally:
            for h in handles:
                h.remove()
        return pack(
            self.adapter(raw), self.max_boxes, self.num_classes, dtype=x.dtype, device=x.device
        )

    @contextmanager
    def many_inputs(self, x: torch.Tensor, inputs: int) -> Iterator[None]:
        """No layout switch: a detector's inputs are resized inside."""
        yield

    def align_map(self, maps: torch.Tensor) -> torch.Tensor:
        """A layer's maps ``(N, h, w)`` over the padded, resized batch, as maps over the input
        ``(N, H, W)``: the input's pixel ``(i, j)`` samples the map at the point of the resized
        image it became, ``((i + 1/2) * hr / H, (j + 1/2) * wr / W)`` in pixels of the padded
        batch ``(Hp, Wp)`` (bilinear, the padding left out). Maps at the input's size (of
        gradient and perturbation methods), and maps of a module without a transform, pass."""
        if self.geometry is None or maps.dim() != 3:
            return maps
        (hr, wr), (hp, wp), (h, w) = self.geometry
        if tuple(maps.shape[-2:]) == (h, w):
            return maps
        ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h * (hr / hp) * 2 - 1
        xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w * (wr / wp) * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        grid = grid.to(maps.device, maps.dtype)[None].expand(maps.shape[0], -1, -1, -1)
        out = F.grid_sample(
            maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out[:, 0]


class SegmenterRunner(KeyedLayersRunner):
    """A segmenter: ``forward(x)`` = its class logits ``(N, C, H, W)`` at the input's size (the
    ``"out"`` entry of torchvision's output dict); without a target it explains the most
    frequent predicted class other than the background (``Mask()``), for a class its predicted
    mask."""

    kind = "a PyTorch segmenter"

    def __init__(self, module: nn.Module, background: int | None = 0) -> None:
        """Run ``module``; ``background``: the class a default target leaves out."""
        super().__init__(module)
        self.background = background
        self.default_target = Mask(background=background)

    def class_target(self, index: int) -> object | None:
        """The predicted mask of class ``index``."""
        return Mask(index, background=self.background)


# ------------------------------------------------------------------------------- predictions


def _one_at_a_time(predict: Callable[..., Any]) -> Callable[..., Any]:
    """``predict`` for a list of raw images one image per call: a detector or segmenter that
    keeps each image's own size cannot stack images of different sizes into one batch."""

    @functools.wraps(predict)
    def each(model: VisionModel, images: object, k: int | None = None) -> Any:
        if isinstance(images, (list, tuple)) and not all(
            isinstance(i, torch.Tensor) for i in images
        ):
            return [predict(model, image, k) for image in images]
        return predict(model, images, k)

    return each


def _outputs(model: VisionModel, images: object) -> tuple[Any, bool]:
    """The model's outputs on ``images`` (preprocessed, its state left as it was), and whether
    ``images`` was one image."""
    batch, _, single = prepare_inputs(model, images, display=False)
    runner = model.make_runner()
    with runner.protected(parameters=False):
        return runner.outputs(batch.to(model.device)), single


@_one_at_a_time
def _predict_detections(model: VisionModel, images: object, k: int | None = None) -> Any:
    packed, single = _outputs(model, images)
    results = [
        [
            BoxPrediction(
                tuple(float(v) for v in box.tolist()),  # type: ignore[arg-type]
                model.label(int(label)),
                float(score),
            )
            for box, label, score in zip(det.boxes, det.labels, det.scores, strict=True)
        ][:k]
        for det in unpack(packed)
    ]
    return results[0] if single else results


@_one_at_a_time
def _predict_masks(model: VisionModel, images: object, k: int | None = None) -> Any:
    logits, single = _outputs(model, images)
    results = []
    for classes in logits.argmax(dim=1).cpu().numpy():
        counts = np.bincount(classes.ravel(), minlength=logits.shape[1])
        order = np.argsort(-counts, kind="stable")
        present = [
            (model.label(int(c)), float(counts[c] / classes.size)) for c in order if counts[c]
        ]
        results.append(MaskPrediction(classes.astype(np.int64), present[:k]))
    return results[0] if single else results


# ------------------------------------------------------------------------------------ models


def detector_model(
    module: nn.Module,
    labels: Sequence[str],
    *,
    adapter: DetectorAdapter | None = None,
    num_classes: int = 0,
    preprocessing: Preprocessing | None = None,
    max_boxes: int = MAX_BOXES,
    name: str | None = None,
    source: str = "custom",
    weights: str = "custom",
    default_layer: str | None = None,
    list_input: bool = True,
) -> VisionModel:
    """A detector as a :class:`~seethrough.models.VisionModel` (``task="detection"``).

    Args:
        module: the network; in eval mode it returns boxes (after its own NMS).
        labels: class names by index.
        adapter: raw output -> one :class:`~seethrough.core.detection.Detections` per image
            (default: :class:`TorchvisionAdapter`).
        num_classes: the width of the adapter's class scores (0: none; the default adapter
            sets it for the R-CNNs).
        preprocessing: default: pixels in [0, 1] at the image's own size.
        max_boxes: boxes kept per image.
        name: the model's name (default: the module's class name).
        source: where the model comes from (``"torchvision"``, ``"custom"``).
        weights: a description of its weights.
        default_layer: the layer CAM-style methods use when none is given.
        list_input: the module takes a list of ``(3, H, W)`` images (torchvision), else a batch.
    """
    if adapter is None:
        adapter = TorchvisionAdapter(module)
        num_classes = adapter.num_classes
    pre = preprocessing or Preprocessing(resize="keep", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return VisionModel(
        module,
        pre,
        labels,
        name=name or type(module).__name__,
        source=source,
        weights=weights,
        default_layer=default_layer,
        task="detection",
        runner=lambda: DetectorRunner(
            module, adapter, max_boxes=max_boxes, num_classes=num_classes, list_input=list_input
        ),
        predictor=_predict_detections,
    )


def segmenter_model(
    module: nn.Module,
    labels: Sequence[str],
    *,
    preprocessing: Preprocessing | None = None,
    background: int | None = 0,
    name: str | None = None,
    source: str = "custom",
    weights: str = "custom",
    default_layer: str | None = None,
) -> VisionModel:
    """A segmenter as a :class:`~seethrough.models.VisionModel` (``task="segmentation"``):
    ``module`` returns class logits ``(N, C, H, W)`` at the input's size (or a dict with them as
    ``"out"``); ``background`` is the class a default target leaves out."""
    return VisionModel(
        module,
        preprocessing or Preprocessing(size=520),
        labels,
        name=name or type(module).__name__,
        source=source,
        weights=weights,
        default_layer=default_layer,
        task="segmentation",
        runner=lambda: SegmenterRunner(module, background),
        predictor=_predict_masks,
    )


# ---------------------------------------------------------------------------- torchvision zoo


def detector_names() -> list[str]:
    """torchvision's detectors (``torchvision.models.detection``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def segmenter_names() -> list[str]:
    """torchvision's segmenters (``torchvision.models.segmentation``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def _categories(arch: str) -> list[str]:
    """The class names of ``arch``'s weights, shipped in torchvision (no download)."""
    import torchvision

    return list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])


def _default_layer(module: nn.Module, arch: str) -> str | None:
    """The last feature map every prediction depends on: the last layer a backbone returns
    (before the feature pyramid), or SSD's shared features."""
    backbone = getattr(module, "backbone", None)
    getter = getattr(backbone, "body", backbone)
    prefix = "backbone.body" if getter is not backbone else "backbone"
    layers = getattr(getter, "return_layers", None)
    if isinstance(layers, Mapping) and layers:
        return f"{prefix}.{list(layers)[-1]}"
    if arch.startswith("ssdlite"):
        return "backbone.features.0"
    if arch.startswith("ssd"):
        return "backbone.features"
    return None


def _configure(module: nn.Module, score_threshold: float, max_boxes: int) -> None:
    """Set the detector's score threshold and boxes per image, wherever it keeps them."""
    owner = getattr(module, "roi_heads", module)
    if not hasattr(owner, "score_thresh"):
        raise InvalidParameterError(f"{type(module).__name__} has no score threshold to set")
    owner.score_thresh = score_threshold
    owner.detections_per_img = max_boxes


def load_torchvision(
    arch: str,
    *,
    pretrained: bool,
    score_threshold: float | None = None,
    max_boxes: int | None = None,
    trained: bool | None = None,
) -> VisionModel:
    """A torchvision detector or segmenter, with random weights (``weights=None,
    weights_backbone=None``: offline) or its default pretrained weights (downloaded).

    ``score_threshold`` defaults to :data:`SCORE_THRESHOLD` (0.05) with trained weights and
    :data:`RANDOM_SCORE_THRESHOLD` (0) with random ones; ``max_boxes`` to 100. ``trained``
    (default: ``pretrained``) says the weights will be trained ones: ``load_model(arch,
    weights=PATH)`` builds the random network, sets the trained threshold and loads the file.

    Detectors take pixels in [0, 1] at the image's own size (their transform normalises and
    resizes inside); segmenters ImageNet mean/std at 520x520. Labels: COCO's 91 (with
    ``"N/A"`` gaps) for the detectors (Keypoint R-CNN: person or not), the 21 VOC classes for
    the segmenters.

    Raises:
        WeightsUnavailableError: pretrained weights cannot be downloaded.
        InvalidParameterError: a score threshold outside [0, 1] or ``max_boxes < 1``.
    """
    import torchvision

    default = (
        SCORE_THRESHOLD if (pretrained if trained is None else trained) else RANDOM_SCORE_THRESHOLD
    )
    threshold = default if score_threshold is None else float(score_threshold)
    boxes = MAX_BOXES if max_boxes is None else max_boxes
    if not 0.0 <= threshold <= 1.0:
        raise InvalidParameterError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
    if isinstance(boxes, bool) or not isinstance(boxes, int) or boxes < 1:
        raise InvalidParameterError(f"max_boxes must be an integer >= 1, got {max_boxes!r}")
    if pretrained:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        with download_errors(arch):
            module = torchvision.models.get_model(arch, weights=weights, progress=False)
        description = f"torchvision {weights}"
    else:
        module = torchvision.models.get_model(arch, weights=None, weights_backbone=None)
        description = "none (random)"
    module.eval()
    labels = _categories(arch)
    if arch in segmenter_names():
        if score_threshold is not None or max_boxes is not None:
            raise InvalidParameterError("score_threshold and max_boxes apply to detectors only")
        return segmenter_model(
            module,
            labels,
            name=arch,
            source="torchvision",
            weights=description,
            default_layer=_default_layer(module, arch),
        )
    _configure(module, threshold, boxes)
    return detector_model(
        module,
        labels,
        max_boxes=boxes,
        name=arch,
        source="torchvision",
        weights=description,
        default_layer=_default_layer(module, arch),
    )

"""Run methods on images with ground truth and score each map with the metrics.

:func:`evaluate` explains every sample with every method on every model, scores each map with
the chosen metrics (localisation against the mask, faithfulness by deletion and insertion),
scores the two baselines (a random map and a centre Gaussian) the same way, and returns an
:class:`Evaluation`: one :class:`Record` per (model, method, sample) and a summary per (model,
method) with means and 95% confidence intervals.

Detectors and segmenters are evaluated per object against the ground truth (``truth``):

- a segmenter per class present in an image (:func:`~seethrough.evaluation.data.class_masks`):
  the target is ``Mask(class)`` (the class's predicted mask; its ground-truth pixels where the
  model predicts none of it), and the map is scored against the class's ground-truth mask;
- a detector per object (:func:`~seethrough.evaluation.data.objects`): the target is
  ``Box(xyxy=ground-truth box, label=class)``, which binds to the predicted box of that class
  that overlaps it with IoU >= 0.5; the map is scored against the object's pixels (its
  instance mask, or its connected region of the class mask), the pointing game and the energy
  inside them. An object no predicted box matches is not explained: the share of objects
  explained is the ``found`` column (a detector's recall at IoU 0.5).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import stats

from ..api import explain
from ..describe import describe
from ..errors import (
    InvalidParameterError,
    InvalidTargetError,
    SeethroughError,
    UnknownClassError,
)
from ..explanation import Explanation
from ..metrics import (
    average_drop,
    centre_gaussian,
    deletion,
    energy_pointing_game,
    hide_top,
    increase_in_confidence,
    insertion,
    iou,
    iou_sweep,
    pointing_game,
    random_map,
)
from ..metrics.base import ModelProbe, class_logits
from ..models import VisionModel
from ..registry import get_method, get_metric
from ..targets import Box, BoxScore, Mask
from .data import GroundTruth, Sample, class_masks, objects

__all__ = [
    "Scores",
    "Record",
    "Summary",
    "Evaluation",
    "evaluate",
    "METRICS",
    "DEFAULT_METRICS",
    "BASELINES",
    "TRUTHS",
]

METRICS = (
    "iou",
    "iou_sweep",
    "pointing_game",
    "energy_pointing_game",
    "deletion",
    "insertion",
    "average_drop",
    "increase_in_confidence",
    "hide_top",
)
"""The metrics :func:`evaluate` can compute per map, in table order."""
DEFAULT_METRICS = METRICS[:6]
"""What :func:`evaluate` computes unless told otherwise (the last three cost one forward each)."""
TRUTHS = ("auto", "image", "masks", "boxes")
"""What a map is scored against: ``"image"``, a classifier's class against the object's mask;
``"masks"``, a segmenter's class masks; ``"boxes"``, a detector's objects; ``"auto"``: by the
model's task."""
_TASK_TRUTH = {"classification": "image", "segmentation": "masks", "detection": "boxes"}
_WHAT = {"image": "a class of the whole image", "masks": "class masks", "boxes": "boxes"}
VOC_TO_COCO = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}
"""VOC class names as COCO names them (a COCO detector on VOC data)."""
BASELINES = ("random", "centre")
"""Baseline rows: ``baseline:random`` and ``baseline:centre``."""
_THUMB = 96


@dataclass(kw_only=True)
class Scores:
    """One number per metric of :data:`METRICS` (NaN when not computed)."""

    iou: float = math.nan
    iou_sweep: float = math.nan
    pointing_game: float = math.nan
    energy_pointing_game: float = math.nan
    deletion: float = math.nan
    insertion: float = math.nan
    average_drop: float = math.nan
    increase_in_confidence: float = math.nan
    hide_top: float = math.nan


@dataclass
class Record(Scores):
    """The scores of one map: one model, one method (or baseline), one sample.

    ``truth`` is the sample's label as a class of this model (``None`` without a label, or when
    the model has no such class); ``hide_top`` is 1 when hiding the 10% most salient pixels
    changes the top-1 class; ``error`` holds the one-line reason when the method could not run.
    """

    model: str
    method: str
    sample: str
    target: int | None = None
    target_label: str | None = None
    predicted: int | None = None
    predicted_label: str | None = None
    truth: int | None = None
    probability: float = math.nan
    seconds: float = math.nan
    error: str | None = None


@dataclass
class Summary(Scores):
    """Means over the samples of one (model, method) pair.

    ``iou_ci`` is the half-width of the 95% confidence interval of the mean IoU (Student t);
    ``iou_sweep`` the mean over images of the IoU averaged over thresholds 0.05 ... 0.95 (a
    threshold-free IoU); ``hide_top`` the share of images whose top-1 class changes when the
    10% most salient pixels are hidden; ``top1`` the share of images whose top-1 class is the
    ground-truth label (over the images whose label is a class of the model) or, for a model
    without such images, the class name most of the compared models predict. For a detector or
    a segmenter ``n`` counts objects or classes explained (not images), and ``found`` is the
    share of the ground-truth objects (classes) that could be explained: a detector's recall
    at IoU 0.5.
    """

    model: str
    method: str
    n: int
    iou_ci: float = math.nan
    top1: float = math.nan
    found: float = math.nan
    seconds: float = math.nan
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for CSV and JSON."""
        return asdict(self)


@dataclass
class Case:
    """A thumbnail of one map for the report: the best or the worst case of a (model, method)."""

    sample: str
    score: float
    overlay: np.ndarray
    caption: str
    text: str = ""
    """The map's description (:func:`seethrough.describe.describe`, with the share inside the
    ground-truth mask)."""


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measured."""

    records: list[Record]
    metrics: tuple[str, ...]
    models: tuple[str, ...]
    methods: tuple[str, ...]
    best: dict[tuple[str, str], Case] = field(default_factory=dict)
    worst: dict[tuple[str, str], Case] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[Summary]:
        """One row per (model, method), baselines after the methods of each model."""
        groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
        for r in self.records:
            groups[(r.model, r.method)].append(r)
        agree = self._top1()
        rows = []
        for (model, method), records in groups.items():
            ok = [r for r in records if r.error is None]
            row = Summary(model, method, len(ok))
            if any(r.predicted is None for r in records):  # objects or classes, not images
                row.found = len(ok) / len(records)
            if not ok:
                row.error = records[0].error
                rows.append(row)
                continue
            for name in self.metrics:
                setattr(row, name, _mean([getattr(r, name) for r in ok]))
            row.iou_ci = _ci([r.iou for r in ok])
            row.seconds = _mean([r.seconds for r in ok])
            row.top1 = agree.get(model, math.nan)
            rows.append(row)
        return rows

    def _top1(self) -> dict[str, float]:
        """Per model: accuracy on the samples whose label is one of its classes; for a model
        with no such sample, agreement with the class (by name) most of the models predict."""
        seen: dict[str, dict[str, Record]] = defaultdict(dict)  # one record per (model, sample)
        for r in self.records:
            if r.predicted is not None:
                seen[r.model][r.sample] = r
        votes: dict[str, Counter[str | None]] = defaultdict(Counter)
        for model in self.models:  # in the given order: ties go to the first model
            for sample, r in seen.get(model, {}).items():
                votes[sample][r.predicted_label] += 1
        top1 = {}
        for model, by_sample in seen.items():
            labelled = [r for r in by_sample.values() if r.truth is not None]
            if labelled:
                top1[model] = _mean([float(r.predicted == r.truth) for r in labelled])
            else:
                top1[model] = _mean(
                    [
                        float(r.predicted_label == votes[s].most_common(1)[0][0])
                        for s, r in by_sample.items()
                    ]
                )
        return top1


def _mean(values: Sequence[float]) -> float:
    a = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    return float(a.mean()) if a.size else math.nan


def _ci(values: Sequence[float]) -> float:
    a = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if a.size < 2:
        return math.nan
    return float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))


def _truth(vm: VisionModel, sample: Sample, mode: str) -> int | None:
    """The sample's label as a class index of ``vm``; ``None`` when unknown.

    A label that is not a class of the model is an error only when it is to be explained
    (``mode="label"``); otherwise it just does not count toward top-1.
    """
    if sample.label is None:
        return None
    try:
        return vm.class_index(sample.label)
    except UnknownClassError as exc:
        if mode != "label":
            return None
        raise InvalidParameterError(
            f"label {sample.label!r} of {sample.name} is not a class of {vm.name}: {exc} "
            "(explain the predicted class instead: target='predicted')"
        ) from None


def _thumbnail(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    from ..viz import overlay

    small = Image.fromarray(overlay(image, saliency)).resize((_THUMB, _THUMB), Image.BILINEAR)
    return np.asarray(small)


def evaluate(
    models: Sequence[VisionModel],
    data: Sequence[Sample],
    methods: Sequence[str],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    baselines: bool = True,
    target: str = "label",
    params: Mapping[str, Mapping[str, Any]] | None = None,
    threshold: float | None = None,
    tolerance: float = 0.0,
    steps: int = 50,
    seed: int = 0,
    truth: str = "auto",
    progress: Callable[[int, int], object] | None = None,
) -> Evaluation:
    """Explain and score every sample with every method on every model.

    Args:
        models: the models to compare (each with its own preprocessing).
        data: samples with masks (see :func:`~seethrough.evaluation.load_folder`).
        methods: registry names of the methods.
        metrics: which of :data:`METRICS` to compute (default :data:`DEFAULT_METRICS`; deletion
            and insertion cost ``2 * steps`` model evaluations per map, ``average_drop``,
            ``increase_in_confidence`` and ``hide_top`` one batch of two, the others none).
        baselines: also score a random map and a centre Gaussian per model.
        target: ``"label"`` (the sample's ground-truth class when it has one) or
            ``"predicted"`` (the model's top class).
        params: per-method parameters, e.g. ``{"lime": {"n_samples": 500}}``.
        threshold: IoU threshold on the normalised map (default: the metric's, 0.5).
        tolerance: pointing-game tolerance in pixels at the model's input size.
        steps: steps of the deletion and insertion curves.
        seed: seed of the random baseline (sample ``i`` uses ``seed + i``).
        truth: what each map is scored against (:data:`TRUTHS`): ``"auto"`` by each model's
            task (see the module docstring); naming one that a model does not predict (class
            masks of a detector, say) is an error before any work.
        progress: ``progress(done, total)`` after each (model, sample).
    """
    if target not in ("label", "predicted"):
        raise InvalidParameterError(f"target={target!r}: choose 'label' or 'predicted'")
    kinds = {vm.name: _truth_of(vm, truth) for vm in models}
    for name in metrics:
        if name not in METRICS:
            get_metric(name)  # unknown names get the registry's did-you-mean error
            raise InvalidParameterError(
                f"metric '{name}' is not computed per map here; use one of {', '.join(METRICS)}"
            )
    methods = [get_method(m).name for m in methods]
    params = {get_method(k).name: dict(v) for k, v in (params or {}).items()}
    if not models or not methods and not baselines:
        raise InvalidParameterError("nothing to evaluate: give at least one model and one method")
    result = Evaluation(
        [],
        tuple(m for m in METRICS if m in metrics),
        tuple(vm.name for vm in models),
        tuple(methods),
        settings={
            "threshold": threshold,
            "tolerance": tolerance,
            "steps": steps,
            "seed": seed,
            "truth": kinds[models[0].name] if len(set(kinds.values())) == 1 else "auto",
        },
    )
    total, done = len(models) * len(data), 0
    for vm in models:
        for i, sample in enumerate(data):
            if kinds[vm.name] == "image":
                _evaluate_sample(result, vm, sample, i, methods, params, baselines, target)
            else:
                _evaluate_objects(result, vm, sample, i, methods, params, baselines, kinds[vm.name])
            done += 1
            if progress is not None:
                progress(done, total)
    return result


def _maps(
    vm: VisionModel,
    x: Any,
    target: Any,
    methods: Sequence[str],
    params: Mapping[str, Mapping[str, Any]],
    shape: tuple[int, ...],
    seed: int,
    baselines: bool,
) -> list[tuple[str, np.ndarray | None, float, str | None]]:
    """``(method, map or None, seconds, error or None)`` for each method explaining ``target``
    (an error's first line instead of a map), then the baselines at ``shape``."""
    maps: list[tuple[str, np.ndarray | None, float, str | None]] = []
    for method in methods:
        try:
            e = explain(vm, x, method, target=target, **params.get(method, {}))
            maps.append((method, e.map, e.seconds, None))
        except SeethroughError as exc:
            maps.append((method, None, math.nan, str(exc).splitlines()[0]))
    if baselines:
        maps.append(("baseline:random", random_map(shape, seed=seed), 0.0, None))
        maps.append(("baseline:centre", centre_gaussian(shape), 0.0, None))
    return maps


def _evaluate_sample(
    result: Evaluation,
    vm: VisionModel,
    sample: Sample,
    index: int,
    methods: Sequence[str],
    params: Mapping[str, Mapping[str, Any]],
    baselines: bool,
    target_mode: str,
) -> None:
    pil = Image.fromarray(sample.image)
    shown = vm.preprocessing.display_image(pil)
    x = vm.preprocessing.from_display(shown)  # one model input (C, H, W)
    mask = vm.preprocessing.mask(sample.mask)
    probs = class_logits(vm.module, x[None].to(vm.device)).float().cpu().softmax(1)[0]
    predicted = int(probs.argmax())
    truth = _truth(vm, sample, target_mode)
    cls = truth if target_mode == "label" and truth is not None else predicted
    base = {
        "model": vm.name,
        "sample": sample.name,
        "target": cls,
        "target_label": vm.label(cls),
        "predicted": predicted,
        "predicted_label": vm.label(predicted),
        "truth": truth,
        "probability": float(probs[cls]),
    }
    s = result.settings
    maps = _maps(vm, x, cls, methods, params, mask.shape, s["seed"] + index, baselines)
    for method, saliency, seconds, error in maps:
        record = Record(method=method, seconds=seconds, error=error, **base)
        if saliency is not None:
            _score(record, result.metrics, vm, x, saliency, mask, s)
            _keep_cases(result, record, shown, saliency, mask)
        result.records.append(record)


def _truth_of(vm: VisionModel, truth: str) -> str:
    """What ``vm``'s maps are scored against; an error where it does not predict that."""
    if truth not in TRUTHS:
        raise InvalidParameterError(f"truth={truth!r}: choose one of {', '.join(TRUTHS)}")
    task = getattr(vm, "task", "classification")
    own = _TASK_TRUTH.get(task, "image")
    if truth not in ("auto", own):
        kind = {"image": "a classifier", "masks": "a segmenter", "boxes": "a detector"}[own]
        raise InvalidParameterError(
            f"{vm.name} is {kind}: it predicts {_WHAT[own]}, not {_WHAT[truth]}; "
            f"score it against {own!r} (or 'auto')"
        )
    return own


def _model_class(vm: VisionModel, label: int | str | None) -> int | None:
    """The ground truth's class as a class of ``vm`` (a VOC name also by its COCO name)."""
    if label is None:
        return None
    try:
        return vm.class_index(label)
    except UnknownClassError:
        if isinstance(label, str) and label in VOC_TO_COCO:
            return vm.class_index(VOC_TO_COCO[label])
        raise


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def _object_target(
    vm: VisionModel, x: torch.Tensor, kind: str, truth: GroundTruth, mask: np.ndarray
) -> tuple[object, ModelProbe]:
    """The target that explains one ground-truth object (``kind="boxes"``) or class
    (``"masks"``), bound on the clean image; an object no predicted box matches is an
    :class:`~seethrough.errors.InvalidTargetError`."""
    label = _model_class(vm, truth.label)
    if kind == "boxes":
        target: object = Box(xyxy=_box_of(mask), label=label)
        probe = ModelProbe.create(vm, x, target)
        assert isinstance(probe.fn, BoxScore)
        if not bool(probe.fn.match(probe.logits(probe.x))[1].all()):
            raise InvalidTargetError(
                f"no predicted box of class {truth.label!r} overlaps the object with IoU >= 0.5"
            )
        return target, probe
    target = Mask(label)
    try:
        return target, ModelProbe.create(vm, x, target)
    except InvalidTargetError:  # the model predicts none of it: its ground-truth pixels
        target = Mask(label, pixels=mask)
        return target, ModelProbe.create(vm, x, target)


def _evaluate_objects(
    result: Evaluation,
    vm: VisionModel,
    sample: Sample,
    index: int,
    methods: Sequence[str],
    params: Mapping[str, Mapping[str, Any]],
    baselines: bool,
    kind: str,
) -> None:
    """One record per method per ground-truth object (detector) or class (segmenter)."""
    shown = vm.preprocessing.display_image(Image.fromarray(sample.image))
    x = vm.preprocessing.from_display(shown)
    regions = objects(sample) if kind == "boxes" else class_masks(sample)
    s = result.settings
    for j, truth in enumerate(regions):
        mask = vm.preprocessing.mask(truth.mask)
        if not mask.any():  # cropped away by the preprocessing
            continue
        base: dict[str, Any] = {"model": vm.name, "sample": f"{sample.name}#{j}"}
        try:
            target, probe = _object_target(vm, x, kind, truth, mask)
        except SeethroughError as exc:
            error = str(exc).splitlines()[0]
            for method in methods:
                result.records.append(Record(method=method, error=error, **base))
            continue
        base.update(
            target=probe.target,
            target_label=vm.label(probe.target),
            probability=float(probe.scores(probe.x)[0]),
        )
        maps = _maps(vm, x, target, methods, params, mask.shape, s["seed"] + index, baselines)
        for method, saliency, seconds, error in maps:
            record = Record(method=method, seconds=seconds, error=error, **base)
            if saliency is not None:
                _score(record, result.metrics, vm, x, saliency, mask, s, target)
                _keep_cases(result, record, shown, saliency, mask)
            result.records.append(record)


def _score(
    record: Record,
    metrics: Sequence[str],
    vm: VisionModel,
    x: torch.Tensor,
    saliency: np.ndarray,
    mask: np.ndarray,
    s: Mapping[str, Any],
    target: object = None,
) -> None:
    if "iou" in metrics:
        record.iou = iou(saliency, mask, threshold=s["threshold"])
    if "iou_sweep" in metrics:
        record.iou_sweep = iou_sweep(saliency, mask).mean
    if "pointing_game" in metrics:
        record.pointing_game = pointing_game(saliency, mask, tolerance=s["tolerance"])
    if "energy_pointing_game" in metrics:
        record.energy_pointing_game = energy_pointing_game(saliency, mask)
    classifier = target is None
    target = record.target if classifier else target
    for curve in (deletion, insertion):
        if curve.__name__ in metrics:
            auc = curve(vm, x, saliency, target=target, steps=s["steps"]).auc
            setattr(record, curve.__name__, auc)
    for metric in (average_drop, increase_in_confidence):
        if metric.__name__ in metrics:
            setattr(record, metric.__name__, metric(vm, x, saliency, target=target))
    if "hide_top" in metrics and classifier:  # a top-1 class: classifiers only
        record.hide_top = float(hide_top(vm, x, saliency, target=target).changed)


def _keep_cases(
    result: Evaluation, record: Record, shown: np.ndarray, saliency: np.ndarray, mask: np.ndarray
) -> None:
    """Keep the thumbnails of the best and the worst map (by IoU, else pointing game), each
    with its description (the share inside ``mask``, the ground truth, among its numbers)."""
    key = (record.model, record.method)
    score = record.iou if not math.isnan(record.iou) else record.pointing_game
    if math.isnan(score):
        return
    best, worst = result.best.get(key), result.worst.get(key)
    if best is not None and worst is not None and worst.score <= score <= best.score:
        return
    caption = (
        f"{record.sample}: {record.target_label} ({record.probability:.2f}), score {score:.2f}"
    )
    e = Explanation(
        raw=saliency,
        map=saliency,
        method=record.method,
        title="" if record.method.startswith("baseline:") else get_method(record.method).title,
        target=record.target,
        label=record.target_label,
        probability=None if math.isnan(record.probability) else record.probability,
    )
    text = describe(e, mask=mask).text
    case = Case(record.sample, score, _thumbnail(shown, saliency), caption, text)
    if best is None or score > best.score:
        result.best[key] = case
    if worst is None or score < worst.score:
        result.worst[key] = case

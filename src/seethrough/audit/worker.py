"""The work of an audit: :class:`AuditSpec` says what to compute, :class:`Worker` computes it.

A worker loads the model once and turns a batch of :class:`~seethrough.audit.items.Item` into
table rows, one per (item, method): the prediction, the metrics of the method's map, its
seconds and the map file. A bad item (missing, corrupt, truncated, too large, not an image, a
mask of the wrong size) or a method that fails on it becomes rows carrying the error's type and
message; it never stops the batch. The spec is a plain picklable dataclass, so an engine can
send it to other processes or machines and build one worker there.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_atomically
from ..api import explain
from ..errors import InvalidParameterError, UnknownClassError
from ..evaluation.runner import METRICS, Record, _score
from ..metrics.base import class_logits
from ..models import VisionModel, load_model
from ..registry import get_method, get_metric
from .items import Item, read_image, read_mask

__all__ = [
    "AuditSpec",
    "Worker",
    "COLUMNS",
    "MASK_METRICS",
    "TARGETS",
    "columns",
    "map_name",
]

MASK_METRICS = ("iou", "iou_sweep", "pointing_game", "energy_pointing_game")
"""Metrics that need the object's mask (NaN for an item without one)."""
TARGETS = ("predicted", "label")
"""What each map explains: the model's top class, or the item's label (its ground truth)."""

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "string", "the item: its path relative to the data source (#frame=N: a video's)"),
    ("path", "string", "the file"),
    ("label", "string", "the ground-truth label, as given by the source"),
    ("truth", "int64", "the label as a class index of the model (empty: none, or not a class)"),
    ("predicted", "int64", "the model's top class"),
    ("predicted_label", "string", "its name"),
    ("probability", "float64", "its softmax probability"),
    ("target", "int64", "the class the map explains"),
    ("method", "string", "the method"),
    # the metrics' columns go here (see columns())
    ("seconds", "float64", "the method's wall time on this item"),
    ("map", "string", "the map file, relative to the run folder (empty: not saved)"),
    ("error_type", "string", "the error's type where the item or the method failed"),
    ("error", "string", "its one-line message"),
)
"""The table's fixed columns: name, type, meaning; the metrics' go before ``seconds``."""


def columns(metrics: Sequence[str]) -> list[tuple[str, str]]:
    """The table's ``(name, type)`` columns for these metrics, in order."""
    fixed = [(name, kind) for name, kind, _ in COLUMNS]
    at = [n for n, _ in fixed].index("seconds")
    return fixed[:at] + [(m, "float64") for m in metrics] + fixed[at:]


@dataclass
class AuditSpec:
    """What an audit computes; picklable, so it can travel to other processes.

    Attributes:
        model: a model name (see ``seethrough models``) or a model file.
        methods: registry names of the methods.
        metrics: per-map metrics (from :data:`~seethrough.evaluation.runner.METRICS`); the
            localisation ones (:data:`MASK_METRICS`) are NaN for items without a mask.
        weights: ``"default"``, ``"none"`` or a weights file, as for ``load_model``.
        params: per-method parameters, e.g. ``{"lime": {"n_samples": "500"}}``.
        target: ``"predicted"`` (the top class) or ``"label"`` (the item's label).
        save_maps: write each map as ``maps/ITEM/METHOD.npz`` in the run folder.
        device: the torch device.
        max_pixels: the largest image (width x height) read; ``None``: the library's default.
        steps: steps of the deletion and insertion curves.
        threshold: the IoU threshold (``None``: the metric's default).
        tolerance: the pointing game's tolerance in pixels.
        batch_size: items per batch (a batch is written as one part of the table).
        load: extra keyword arguments of ``load_model`` (``arch``, ``size``, ...).
        out: the run folder the maps are written to (``None``: maps are not saved).
    """

    model: str
    methods: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    weights: str = "default"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: str = "predicted"
    save_maps: bool = True
    device: str = "cpu"
    max_pixels: int | None = None
    steps: int = 20
    threshold: float | None = None
    tolerance: float = 0.0
    batch_size: int = 8
    load: dict[str, Any] = field(default_factory=dict)
    out: str | None = None

    def __post_init__(self) -> None:
        self.methods = tuple(get_method(m).name for m in self.methods)
        if not self.methods:
            raise InvalidParameterError("no method given")
        self.metrics = tuple(self.metrics)
        for name in self.metrics:
            if name not in METRICS:
                get_metric(name)  # an unknown name gets the registry's did-you-mean
                raise InvalidParameterError(
                    f"metric '{name}' is not computed per map; use one of {', '.join(METRICS)}"
                )
        if self.target not in TARGETS:
            raise InvalidParameterError(f"target={self.target!r}: choose one of {TARGETS}")
        if self.batch_size < 1:
            raise InvalidParameterError(f"batch_size={self.batch_size}: must be >= 1")
        self.params = {get_method(k).name: dict(v) for k, v in self.params.items()}

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What makes two runs' rows comparable (resuming with a different one is refused)."""
        keep = ("model", "weights", "metrics", "target", "steps", "threshold", "tolerance", "load")
        d = self.as_dict()
        params = {m: {k: str(v) for k, v in p.items()} for m, p in d["params"].items() if p}
        return {k: d[k] for k in keep} | {"params": params}


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def map_name(item_id: str, method: str) -> str:
    """The map file of an (item, method), relative to the run folder: readable and unique."""
    digest = hashlib.sha1(item_id.encode("utf-8")).hexdigest()[:8]
    stem = _UNSAFE.sub("_", item_id).strip("._")[-60:] or "item"
    return f"maps/{stem}-{digest}/{_UNSAFE.sub('_', method)}.npz"


def _error(exc: BaseException) -> dict[str, str]:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return {"error_type": type(exc).__name__, "error": text}


class Worker:
    """Loads the model once; :meth:`__call__` turns a batch of items into rows.

    Args:
        spec: what to compute (maps go under ``spec.out/maps/`` when ``spec.save_maps``).
        model: an already loaded model to use instead of loading ``spec.model``.
    """

    def __init__(self, spec: AuditSpec, model: VisionModel | None = None) -> None:
        self.spec = spec
        self.out = Path(spec.out) if spec.out is not None else None
        self.model = (
            model
            if model is not None
            else load_model(spec.model, weights=spec.weights, device=spec.device, **spec.load)
        )
        self.settings = {
            "threshold": spec.threshold,
            "tolerance": spec.tolerance,
            "steps": spec.steps,
        }

    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Rows for ``items``: one per (item, method of the spec), in order.

        Args:
            items: the batch.

        Returns:
            The rows, as dicts keyed by :func:`columns`.
        """
        rows: list[dict[str, Any]] = []
        for item in items:
            rows += self.item_rows(item, self.spec.methods)
        return rows

    def _blank(self, item: Item, method: str) -> dict[str, Any]:
        row: dict[str, Any] = {name: None for name, _ in columns(self.spec.metrics)}
        row.update(
            id=item.id,
            path=item.path,
            label=None if item.label is None else str(item.label),
            method=method,
        )
        for m in self.spec.metrics:
            row[m] = math.nan
        return row

    def item_rows(self, item: Item, methods: Sequence[str]) -> list[dict[str, Any]]:
        """The rows of one item (see :meth:`__call__`)."""
        vm = self.model
        try:
            image = read_image(item, self.spec.max_pixels)
            truth_mask = read_mask(item, image.size)
            mask = None if truth_mask is None else vm.preprocessing.mask(truth_mask)
            truth = self._truth(item)
            if self.spec.target == "label" and truth is None:
                raise InvalidParameterError(
                    f"{item.id} has no label that is a class of {vm.name} (target='label')"
                )
        except Exception as exc:  # a bad item is rows with its error, never a stopped run
            return [self._blank(item, m) | _error(exc) for m in methods]
        target = truth if self.spec.target == "label" else None
        rows, predicted, inputs = [], None, []

        def x() -> Any:  # the model input, made once where a metric or the prediction needs it
            if not inputs:
                inputs.append(vm.preprocessing.from_display(vm.preprocessing.display_image(image)))
            return inputs[0]

        for method in methods:
            row = self._blank(item, method) | {"truth": truth}
            try:
                start = time.perf_counter()
                # the image as a user's loop passes it (no second conversion from a tensor)
                e = explain(vm, image, method, target=target, **self.spec.params.get(method, {}))
                row["seconds"] = time.perf_counter() - start
                if target is None and predicted is None and e.target is not None:
                    predicted = (e.target, e.probability)
                row["target"] = e.target
                self._metrics(row, x, e.map, mask)
                if self.spec.save_maps and self.out is not None:
                    row["map"] = self._save(item, method, e.map, e.target)
            except Exception as exc:  # the method failed on this item: its row says why
                row |= _error(exc)
            rows.append(row)
        try:
            cls, probability = predicted or self._predict(x())
        except Exception as exc:
            return [r if r["error"] else r | _error(exc) for r in rows]
        for row in rows:
            row.update(predicted=cls, predicted_label=vm.label(cls), probability=float(probability))
        return rows

    def _truth(self, item: Item) -> int | None:
        if item.label is None:
            return None
        try:
            return self.model.class_index(item.label)
        except UnknownClassError:
            return None

    def _predict(self, x: Any) -> tuple[int, float]:
        probs = class_logits(self.model.module, x[None].to(self.model.device)).float().softmax(1)
        cls = int(probs[0].argmax())
        return cls, float(probs[0, cls])

    def _metrics(
        self,
        row: dict[str, Any],
        x: Callable[[], Any],
        saliency: np.ndarray,
        mask: np.ndarray | None,
    ) -> None:
        metrics = [m for m in self.spec.metrics if mask is not None or m not in MASK_METRICS]
        if not metrics:
            return
        record = Record(model=self.model.name, method=row["method"], sample=row["id"])
        record.target = row["target"]
        _score(record, metrics, self.model, x(), saliency, mask, self.settings)  # type: ignore[arg-type]
        for m in metrics:
            row[m] = float(getattr(record, m))

    def _save(self, item: Item, method: str, saliency: np.ndarray, target: int | None) -> str:
        assert self.out is not None
        name = map_name(item.id, method)
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(p: Path) -> None:
            with p.open("wb") as f:
                np.savez(  # uncompressed: deflating a float map costs ~10% of a Grad-CAM
                    f,
                    map=saliency.astype(np.float32),
                    target=np.int64(-1 if target is None else target),
                )

        write_atomically(path, write)
        return name

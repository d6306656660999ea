"""Record what a model looks at while it trains: :class:`ExplanationRecorder`.

At the end of an epoch, ``rec.record(model, epoch)`` explains a fixed set of probe images with
:func:`seethrough.explain` and writes the maps, the prediction and confidence of each probe and,
where ground-truth masks are given, the localisation metrics of each map
(:func:`~seethrough.metrics.pointing_game`, Zhang et al., ECCV 2016;
:func:`~seethrough.metrics.iou`; :func:`~seethrough.metrics.energy_pointing_game`, Wang et al.,
"Score-CAM", CVPR-W 2020) into a run directory (layout: :mod:`seethrough.training.run`).

It never disturbs training. Inside its call gradients are enabled (also inside a
``torch.no_grad()`` validation loop) and afterwards, also after an exception, everything is as
it was: every module's train/eval flag, every parameter's ``requires_grad`` and ``.grad``, the
module tree, the grad mode, and the global random states (torch's, CUDA's when initialised,
numpy's and Python's), so a run with the recorder gives bit-identical weights to a run without
it for the same seed. It touches no optimizer. Everything that can be checked without the
model (the probes load, the masks fit them, the methods and their parameters exist, the labels
are class indices) is checked at construction; the rest (the layer exists, the labels are below
the model's class count) at the first :meth:`~ExplanationRecorder.record` or
:meth:`~ExplanationRecorder.check`, before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import write_atomically
from ..api import explain
from ..core.layers import LayerRef, resolve_layer
from ..core.state import preserved_state, scores_of
from ..errors import (
    InvalidImageError,
    InvalidParameterError,
    ModelOutputError,
    UnknownClassError,
    UnknownLayerError,
)
from ..images import is_raw_image, to_array
from ..metrics import energy_pointing_game, iou, pointing_game
from ..models import VisionModel
from ..models.vision_model import module_of, prepare_inputs
from ..registry import get_method
from ..viz import normalize_map
from .run import (
    COST_METRIC,
    DEFAULT_SETTLE,
    MAPS_DIR,
    PROBE_METRICS,
    PROBES_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    Row,
    maps_path,
    mean_correlation,
    read_info,
    read_run,
    read_table,
    write_info,
    write_table,
)

__all__ = ["ExplanationRecorder", "scalar_metrics", "undisturbed"]

_MASK_METRICS = {"pointing_game": pointing_game, "iou": iou, "energy": energy_pointing_game}
_RESERVED = {"epoch", "image", "method", "metric", "value", COST_METRIC, *PROBE_METRICS}


# ------------------------------------------------------------------------ the training state


@dataclass
class _RandomStates:
    """The global random generators' states: torch (CPU, and CUDA when initialised), numpy's
    legacy global generator and Python's ``random``."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    numpy: Any
    python: Any

    @classmethod
    def save(cls) -> _RandomStates:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


@contextmanager
def undisturbed(module: nn.Module) -> Iterator[None]:
    """Run a block that explains ``module`` in the middle of its training, leaving no trace.

    Inside: eval mode and gradients enabled (even under an outer ``torch.no_grad()``). On exit,
    also after an exception: every ``training`` flag, ``requires_grad``, ``.grad`` (the same
    tensor) and registered submodule as they were
    (:func:`~seethrough.core.state.preserved_state`), the grad mode as it was, and the global
    random states of torch (CUDA included once initialised), numpy and Python restored.

    Raises:
        InvalidParameterError: called inside ``torch.inference_mode()``, where no gradient can
            be computed.
    """
    if torch.is_inference_mode_enabled():
        raise InvalidParameterError(
            "record() cannot explain inside torch.inference_mode(): call it outside (a "
            "torch.no_grad() block is fine)"
        )
    states = _RandomStates.save()
    try:
        with preserved_state(module, modules=True), torch.enable_grad():
            yield
    finally:
        states.restore()


def scalar_metrics(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """The numbers among a framework's epoch logs, as floats: Keras' ``logs`` or Lightning's
    ``trainer.callback_metrics``. A one-element tensor (on any device) or array counts; other
    values (text, vectors) are left out."""
    metrics = {}
    for name, value in (logs or {}).items():
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        if array.size == 1 and np.issubdtype(array.dtype, np.number):
            metrics[str(name)] = float(array.reshape(()))
    return metrics


# ---------------------------------------------------------------------------- checked inputs


def _method_names(methods: str | Sequence[str]) -> tuple[str, ...]:
    """Registry names (canonical), each once; an unknown name is an ``UnknownMethodError``."""
    if isinstance(methods, str):
        methods = (methods,)
    names = tuple(dict.fromkeys(get_method(m).name for m in methods))
    if not names:
        raise InvalidParameterError("methods is empty: give at least one method name")
    return names


def _method_params(
    methods: tuple[str, ...], method_params: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """Each method's parameters, validated by the method's own schema now, not at epoch 30."""
    given = dict(method_params or {})
    canonical = {get_method(name).name: dict(params) for name, params in given.items()}
    unused = sorted(set(canonical) - set(methods))
    if unused:
        raise InvalidParameterError(
            f"method_params for {', '.join(unused)}, which is not recorded (methods: "
            f"{', '.join(methods)})"
        )
    for name in methods:
        get_method(name).cls(**canonical.get(name, {}))  # InvalidParameterError when wrong
    return {name: canonical.get(name, {}) for name in methods}


def _probe_name(item: object, index: int) -> str:
    if isinstance(item, str) and item.startswith("sample:"):
        return item.split(":", 1)[1]
    if isinstance(item, (str, os.PathLike)):
        return Path(item).stem
    return f"probe-{index:02d}"


def _unique(names: list[str]) -> list[str]:
    """``names`` with a repeated name suffixed by its position (``a``, ``a-1``)."""
    seen: set[str] = set()
    result = []
    for i, name in enumerate(names):
        if name in seen:
            name = f"{name}-{i}"
        seen.add(name)
        result.append(name)
    return result


def _probes(probe_images: Any) -> tuple[list[str], list[np.ndarray] | torch.Tensor]:
    """``(names, images)``: raw images read now (uint8 ``(H, W, 3)`` each), or a float
    ``(N, C, H, W)`` model-input batch kept as it is."""
    if isinstance(probe_images, Mapping):
        names, items = [str(k) for k in probe_images], list(probe_images.values())
    elif isinstance(probe_images, torch.Tensor):
        names, items = [], probe_images
    elif isinstance(probe_images, np.ndarray) and probe_images.ndim == 4:
        names, items = [], list(probe_images)
    elif isinstance(probe_images, (str, os.PathLike)) or not isinstance(probe_images, Sequence):
        raise InvalidParameterError(
            "probe_images must be a list of images (paths, arrays, PIL images), a (N, H, W, 3) "
            f"array, a float (N, C, H, W) model-input tensor or a dict of them by name, not "
            f"{type(probe_images).__name__}"
        )
    else:
        names, items = [], list(probe_images)
    if isinstance(items, list) and items and all(isinstance(i, torch.Tensor) for i in items):
        try:
            items = torch.stack([torch.as_tensor(i) for i in items])
        except RuntimeError as exc:
            raise InvalidImageError(f"probe tensors of different shapes: {exc}") from None
    if isinstance(items, torch.Tensor):
        if not items.is_floating_point() or items.dim() != 4:
            raise InvalidImageError(
                "probe tensors must be a float model-input batch (N, C, H, W), got "
                f"{items.dtype} {tuple(items.shape)}"
            )
        if not torch.isfinite(items).all():
            raise InvalidImageError("the probe tensors hold NaN or infinite values")
        images: list[np.ndarray] | torch.Tensor = items.detach().cpu().clone()
        count = items.shape[0]
    else:
        loaded = []
        for i, item in enumerate(items):
            if not is_raw_image(item):
                raise InvalidImageError(
                    f"probe {i}: a {type(item).__name__} is not an image (give a path, an array "
                    "or a PIL image; or every probe as a model-input tensor)"
                )
            try:
                loaded.append(to_array(item))
            except InvalidImageError as exc:
                raise type(exc)(f"probe {i} ({_probe_name(item, i)}): {exc}") from None
        images, count = loaded, len(loaded)
    if count == 0:
        raise InvalidParameterError("no probe image given")
    if not names:
        names = [_probe_name(item, i) for i, item in enumerate(items)]
    return _unique(names), images


def _sizes(images: list[np.ndarray] | torch.Tensor) -> list[tuple[int, int]]:
    if isinstance(images, torch.Tensor):
        return [tuple(images.shape[-2:])] * images.shape[0]  # type: ignore[list-item]
    return [a.shape[:2] for a in images]


def _masks(masks: Any, sizes: list[tuple[int, int]]) -> list[np.ndarray] | None:
    """One boolean ``(H, W)`` mask per probe, each of its probe's size, none of them empty."""
    if masks is None:
        return None
    if isinstance(masks, Mapping):
        masks = list(masks.values())
    items = [m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m for m in masks]
    if len(items) != len(sizes):
        raise InvalidParameterError(f"{len(items)} masks for {len(sizes)} probe images")
    result = []
    for i, (m, size) in enumerate(zip(items, sizes, strict=True)):
        a = np.asarray(m)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.shape != tuple(size):
            raise InvalidParameterError(
                f"mask {i} has shape {a.shape} but its probe image is {size[0]}x{size[1]}: "
                "a mask must have its image's size"
            )
        a = a != 0
        if not a.any():
            raise InvalidParameterError(f"mask {i} is empty: a probe's mask must hold its object")
        result.append(a)
    return result


def _labels(labels: Any, count: int) -> list[int | None] | None:
    """One class index (or ``None``) per probe."""
    if labels is None:
        return None
    items = list(labels.tolist() if isinstance(labels, (np.ndarray, torch.Tensor)) else labels)
    if len(items) != count:
        raise InvalidParameterError(f"{len(items)} labels for {count} probe images")
    result: list[int | None] = []
    for i, label in enumerate(items):
        if label is None:
            result.append(None)
        elif isinstance(label, (int, np.integer)) and not isinstance(label, bool) and label >= 0:
            result.append(int(label))
        else:
            raise UnknownClassError(f"label {i} is {label!r}: a class index >= 0, or None")
    return result


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _fingerprint(
    names: list[str], images: list[np.ndarray] | torch.Tensor, masks: list[np.ndarray] | None
) -> str:
    """A hash of the probes and masks, so a resumed run is known to have the same probes."""
    digest = hashlib.sha256()
    arrays = [images.numpy()] if isinstance(images, torch.Tensor) else images
    for part in [*arrays, *(masks or [])]:
        digest.update(str(part.shape).encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update("\0".join(names).encode())
    return digest.hexdigest()[:32]


def _unit(m: np.ndarray) -> np.ndarray:
    """A map in [0, 1] that keeps its zero where it has no negative value (``m / max``), so the
    energy share stays the same, and min-max scaled where it has."""
    return normalize_map(m, "abs" if float(m.min()) >= 0 else "minmax")


def _display(x: torch.Tensor) -> np.ndarray:
    """uint8 ``(H, W, 3)`` images of a model-input batch whose model has no preprocessing."""
    pixels = x.detach().cpu().float().clamp(0, 1)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return (pixels[:, :3] * 255).round().byte().permute(0, 2, 3, 1).numpy()


@dataclass
class _Prepared:
    """The probes as one model's input: the batch, what the model sees, the masks at its size."""

    x: torch.Tensor
    shows: np.ndarray
    masks: np.ndarray | None
    key: tuple[int, object]


# ----------------------------------------------------------------------------- the recorder


class ExplanationRecorder:
    """Explain a fixed probe set at the end of each epoch and keep the maps and their metrics.

    Example:
        >>> rec = seethrough.ExplanationRecorder(images, masks=masks, labels=labels,
        ...                                      out="runs/exp1")          # doctest: +SKIP
        >>> for epoch in range(epochs):                                    # doctest: +SKIP
        ...     train_one_epoch(model, optimizer)
        ...     rec.record(model, epoch, loss=loss)
        >>> rec.settled_epoch()                                            # doctest: +SKIP

    Each recorded epoch explains every probe with every method, for its label where labels
    are given (else for the class the model predicts), so the maps of one probe are comparable
    across epochs. The table gets, per probe, ``predicted``, ``confidence`` (softmax
    probability of the predicted class) and ``correct`` (with a label); per probe and method,
    with masks, ``pointing_game``, ``iou`` and ``energy`` computed on the method's map; the
    user's metrics; and ``recorder_seconds``, the recorder's own cost. A second recorder on
    the same ``out`` with the same probes and methods resumes the run: it appends epochs, and
    an epoch recorded again replaces its rows.
    """

    def __init__(
        self,
        probe_images: Any,
        methods: str | Sequence[str] = ("gradcam",),
        masks: Any = None,
        labels: Any = None,
        every: int = 1,
        out: str | os.PathLike[str] = "runs/exp1",
        layer: LayerRef = None,
        method_params: Mapping[str, Mapping[str, Any]] | None = None,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        """Check every input and read a run already in ``out`` to resume it.

        Args:
            probe_images: the images to watch: a list of paths, arrays or PIL images (read
                now), a ``(N, H, W, 3)`` array, a float ``(N, C, H, W)`` model-input tensor, or
                a dict of any of them by name (names otherwise come from the file names).
            methods: registry names (see ``seethrough.list_methods()``); the first one is the
                reference of :meth:`settled_epoch`.
            masks: optional ground truth, one ``(H, W)`` mask per probe at its image's size
                (non-zero = object); it goes through the model's resize and crop with the image.
            labels: optional class index per probe (``None`` for an unknown one).
            every: explain every ``every``-th epoch (``epoch % every == 0``); the user's
                metrics are kept for every epoch.
            out: the run directory (created at the first record).
            layer: the layer of the layer-based methods (CAMs); default: the model's.
            method_params: ``{method: {parameter: value}}`` for ``seethrough.explain``.
            settle: the correlation above which consecutive maps count as settled.

        Raises:
            InvalidImageError: a probe image that does not load.
            InvalidParameterError: masks or labels not one per probe, a mask not of its
                image's size (or empty), bad ``every``/``settle``/parameters, or ``out`` holding
                another run (other probes, methods, labels or masks).
            UnknownMethodError: a method name that is not registered.
            UnknownClassError: a label that is not a class index.
        """
        self.methods = _method_names(methods)
        self.method_params = _method_params(self.methods, method_params)
        self.probes, self._images = _probes(probe_images)
        self._masks = _masks(masks, _sizes(self._images))
        self.labels = _labels(labels, len(self.probes))
        self.every = _positive_int("every", every)
        if isinstance(settle, bool) or not isinstance(settle, (int, float)):
            raise InvalidParameterError(f"settle must be a number in [-1, 1], got {settle!r}")
        if not -1 <= settle <= 1:
            raise InvalidParameterError(f"settle={settle}: a correlation, in [-1, 1]")
        self.settle = float(settle)
        if layer is not None and not isinstance(layer, (str, nn.Module)):
            raise UnknownLayerError(f"layer must be a name or a module, not {type(layer).__name__}")
        self.layer = layer
        self.out = Path(out)
        self._fingerprint = _fingerprint(self.probes, self._images, self._masks)
        self._info: dict[str, Any] | None = None
        self._rows: list[Row] = []
        self._prepared: _Prepared | None = None
        self._previous: tuple[int, np.ndarray] | None = None
        if (self.out / "run.json").exists():
            self._resume()

    # -- the run directory

    def _identity(self) -> dict[str, Any]:
        """What a resumed run must share with this recorder."""
        return {
            "probes": self.probes,
            "methods": list(self.methods),
            "labels": self.labels,
            "has_masks": self._masks is not None,
            "fingerprint": self._fingerprint,
        }

    def _resume(self) -> None:
        info = read_info(self.out)
        for key, value in self._identity().items():
            if info.get(key) != value:
                raise InvalidParameterError(
                    f"{self.out} holds another run (its {key} differ from this recorder's): "
                    "give another out= to start a new run"
                )
        self._info = info
        self._rows = read_table(self.out)

    @property
    def has_masks(self) -> bool:
        """Whether ground-truth masks were given."""
        return self._masks is not None

    # -- the probes as a model's input

    def _prepare(self, model: VisionModel | nn.Module) -> _Prepared:
        """The probe batch for ``model`` (once per model and preprocessing), checked."""
        vm = model if isinstance(model, VisionModel) else None
        key = (id(module_of(model)), vm.preprocessing if vm is not None else None)
        if self._prepared is not None and self._prepared.key == key:
            return self._prepared
        x, shows, _ = prepare_inputs(model, self._images)
        if any(s is None for s in shows):
            shown = _display(x)
        else:
            shown = np.stack([np.asarray(s, dtype=np.uint8) for s in shows])
        size = tuple(x.shape[-2:])
        masks = None
        if self._masks is not None:
            raw = isinstance(self._images, list)
            fitted = [
                vm.preprocessing.mask(m) if vm is not None and raw else m for m in self._masks
            ]
            if any(m.shape != size for m in fitted):
                raise InvalidParameterError(
                    f"the masks do not line up with the model's {size[0]}x{size[1]} input"
                )
            masks = np.stack(fitted)
        prepared = _Prepared(x, shown, masks, key)
        self._check_model(model, prepared)
        self._prepared = prepared
        return prepared

    def _check_model(self, model: VisionModel | nn.Module, prepared: _Prepared) -> None:
        """The layer exists (for the methods that need one); no mask is lost in the resize."""
        module = module_of(model)
        if self.layer is not None and any(get_method(m).needs_layer for m in self.methods):
            resolve_layer(module, self.layer)  # UnknownLayerError, with suggestions
        if prepared.masks is not None:
            empty = [self.probes[i] for i, m in enumerate(prepared.masks) if not m.any()]
            if empty:
                raise InvalidParameterError(
                    f"the masks of {', '.join(empty)} are empty at the model's input size"
                )
        if self._info is not None and list(self._info["image_size"]) != list(prepared.x.shape[-2:]):
            raise InvalidParameterError(
                f"{self.out} was recorded at {self._info['image_size']}, this model's input "
                f"is {list(prepared.x.shape[-2:])}"
            )

    def _predict(self, module: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(predicted class, its softmax probability)`` per probe; labels checked."""
        scores = scores_of(module, x)
        if scores.dim() != 2:
            raise ModelOutputError(
                f"the recorder needs class scores (N, classes); the model gives "
                f"{tuple(scores.shape)}"
            )
        classes = scores.shape[1]
        for i, label in enumerate(self.labels or []):
            if label is not None and label >= classes:
                raise UnknownClassError(
                    f"the label of {self.probes[i]} is {label}, but the model has {classes} classes"
                )
        probabilities = scores.float().softmax(dim=1)
        confidence, predicted = probabilities.max(dim=1)
        return predicted.cpu().numpy().astype(np.int64), confidence.cpu().numpy()

    def _explain(
        self, model: VisionModel | nn.Module, prepared: _Prepared, targets: list[int]
    ) -> dict[str, np.ndarray]:
        """Each method's maps ``(N, H, W)`` as explain gives them (``Explanation.map``)."""
        maps = {}
        for method in self.methods:
            explanations = explain(
                model,
                self._on_device(module_of(model), prepared.x),
                method,
                target=targets,
                layer=self.layer,
                **self.method_params[method],
            )
            maps[method] = np.stack([np.asarray(e.map, dtype=np.float32) for e in explanations])
        return maps

    @staticmethod
    def _on_device(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        device = next((p.device for p in module.parameters()), x.device)
        return x.to(device)

    # -- public

    def check(self, model: VisionModel | nn.Module) -> None:
        """Check that this recorder can explain ``model``, before training starts.

        Runs what the first :meth:`record` would run on the first probe (the layer, the
        labels against the model's classes, each method once), leaving the model and the
        random states untouched and writing nothing.

        Raises:
            UnknownLayerError: ``layer`` is not in the model.
            UnknownClassError: a label at or above the model's class count.
            MethodNotApplicableError: a method cannot explain this model (e.g. CAM without a
                global-average-pooling head).
        """
        module = module_of(model)
        with undisturbed(module):
            prepared = self._prepare(model)
            x = self._on_device(module, prepared.x)
            predicted, _ = self._predict(module, x)
            first = _Prepared(prepared.x[:1], prepared.shows[:1], None, prepared.key)
            self._explain(model, first, self._targets(predicted)[:1])

    def _targets(self, predicted: np.ndarray) -> list[int]:
        labels = self.labels or [None] * len(self.probes)
        return [
            int(p) if label is None else label for label, p in zip(labels, predicted, strict=True)
        ]

    def record(
        self, model: VisionModel | nn.Module, epoch: int, **user_metrics: float
    ) -> dict[str, Any]:
        """Explain the probes with ``model`` as it is now and append epoch ``epoch`` to the run.

        Call it at the end of an epoch (also before training, as epoch 0). Epochs with
        ``epoch % every != 0`` keep only ``user_metrics``. Recording an epoch again replaces
        its rows and maps.

        Args:
            model: the model in training (a ``VisionModel`` or a plain ``nn.Module`` whose
                input the probes already are).
            epoch: the epoch number, an integer >= 0.
            **user_metrics: numbers to keep beside the maps (``loss=0.31, accuracy=0.9``).

        Returns:
            The epoch's summary: ``epoch``, ``explained``, ``recorder_seconds``, and when
            explained the probes' mean ``confidence``, ``accuracy`` (with labels), per method
            the mean of each mask metric (``methods``), ``correlation`` (mean correlation of
            the first method's maps with the last explained epoch's, ``None`` for the first),
            and the user's ``metrics``.
        """
        start = time.perf_counter()
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise InvalidParameterError(f"epoch must be an integer >= 0, got {epoch!r}")
        epoch = int(epoch)
        metrics = self._user_metrics(user_metrics)
        rows = [Row(epoch, "", "", name, value) for name, value in metrics.items()]
        summary: dict[str, Any] = {"epoch": epoch, "explained": epoch % self.every == 0}
        arrays: dict[str, np.ndarray] | None = None
        if summary["explained"]:
            module = module_of(model)
            with undisturbed(module):
                prepared = self._prepare(model)
                predicted, confidence = self._predict(module, self._on_device(module, prepared.x))
                maps = self._explain(model, prepared, self._targets(predicted))
            rows += self._rows_of(epoch, prepared, predicted, confidence, maps, summary)
            arrays = {m: np.stack([_unit(a) for a in maps[m]]) for m in self.methods}
            arrays |= {"predicted": predicted, "confidence": confidence.astype(np.float32)}
            summary["correlation"] = self._correlation(epoch, arrays[self.methods[0]])
            self._write_epoch(model, prepared, epoch, arrays)
        seconds = time.perf_counter() - start
        rows.append(Row(epoch, "", "", COST_METRIC, seconds))
        self._rows = [r for r in self._rows if r.epoch != epoch] + rows
        write_table(self.out, self._rows)
        if arrays is not None:
            self._previous = (epoch, arrays[self.methods[0]])
        summary["recorder_seconds"] = seconds
        summary["metrics"] = metrics
        return summary

    def _user_metrics(self, given: Mapping[str, Any]) -> dict[str, float]:
        result = {}
        for name, value in given.items():
            if name in _RESERVED:
                raise InvalidParameterError(f"{name}= is a name the run uses itself: rename it")
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise InvalidParameterError(f"{name}={value!r}: a metric must be a number")
            result[name] = float(value)
        return result

    def _rows_of(
        self,
        epoch: int,
        prepared: _Prepared,
        predicted: np.ndarray,
        confidence: np.ndarray,
        maps: dict[str, np.ndarray],
        summary: dict[str, Any],
    ) -> list[Row]:
        """The table's rows of one explained epoch; the summary's means filled in."""
        rows = []
        labels = self.labels or [None] * len(self.probes)
        correct = []
        for i, name in enumerate(self.probes):
            rows.append(Row(epoch, name, "", "predicted", float(predicted[i])))
            rows.append(Row(epoch, name, "", "confidence", float(confidence[i])))
            if labels[i] is not None:
                correct.append(float(predicted[i] == labels[i]))
                rows.append(Row(epoch, name, "", "correct", correct[-1]))
        summary["confidence"] = float(np.mean(confidence))
        if correct:
            summary["accuracy"] = float(np.mean(correct))
        summary["methods"] = {}
        for method in self.methods:
            means: dict[str, float] = {}
            if prepared.masks is not None:
                for metric, fn in _MASK_METRICS.items():
                    values = [fn(a, m) for a, m in zip(maps[method], prepared.masks, strict=True)]
                    rows += [
                        Row(epoch, name, method, metric, v)
                        for name, v in zip(self.probes, values, strict=True)
                    ]
                    means[metric] = float(np.mean(values))
            summary["methods"][method] = means
        return rows

    def _correlation(self, epoch: int, maps: np.ndarray) -> float | None:
        """Mean correlation with the last explained epoch before ``epoch`` (from disk on a
        resumed run)."""
        previous = self._previous
        if previous is None or previous[0] >= epoch:
            earlier = [e for e in read_run(self.out).map_epochs if e < epoch] if self._info else []
            if not earlier:
                return None
            previous = (earlier[-1], read_run(self.out).maps(earlier[-1])[self.methods[0]])
        return mean_correlation(previous[1], maps)

    def _write_epoch(
        self,
        model: VisionModel | nn.Module,
        prepared: _Prepared,
        epoch: int,
        arrays: dict[str, np.ndarray],
    ) -> None:
        """``run.json`` and ``probes.npz`` at the first epoch, then the epoch's maps."""
        if self._info is None:
            (self.out / MAPS_DIR).mkdir(parents=True, exist_ok=True)
            probes = {"images": prepared.shows}
            if prepared.masks is not None:
                probes["masks"] = prepared.masks
            write_atomically(self.out / PROBES_FILE, lambda p: _savez(p, probes))
            info = {
                "format": RUN_FORMAT,
                "version": RUN_VERSION,
                **self._identity(),
                "every": self.every,
                "image_size": list(prepared.x.shape[-2:]),
                "model": model.name if isinstance(model, VisionModel) else type(model).__name__,
                "layer": self.layer if isinstance(self.layer, str) else None,
                "method_params": self.method_params,
                "settle": self.settle,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            write_info(self.out, info)
            self._info = info
        write_atomically(maps_path(self.out, epoch), lambda p: _savez(p, arrays))

    def settled_epoch(self) -> int | None:
        """The first epoch after which the first method's maps of consecutive explained
        epochs correlate above ``settle`` (mean over the probes) for the rest of the run;
        ``None`` when they do not (yet). See :func:`seethrough.training.settled_epoch`."""
        if self._info is None:
            return None
        return read_run(self.out).settled_epoch(self.settle)


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)

"""``VisionModel``: a classifier bundled with its preprocessing, labels and provenance."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..core.inputs import check_model_input
from ..core.runner import ModelRunner, TorchRunner
from ..core.state import scores_of
from ..errors import (
    InvalidImageError,
    InvalidInputError,
    InvalidParameterError,
    ModelOutputError,
    UnknownClassError,
    suggest,
)
from ..images import ImageSource, is_raw_image, load_image, to_array
from .preprocessing import Preprocessing

__all__ = ["VisionModel", "ModelInfo", "Prediction", "module_of", "prepare_inputs"]


class Prediction(NamedTuple):
    """One ranked class of a prediction."""

    index: int
    label: str
    probability: float


class VisionModel:
    """A ``torch.nn.Module`` classifier plus everything needed to feed and read it.

    Attributes:
        module: the network (kept in eval mode by :func:`~seethrough.models.load_model`).
        preprocessing: how raw images become its input.
        labels: class names, in output order.
        name: the architecture name (or file stem for TorchScript).
        source: where the architecture comes from: ``"bundled"``, ``"torchvision"``, ``"timm"``
            or ``"file"``.
        weights: a description of the weights (``"bundled ImageNet weights"``,
            ``"none (random)"``, a file path, ...).
        default_layer: the layer explanation methods use when none is given (``None``: let them
            find the last spatial layer).
        framework: what the model was made with: ``"pytorch"``, ``"keras"``, ``"onnx"``.
        task: what it predicts: ``"classification"`` (class scores), ``"detection"`` (boxes,
            see :mod:`seethrough.models.detection`) or ``"segmentation"`` (class logits per
            pixel).

    ``module`` is always a ``torch.nn.Module`` that maps a preprocessed ``(N, C, H, W)`` batch to
    class scores: for a model of another framework, a small adapter around it (channels-last
    conversion, a session call). The methods run the model through :meth:`make_runner`, which
    says what the model offers them (gradients, layers by their framework's names).
    """

    def __init__(
        self,
        module: nn.Module,
        preprocessing: Preprocessing,
        labels: Sequence[str],
        *,
        name: str,
        source: str,
        weights: str,
        default_layer: str | None = None,
        framework: str = "pytorch",
        runner: Callable[[], ModelRunner] | None = None,
        gradient_runner: Callable[[], ModelRunner] | None = None,
        task: str = "classification",
        predictor: Callable[..., Any] | None = None,
    ) -> None:
        """Wrap ``module``; see the class docstring for the meaning of each argument.

        ``runner`` makes the runner of one call for a model that is not a plain PyTorch module
        (default: a :class:`~seethrough.core.runner.TorchRunner` on ``module``);
        ``gradient_runner``, where ``runner``'s is forward-only, the differentiable runner of a
        call that needs gradients (an ONNX model converted to PyTorch); ``predictor``, for a
        model that does not predict classes, is what :meth:`predict` returns
        (``predictor(model, images, k)``).
        """
        self.module = module
        self.preprocessing = preprocessing
        self.labels = list(labels)
        self.name = name
        self.source = source
        self.weights = weights
        self.default_layer = default_layer
        self.framework = framework
        self._runner = runner
        self._gradient_runner = gradient_runner
        self.task = task
        self._predictor = predictor

    def __repr__(self) -> str:
        """Short summary: name, source and number of classes."""
        return (
            f"VisionModel(name={self.name!r}, source={self.source!r}, "
            f"weights={self.weights!r}, classes={self.num_classes})"
        )

    def make_runner(self, needs_gradients: bool = False) -> ModelRunner:
        """A runner for one call (see :mod:`seethrough.core.runner`): the model's own for a
        Keras or ONNX model, else a :class:`~seethrough.core.runner.TorchRunner` on ``module``;
        with ``needs_gradients``, the model's gradient runner where it has one."""
        if needs_gradients and self._gradient_runner is not None:
            return self._gradient_runner()
        return self._runner() if self._runner is not None else TorchRunner(self.module)

    @property
    def num_classes(self) -> int:
        """Number of class labels."""
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """The device of the first parameter (or buffer); CPU for a module with neither."""
        first = next(chain(self.module.parameters(), self.module.buffers()), None)
        return first.device if first is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> VisionModel:
        """Move the module to ``device`` and return ``self``."""
        try:
            self.module.to(device)
        except (RuntimeError, AssertionError) as exc:
            raise InvalidParameterError(
                f"cannot move the model to device '{device}': {exc}"
            ) from None
        return self

    def __call__(self, x: torch.Tensor) -> object:
        """Run the module on an already-preprocessed batch."""
        return self.module(x)

    def preprocess(self, images: ImageSource | Sequence[ImageSource]) -> torch.Tensor:
        """Preprocess one image or a list into an ``(N, 3, H, W)`` batch on the model's device."""
        return self.preprocessing(images).to(self.device)

    def label(self, index: int) -> str:
        """The name of class ``index`` (``"class N"`` beyond the known labels)."""
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def class_index(self, target: int | str) -> int:
        """Resolve a class index or name to an index.

        Names are matched exactly, then case-insensitively, then as a unique substring.

        Raises:
            UnknownClassError: out-of-range index, unknown name or ambiguous substring.
        """
        count = self.num_classes
        if isinstance(target, str):
            return self._match_label(target)
        if isinstance(target, bool) or not hasattr(target, "__index__"):
            raise UnknownClassError(f"a class must be an index or a label, got {target!r}")
        index = target.__index__()
        if not 0 <= index < count:
            raise UnknownClassError(
                f"class index {index} is out of range: the model has {count} classes "
                f"(0..{count - 1})"
            )
        return index

    def _match_label(self, name: str) -> int:
        """Find ``name`` among the labels: exact, case-insensitive, then unique substring."""
        if name in self.labels:
            return self.labels.index(name)
        lowered = [label.lower() for label in self.labels]
        key = name.strip().lower()
        if key in lowered:
            return lowered.index(key)
        hits = [i for i, label in enumerate(lowered) if key and key in label]
        if len(hits) == 1:
            return hits[0]
        if hits:
            shown = ", ".join(f"{self.labels[i]!r}" for i in hits[:8])
            more = f" and {len(hits) - 8} more" if len(hits) > 8 else ""
            raise UnknownClassError(
                f"class '{name}' is ambiguous: it matches {shown}{more}; be more specific"
            )
        raise UnknownClassError(f"unknown class '{name}'.{suggest(name, self.labels)}")

    def predict(self, images: object, k: int | None = None) -> Any:
        """Top-``k`` classes with softmax probabilities (a classifier).

        A detector returns per image its boxes, a list of
        :class:`~seethrough.models.detection.BoxPrediction` ``(box xyxy, label, score)``, highest
        score first (all of them above its score threshold, or the first ``k``); a segmenter per
        image a :class:`~seethrough.models.detection.MaskPrediction` (the class map and the
        classes present with their pixel fractions, most frequent first: all, or the first
        ``k``).

        Args:
            images: one image (path, PIL image, numpy array, or a preprocessed float ``(3, H, W)``
                tensor) -> one list; a list of images or an ``(N, 3, H, W)`` tensor -> a list of
                lists.
            k: number of classes per image (clipped to the number of classes; default 5), boxes
                of a detector or classes present of a segmenter (default: all).

        The module runs by the protected forward of :func:`~seethrough.core.state.scores_of`:
        in eval mode without autograd, every submodule's ``training`` flag (and every
        parameter's ``requires_grad`` and ``.grad``) restored afterwards, also on errors.
        """
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InvalidParameterError(f"k must be a positive integer, got {k!r}")
        if self._predictor is not None:
            return self._predictor(self, images, k)
        k = 5 if k is None else k
        batch, _, single = prepare_inputs(self, images, display=False)
        batch = batch.to(self.device)
        scores = scores_of(self.module, batch)
        if scores.dim() != 2 or scores.shape[0] != batch.shape[0]:
            raise ModelOutputError(
                f"expected class scores of shape ({batch.shape[0]}, classes), "
                f"got {tuple(scores.shape)}"
            )
        probabilities = scores.float().softmax(dim=1)
        top = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
        results = [
            [
                Prediction(int(i), self.label(int(i)), float(p))
                for p, i in zip(values.tolist(), indices.tolist(), strict=True)
            ]
            for values, indices in zip(top.values, top.indices, strict=True)
        ]
        return results[0] if single else results

    def describe(self) -> str:
        """A multi-line human summary of the model."""
        height, width = self.preprocessing.output_size
        parameters = sum(p.numel() for p in self.module.parameters())
        return "\n".join(
            [
                f"model:         {self.name}",
                f"source:        {self.source}",
                f"weights:       {self.weights}",
                f"input size:    3x{height}x{width}",
                f"preprocessing: {self.preprocessing.describe()}",
                f"classes:       {self.num_classes}",
                f"parameters:    {parameters:,}",
            ]
        )


@dataclass(frozen=True)
class ModelInfo:
    """What an explanation method may know of a model, built once per call by :meth:`of`.

    A :class:`VisionModel` gives all of it; a bare ``nn.Module`` only the network and its class
    name (its input is ready: no preprocessing, no labels, no normalisation).

    Attributes:
        module: the network.
        name: the architecture name, or the module's class name.
        default_layer: the layer methods use when none is given (``None``: they find one).
        class_index: resolves a class index or label to an index (``None``: indices only).
        normalization: the preprocessing's ``(mean, std)`` in model-input space, or ``None``.
        labels: the class names in output order, or ``None``.
        preprocessing: how raw images become the input, or ``None`` for a bare module.
        runner: the model's own runner (a Keras or ONNX model's), or ``None``: the methods run
            ``module`` with a :class:`~seethrough.core.runner.TorchRunner`.
        gradient_runner: makes the runner of a method that needs gradients, where ``runner``
            is forward-only and the model has another way (an ONNX model converted to
            PyTorch), else ``None``.
    """

    module: nn.Module
    name: str
    default_layer: str | None = None
    class_index: Callable[[int | str], int] | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    labels: tuple[str, ...] | None = None
    preprocessing: Preprocessing | None = None
    runner: ModelRunner | None = None
    gradient_runner: Callable[[], ModelRunner] | None = None

    @classmethod
    def of(cls, model: VisionModel | nn.Module | ModelInfo) -> ModelInfo:
        """The description of ``model`` (returned as is when it is one already).

        Raises:
            InvalidParameterError: ``model`` is neither a VisionModel nor an ``nn.Module``.
        """
        if isinstance(model, ModelInfo):
            return model
        module = module_of(model)
        if not isinstance(model, VisionModel):
            return cls(module, type(module).__name__)
        pre = model.preprocessing
        return cls(
            module,
            model.name,
            default_layer=model.default_layer,
            class_index=model.class_index,
            normalization=(tuple(pre.mean), tuple(pre.std)),
            labels=tuple(model.labels),
            preprocessing=pre,
            runner=model.make_runner() if model._runner is not None else None,
            gradient_runner=model._gradient_runner,
        )

    def runner_for(self, needs_gradients: bool) -> nn.Module | ModelRunner:
        """What a method runs: with ``needs_gradients`` the gradient runner where there is
        one, else the model's own runner, else the network."""
        if needs_gradients and self.gradient_runner is not None:
            return self.gradient_runner()
        return self.runner if self.runner is not None else self.module

    def label(self, index: int | None) -> str | None:
        """The name of class ``index``, or ``None`` without labels or index."""
        return self.labels[index] if self.labels is not None and index is not None else None


def module_of(model: VisionModel | nn.Module) -> nn.Module:
    """The network of a :class:`VisionModel`, or ``model`` itself when it is an ``nn.Module``.

    Raises:
        InvalidParameterError: ``model`` is neither.
    """
    module = model.module if isinstance(model, VisionModel) else model
    if not isinstance(module, nn.Module):
        raise InvalidParameterError(
            f"model must be a VisionModel or a torch.nn.Module, not {type(model).__name__}"
        )
    return module


def prepare_inputs(
    model: VisionModel | nn.Module, images: object, *, display: bool = True
) -> tuple[torch.Tensor, list[np.ndarray | None], bool]:
    """Turn any accepted image input into one model-input batch: the one path of every entry point.

    ``predict``, ``explain`` and the metrics all pass their images through here, so the same
    input gives the same batch and the same bad input the same error everywhere.

    A float tensor ``(C, H, W)`` or ``(N, C, H, W)`` is model input, already preprocessed: for a
    :class:`VisionModel` it must have the channels its preprocessing makes, and no tensor may
    hold NaN or inf (``InvalidImageError``). Paths, PIL images and numpy arrays are raw images:
    a :class:`VisionModel` applies its preprocessing; a plain ``nn.Module`` gets them only
    scaled to [0, 1] (no resize, no normalisation). A list (or other iterable) gives a batch; for
    a :class:`VisionModel` it may mix raw images and preprocessed ``(C, H, W)`` tensors.

    Args:
        model: the model the batch is for.
        images: one image or a list of images, as above.
        display: also return the uint8 images the model sees (``False`` spares that work).

    Returns:
        ``(x, display_images, single)``: ``x`` is ``(N, C, H, W)`` on the CPU or where the
        tensor given was, ``display_images`` the uint8 images the model sees (``None`` where
        unknown or not asked for) and ``single`` whether one image (not a list or a 4-D batch)
        was given.

    Raises:
        InvalidInputError: a tensor of another dtype or rank, or no image at all.
        InvalidImageError: an unreadable image, another channel count, NaN or inf values.
    """
    vm = model if isinstance(model, VisionModel) else None
    if isinstance(images, torch.Tensor):
        if not images.is_floating_point() or images.dim() not in (3, 4):
            raise InvalidInputError(
                f"a tensor input must be a float (C, H, W) or (N, C, H, W) model input, got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        single = images.dim() == 3
        x = images.unsqueeze(0) if single else images
        check_model_input(x, len(vm.preprocessing.mean) if vm is not None else None)
        shows: list[np.ndarray | None] = [None] * x.shape[0]
        if display and vm is not None and x.shape[1] == 3:
            shows = list(vm.preprocessing.denormalize(x.detach().cpu()))
        return x, shows, single
    many = isinstance(images, (list, tuple)) or (
        not is_raw_image(images) and isinstance(images, Iterable)
    )
    items = list(images) if many else [images]  # type: ignore[call-overload]
    if not items:
        raise InvalidInputError("no image given")
    if all(isinstance(i, torch.Tensor) for i in items):
        x, shows, _ = prepare_inputs(
            model, torch.stack([torch.as_tensor(i) for i in items]), display=display
        )
        return x, shows, False
    if vm is not None:
        rows, shows = [], []
        for item in items:
            if isinstance(item, torch.Tensor):
                rows.append(item)
                shows.append(None)
            else:
                shown = vm.preprocessing.display_image(load_image(item))
                rows.append(vm.preprocessing.from_display(shown))
                shows.append(shown if display else None)
        if len({tuple(r.shape) for r in rows}) > 1:
            sizes = ", ".join(dict.fromkeys("x".join(map(str, r.shape[-2:])) for r in rows))
            raise InvalidInputError(
                f"images of different sizes ({sizes}) cannot be one batch when the model keeps "
                "each image's own size (resize='keep'): give one image per call"
            )
        x = torch.stack(rows)
        check_model_input(x, len(vm.preprocessing.mean))
    else:
        arrays = [to_array(load_image(i)) for i in items]
        if len({a.shape for a in arrays}) > 1:
            raise InvalidImageError(
                "images of different sizes need a VisionModel (with preprocessing) to be batched"
            )
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        shows = list(arrays) if display else [None] * len(arrays)
    return x, shows, not many

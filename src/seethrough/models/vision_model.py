"""``VisionModel``: a classifier bundled with its preprocessing, labels and provenance."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import NamedTuple

import torch
from torch import nn

from ..core.inputs import check_model_input
from ..core.outputs import output_to_tensor
from ..errors import (
    InvalidParameterError,
    ModelOutputError,
    UnknownClassError,
    suggest,
)
from ..images import ImageSource
from .preprocessing import Preprocessing

__all__ = ["VisionModel", "Prediction", "module_of"]


class Prediction(NamedTuple):
    """One ranked class of a prediction."""

    index: int
    label: str
    probability: float


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode, restoring every submodule's ``training`` flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


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
    ) -> None:
        """Wrap ``module``; see the class docstring for the meaning of each argument."""
        self.module = module
        self.preprocessing = preprocessing
        self.labels = list(labels)
        self.name = name
        self.source = source
        self.weights = weights
        self.default_layer = default_layer

    def __repr__(self) -> str:
        """Short summary: name, source and number of classes."""
        return (
            f"VisionModel(name={self.name!r}, source={self.source!r}, "
            f"weights={self.weights!r}, classes={self.num_classes})"
        )

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

    def _batch(self, images: object) -> tuple[torch.Tensor, bool]:
        """Turn ``predict``'s input into a batch on the model's device, and whether it was single.

        Raises ``InvalidImageError`` for a tensor with another channel count than the
        preprocessing makes, or with NaN / inf values."""
        if isinstance(images, torch.Tensor):
            if not images.is_floating_point() or images.dim() not in (3, 4):
                raise InvalidParameterError(
                    "a tensor input must be a preprocessed float (3, H, W) or (N, 3, H, W) "
                    f"batch, got {images.dtype} {tuple(images.shape)}"
                )
            single = images.dim() == 3
            batch = images.unsqueeze(0) if single else images
        elif isinstance(images, (list, tuple)):
            if not images:
                raise InvalidParameterError("no images to predict: the list is empty")
            batch = torch.stack(
                [
                    item
                    if isinstance(item, torch.Tensor)
                    else self.preprocessing.transform_one(item)
                    for item in images
                ]
            )
            single = False
        else:
            batch, single = self.preprocessing(images), True
        check_model_input(batch, len(self.preprocessing.mean))
        return batch.to(self.device), single

    def predict(self, images: object, k: int = 5) -> list[Prediction] | list[list[Prediction]]:
        """Top-``k`` classes with softmax probabilities.

        Args:
            images: one image (path, PIL image, numpy array, or a preprocessed float ``(3, H, W)``
                tensor) -> one list; a list of images or an ``(N, 3, H, W)`` tensor -> a list of
                lists.
            k: number of classes per image (clipped to the number of classes).

        The module runs in eval mode under ``torch.inference_mode()``; every submodule's
        ``training`` flag is restored afterwards, also on errors.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidParameterError(f"k must be a positive integer, got {k!r}")
        batch, single = self._batch(images)
        with _eval_mode(self.module), torch.inference_mode():
            scores = output_to_tensor(self.module(batch))
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

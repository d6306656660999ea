"""What every metric shares: checking maps and masks, and evaluating the model on new inputs.

A *map* is any real-valued ``(H, W)`` array (an :class:`~seethrough.Explanation` is accepted and
gives its ``map``); a *mask* is an ``(H, W)`` array whose non-zero pixels are the object. Metrics
that re-run the model take it as a :class:`~seethrough.VisionModel` or a plain ``nn.Module`` and
the image as anything :func:`seethrough.explain` accepts; :class:`ModelProbe` does that part once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.state import protected, scores_of
from ..core.targets import resolve_target
from ..errors import InvalidParameterError, InvalidTargetError
from ..explanation import Explanation

__all__ = ["as_map", "as_mask", "rank_pixels", "class_logits", "ModelProbe", "SCORES"]

SCORES = ("probability", "logit")


def as_map(saliency: Any, name: str = "saliency") -> np.ndarray:
    """``saliency`` as a float64 ``(H, W)`` array with finite values.

    Accepts an :class:`~seethrough.Explanation` (its ``map``), a numpy array or a tensor; a
    leading axis of length 1 is dropped.
    """
    if isinstance(saliency, Explanation):
        saliency = saliency.map
    if isinstance(saliency, torch.Tensor):
        saliency = saliency.detach().cpu().numpy()
    a = np.asarray(saliency, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise InvalidParameterError(f"{name} must be an (H, W) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidParameterError(f"{name} holds NaN or infinite values")
    return a


def rank_pixels(a: np.ndarray) -> np.ndarray:
    """Rank of every pixel of a map, 0 for the most salient; ties broken by raster order.

    The one ordering every metric that takes "the top k pixels" uses, so they agree on ties.
    """
    order = np.argsort(-a, axis=None, kind="stable")
    rank = np.empty(a.size, dtype=np.int64)
    rank[order] = np.arange(a.size)
    return rank.reshape(a.shape)


def as_mask(mask: Any, shape: tuple[int, ...] | None = None, name: str = "mask") -> np.ndarray:
    """``mask`` as a boolean ``(H, W)`` array (non-zero = object), checked against ``shape``."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise InvalidParameterError(f"{name} must be an (H, W) array, got shape {m.shape}")
    if shape is not None and m.shape != tuple(shape):
        raise InvalidParameterError(
            f"{name} has shape {m.shape} but the map has shape {tuple(shape)}: resize one of them"
        )
    return m != 0


def class_logits(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``module``'s class scores ``(B, K)`` on ``batch``, by the protected forward of
    :func:`~seethrough.core.state.scores_of` (eval mode, no autograd, state restored).

    Raises:
        InvalidTargetError: the model's output is not ``(N, classes)``.
    """
    out = scores_of(module, batch)
    if out.dim() != 2:
        raise InvalidTargetError(
            f"metrics need class scores of shape (N, classes); the model gave {tuple(out.shape)}"
        )
    return out


@dataclass
class ModelProbe:
    """One image, one model and one target, ready to score perturbed copies of the input.

    Attributes:
        module: the network (its state is protected by :meth:`protected`).
        x: the model input ``(1, C, H, W)`` on the model's device.
        target: the class index scored (the top class when none was given).
        score: ``"probability"`` (softmax) or ``"logit"``.
        labels: class names, when the model has them.
    """

    module: nn.Module
    x: torch.Tensor
    target: int
    score: str = "probability"
    labels: tuple[str, ...] | None = None

    @classmethod
    def create(
        cls, model: Any, image: Any, target: int | str | None = None, score: str = "probability"
    ) -> ModelProbe:
        """Prepare ``image`` for ``model`` and fix ``target`` (None: the top class).

        The target is resolved by :func:`~seethrough.core.targets.resolve_target`, the path of
        ``explain``, so a boolean is refused alike; a metric takes only a class (no callable).
        """
        from ..models import VisionModel, module_of
        from ..models.vision_model import prepare_inputs

        if score not in SCORES:
            raise InvalidParameterError(f"score={score!r}: choose one of {', '.join(SCORES)}")
        vm = model if isinstance(model, VisionModel) else None
        module = module_of(model)
        x, _, _ = prepare_inputs(model, image)
        if x.shape[0] != 1:
            raise InvalidParameterError(f"a metric takes one image, got a batch of {x.shape[0]}")
        param = next(module.parameters(), None)
        if param is not None:
            x = x.to(param.device, param.dtype if param.is_floating_point() else x.dtype)
        probe = cls(module, x.detach(), -1, score, tuple(vm.labels) if vm is not None else None)
        logits = probe.logits(probe.x)

        def class_index(item: int | str) -> int:
            if isinstance(item, str):
                if vm is None:
                    raise InvalidTargetError("a class label needs a VisionModel (with labels)")
                return vm.class_index(item)
            if not 0 <= item < logits.shape[1]:
                raise InvalidTargetError(
                    f"class {item} is out of range: the model has {logits.shape[1]} classes"
                )
            return item

        resolved = resolve_target(target, logits, class_index).classes[0]
        if resolved is None:
            raise InvalidTargetError(
                "a metric needs a class target (index or label), not a callable"
            )
        probe.target = resolved
        return probe

    @contextmanager
    def protected(self) -> Iterator[None]:
        """Eval mode and no autograd for the block; the model's state is restored after."""
        with protected(self.module):
            yield

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's class scores ``(B, K)`` on a batch of inputs (state protected)."""
        return class_logits(self.module, batch.to(self.x.device, self.x.dtype))

    def scores(self, batch: torch.Tensor) -> np.ndarray:
        """The target's score (probability or logit) for each input of ``batch``, float64 ``(B,)``."""
        out = self.logits(batch).double()
        if self.score == "probability":
            out = out.softmax(1)
        return out[:, self.target].cpu().numpy()

    def context(self) -> Any:
        """A method :class:`~seethrough.methods.base.Context` on :attr:`x`, for the perturbation
        engine (``engine.evaluate``); use it inside :meth:`protected`."""
        from ..core.runner import TorchRunner
        from ..methods.base import Context

        return Context(TorchRunner(self.module), self.x, self.target, None)

    def label(self, index: int) -> str:
        """The name of class ``index`` (``"class N"`` without labels)."""
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``output -> (B, 1)`` score of the target, for the perturbation engine."""

        def score(output: torch.Tensor) -> torch.Tensor:
            out = output.double()
            if self.score == "probability":
                out = out.softmax(1)
            return out[:, self.target : self.target + 1]

        return score

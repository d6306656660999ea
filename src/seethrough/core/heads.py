"""Find a classifier head fed by the global average of a layer (CAM, concept classification)."""

from __future__ import annotations

import torch
from torch import nn

from .hooks import Recorder

__all__ = ["linear_modules", "gap_linear_head"]


def linear_modules(named: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Every ``nn.Linear`` among ``named`` (``dict(model.named_modules())``): the candidates to
    record for :func:`gap_linear_head`."""
    return {n: m for n, m in named.items() if isinstance(m, nn.Linear)}


def gap_linear_head(recorder: Recorder, activations: torch.Tensor) -> nn.Linear | None:
    """The linear layer whose input, in the recorded forward, was the spatial mean of ``activations``.

    ``recorder`` must have recorded the inputs of the candidates (``Recorder(..., inputs=True)``).
    Checked on the actual values, so a model whose layer reaches the head in any other way
    (flatten, attention pooling, more layers) gets ``None``.
    """
    pooled = activations.mean(dim=(2, 3))
    tol = 1e-4 * float(pooled.abs().max()) + 1e-8
    for name, module in reversed(list(recorder.modules.items())):
        head_in = recorder.inputs.get(name)
        if (
            isinstance(module, nn.Linear)
            and head_in is not None
            and head_in.shape == pooled.shape
            and torch.allclose(head_in.detach().to(pooled.dtype), pooled, rtol=1e-4, atol=tol)
        ):
            return module
    return None

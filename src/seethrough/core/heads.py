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


def gap_linear_head(
    recorder: Recorder, activations: torch.Tensor, output: torch.Tensor
) -> nn.Linear | None:
    """The linear layer that maps the spatial mean of ``activations`` to the model's ``output``.

    ``recorder`` must have recorded the inputs of the candidates (``Recorder(..., inputs=True)``).
    Checked on the actual values, at both ends: the layer's input must be the pooled activations
    and its output the model's class scores, so a model whose layer reaches the head in any other
    way (flatten, attention pooling, more layers after it) gets ``None``.
    """
    pooled = activations.mean(dim=(2, 3))
    tol = 1e-4 * float(pooled.abs().max()) + 1e-8
    scores = output.detach()
    out_tol = 1e-4 * float(scores.abs().max()) + 1e-8
    for name, module in reversed(list(recorder.modules.items())):
        head_in = recorder.inputs.get(name)
        if not (
            isinstance(module, nn.Linear)
            and head_in is not None
            and head_in.shape == pooled.shape
            and torch.allclose(head_in.detach().to(pooled.dtype), pooled, rtol=1e-4, atol=tol)
        ):
            continue
        head_out = recorder.output(name).detach()
        if head_out.shape == scores.shape and torch.allclose(
            head_out.to(scores.dtype), scores, rtol=1e-4, atol=out_tol
        ):
            return module
    return None

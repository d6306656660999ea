"""Vision transformers: token sequences as spatial maps, and their default layer.

A ViT layer outputs tokens ``(N, L, D)``: a few prefix tokens (class, distillation, register)
followed by ``h * w`` patch tokens. :func:`tokens_to_map` drops the prefix and folds the patches
into ``(N, D, h, w)`` so every CAM method runs on ViTs unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import MethodNotApplicableError

__all__ = ["tokens_to_map", "prefix_and_grid", "transformer_default_layer"]


def prefix_and_grid(model: nn.Module, length: int) -> tuple[int, tuple[int, int]]:
    """Number of prefix tokens and the patch grid ``(h, w)`` for a sequence of ``length`` tokens.

    Uses the model's own ``num_prefix_tokens`` and ``patch_embed.grid_size`` (timm) when it has
    them; otherwise the smallest prefix (at most 8) that leaves a square number of patches.
    """
    prefix = getattr(model, "num_prefix_tokens", None)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if prefix is not None and grid is not None and prefix + grid[0] * grid[1] == length:
        return int(prefix), (int(grid[0]), int(grid[1]))
    candidates = [prefix] if prefix is not None else range(9)
    for p in candidates:
        side = math.isqrt(length - p) if length - p > 0 else 0
        if side > 1 and side * side == length - p:
            return int(p), (side, side)
    raise MethodNotApplicableError(
        f"cannot fold {length} tokens into a square patch grid: pick a convolutional layer"
    )


def tokens_to_map(t: torch.Tensor, model: nn.Module, layer: str | None = None) -> torch.Tensor:
    """``(N, L, D)`` tokens to ``(N, D, h, w)`` patch maps; 4-D tensors pass through."""
    if t.dim() == 4:
        return t
    if t.dim() != 3:
        raise MethodNotApplicableError(
            f"layer '{layer}' outputs shape {tuple(t.shape)}: neither a spatial (N, C, H, W) map "
            "nor (N, tokens, dim) transformer tokens; pick a convolutional or transformer layer"
        )
    prefix, (h, w) = prefix_and_grid(model, t.shape[1])
    return t[:, prefix:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def transformer_default_layer(model: nn.Module) -> str | None:
    """``blocks.<last>.norm1`` for timm-style ViTs (the input of the last attention), else None.

    Later layers do not work for CAMs: after the last attention only the class token reaches
    the head, so the patch tokens get no gradient.
    """
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
        if isinstance(getattr(blocks[-1], "norm1", None), nn.Module):
            return f"blocks.{len(blocks) - 1}.norm1"
    return None

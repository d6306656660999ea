"""Maps to the input's size: bilinear upsampling as two small matrix products."""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["to_input_size", "bilinear_weights"]


def to_input_size(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of ``(N, h, w)`` maps to ``size``, float32 numpy.

    The same interpolation as ``F.interpolate(..., mode="bilinear", align_corners=False)``,
    computed as two small matrix products (``W_rows @ map @ W_cols^T``): bilinear resizing is
    separable, and this is several times faster than the interpolation kernel for a small map.
    A map already of that size is copied: the result never shares memory with ``maps``.
    """
    maps = maps.detach().float()
    h, w = maps.shape[-2:]
    if (h, w) == size:  # a copy: the map must not share memory with the raw map it equals
        return maps.cpu().numpy().copy()
    rows = bilinear_weights(h, size[0], maps.device)
    cols = bilinear_weights(w, size[1], maps.device)
    return torch.matmul(torch.matmul(rows, maps), cols.T).cpu().numpy()


@functools.lru_cache(maxsize=64)
def bilinear_weights(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """The ``(n_out, n_in)`` matrix of 1-D bilinear interpolation (half-pixel centres, edges
    clamped), exactly the weights of torch's ``align_corners=False`` kernel."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0.0)
    lo = src.floor().long().clamp_max(n_in - 1)
    hi = (lo + 1).clamp_max(n_in - 1)
    frac = src - lo
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    weights.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights.float().to(device)

"""Kernel SHAP on superpixels, built on LIME's machinery."""

from __future__ import annotations

import itertools
import math

import torch

from ...registry import register_method
from .surrogate import Fit, SurrogateMethod, complements


@register_method
class KernelShap(SurrogateMethod):
    """Shapley values of superpixels by the Shapley-kernel weighted regression.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017. For F
    features and a coalition ``z`` of size ``s``::

        pi(z) = (F - 1) / (C(F, s) s (F - s))
        min_phi sum_z pi(z) (f(z) - f(0) - phi.z)^2   subject to   sum_i phi_i = f(1) - f(0)

    The constraint (efficiency) holds exactly. When every coalition fits in ``n_samples``
    (``2^F - 2 <= n_samples - 2``) they are all enumerated and the result is the exact Shapley
    value; otherwise coalitions are drawn with probability proportional to ``pi`` (so they
    enter the regression with equal weights) in antithetic pairs ``z, 1 - z``. ``f(0)`` (all
    features hidden) is in ``.stats["base_value"]``.
    """

    name = "kernelshap"
    title = "Kernel SHAP"
    rank = 20
    paper = "Lundberg & Lee, NeurIPS 2017"

    def coalitions(
        self, n_features: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows 0 and 1: all kept, all hidden; then every coalition, or paired kernel samples."""
        f, budget = n_features, self.config["n_samples"] - 2
        ends = torch.stack([torch.ones(f), torch.zeros(f)]).double()
        if f < 2:
            return ends, torch.zeros(2, dtype=torch.float64)
        if 2**f - 2 <= budget:
            z = torch.tensor(list(itertools.product((0.0, 1.0), repeat=f)), dtype=torch.float64)
            z = z[(z.sum(1) > 0) & (z.sum(1) < f)]
            size = z.sum(1)
            binom = torch.tensor([math.comb(f, int(k)) for k in size], dtype=torch.float64)
            weights = (f - 1) / (binom * size * (f - size))
        else:
            sizes = torch.arange(1, f, dtype=torch.float64)
            p = (f - 1) / (sizes * (f - sizes))
            half = max(1, budget // 2)
            k = sizes[torch.multinomial(p / p.sum(), half, replacement=True, generator=generator)]
            ranks = (
                torch.rand(half, f, generator=generator, dtype=torch.float64).argsort(1).argsort(1)
            )
            first = (ranks < k[:, None]).double()
            z = complements(first)
            weights = torch.ones(len(z), dtype=torch.float64)
        return torch.cat([ends, z]), torch.cat([torch.zeros(2, dtype=torch.float64), weights])

    def fit(self, z: torch.Tensor, weights: torch.Tensor, y: torch.Tensor) -> Fit:
        """Weighted least squares with the efficiency constraint eliminated (last feature)."""
        full, empty = y[0], y[1]
        total = full - empty
        f = z.shape[1]
        if f == 1:
            coef = total[:, None]
        else:
            zs, ys, w = z[2:], y[2:] - empty, weights[2:].sqrt()[:, None]
            a = (zs[:, :-1] - zs[:, -1:]) * w
            b = (ys - zs[:, -1:] * total) * w
            head = torch.linalg.lstsq(a, b, driver="gelsd").solution  # (F-1, T)
            coef = torch.cat([head, total[None] - head.sum(0, keepdim=True)]).T
        gap = (coef.sum(1) - total).abs().max()
        return Fit(
            coef,
            empty,
            {
                "base_value": float(empty[0]),
                "full_value": float(full[0]),
                "efficiency_gap": float(gap),
            },
        )

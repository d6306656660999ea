"""Integrated gradients along the straight path from a baseline to the input."""

from __future__ import annotations

import numpy as np
import torch

from ...core.targets import ResolvedTarget
from ...errors import InvalidParameterError
from ...registry import Param, register_method
from ..base import Context
from .base import (
    BASELINE,
    INTERNAL_BATCH,
    SEED,
    Attribution,
    GradientMethod,
    accumulate,
    baseline_image,
    input_gradients,
    reduce_param,
    rows,
)

__all__ = ["IntegratedGradients", "integration_rule", "RULES"]

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def integration_rule(n: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) of an ``n``-point quadrature."""
    k = np.arange(n, dtype=np.float64)
    if rule == "riemann_left":
        alphas, weights = k / n, np.full(n, 1 / n)
    elif rule == "riemann_right":
        alphas, weights = (k + 1) / n, np.full(n, 1 / n)
    elif rule == "riemann_middle":
        alphas, weights = (k + 0.5) / n, np.full(n, 1 / n)
    elif rule == "riemann_trapezoid":
        if n < 2:
            raise InvalidParameterError("riemann_trapezoid needs n_steps >= 2")
        alphas = k / (n - 1)
        weights = np.full(n, 1 / (n - 1))
        weights[[0, -1]] /= 2
    elif rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = (nodes + 1) / 2, w / 2
    else:
        raise InvalidParameterError(f"integration={rule!r}: choose one of {', '.join(RULES)}")
    return torch.from_numpy(alphas), torch.from_numpy(weights)


@register_method
class IntegratedGradients(GradientMethod):
    """Path integral of the gradient from a baseline ``x'`` to the input ``x``.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017::

        a = (x - x') * integral_0^1 d y(x' + t (x - x')) / dx dt
          ~ (x - x') * sum_k w_k grad y(x' + alpha_k (x - x'))

    with the ``integration`` rule's points and weights. Completeness says
    ``sum(a) = y(x) - y(x')``; the gap ``|sum(a) - (y(x) - y(x'))|`` is reported in
    ``.stats["completeness_gap"]`` (with ``delta = y(x) - y(x')``): a large gap means too few
    steps. The path is evaluated ``internal_batch_size`` points at a time.
    """

    name = "integrated_gradients"
    title = "Integrated Gradients"
    paper = "Sundararajan et al., ICML 2017"
    params = (
        reduce_param("sum"),
        BASELINE,
        Param("n_steps", 50, "points on the path from the baseline to the input", int, min=1),
        Param("integration", "gausslegendre", "quadrature rule", str, choices=RULES),
        INTERNAL_BATCH,
        SEED,
    )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """Gradients at every path point in batches, weighted and summed per image."""
        p = self.params
        x, n = ctx.x, ctx.x.shape[0]
        base = baseline_image(ctx, x, p["baseline"], torch.Generator().manual_seed(p["seed"]))
        with torch.no_grad():  # the two ends of the path in one pass: y(x) and y(x')
            ends = ctx.forward(torch.cat([x, base]))
        output = ends[:n]
        target = target or ctx.resolve(output)
        total = self.path_integral(ctx, x, base, target)
        attributions = (x - base) * total
        delta = target(output) - target(ends[n:])
        gap = (attributions.flatten(1).sum(1) - delta).abs()
        stats = [
            {"completeness_gap": float(g), "delta": float(d)}
            for g, d in zip(gap, delta, strict=True)
        ]
        return Attribution(attributions, output, target, stats)

    def path_integral(
        self, ctx: Context, x: torch.Tensor, base: torch.Tensor, target: ResolvedTarget
    ) -> torch.Tensor:
        """``sum_k w_k grad y(base + alpha_k (x - base))`` for each image ``(N, C, H, W)``."""
        alphas, weights = integration_rule(self.params["n_steps"], self.params["integration"])
        alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
        diff = x - base

        def term(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            points = (alphas[k].view(-1, 1, 1, 1) * rows(diff, i)).add_(rows(base, i))
            grads, _, _ = input_gradients(ctx, points, target.select(i.tolist()))
            return grads * weights[k].view(-1, 1, 1, 1)

        return accumulate(ctx, len(alphas), self.params["internal_batch_size"], term)

"""Integrated gradients along the straight path from a baseline to the input."""

from __future__ import annotations

from dataclasses import dataclass

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

__all__ = ["IntegratedGradients", "integration_rule", "fold_ends", "RULES"]

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
    steps. The path is evaluated ``batch_size`` points at a time.
    """

    name = "integrated_gradients"
    title = "Integrated Gradients"
    rank = 40
    paper = "Sundararajan et al., ICML 2017"
    reports_progress = True  # per batch of path points
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
        p = self.config
        x, n = ctx.x, ctx.x.shape[0]
        base = baseline_image(ctx, x, p["baseline"], torch.Generator().manual_seed(p["seed"]))
        path = Path(x, base, target)
        if not fold_ends(x):
            # the two ends of the path, y(x) and y(x'), in chunks of images
            path.ends = ctx.outputs(torch.cat([x, base]))
            path.target = target or ctx.resolve(path.ends[:n])
        total = self.path_integral(ctx, path)
        output, target = path.ends[:n], path.target
        attributions = (x - base) * total
        delta = target(output) - target(path.ends[n:])
        gap = (attributions.flatten(1).sum(1) - delta).abs()
        stats = [
            {"completeness_gap": float(g), "delta": float(d)}
            for g, d in zip(gap, delta, strict=True)
        ]
        return Attribution(attributions, output, target, stats)

    def path_integral(self, ctx: Context, path: Path) -> torch.Tensor:
        """``sum_k w_k grad y(base + alpha_k (x - base))`` for each image ``(N, C, H, W)``.

        When ``path.ends`` is not known yet, the first batch of path points also evaluates the
        two ends and fixes ``path.ends`` and ``path.target``.
        """
        x, base = path.x, path.base
        alphas, weights = integration_rule(self.config["n_steps"], self.config["integration"])
        alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
        diff = x - base

        def term(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            points = (alphas[k].view(-1, 1, 1, 1) * rows(diff, i)).add_(rows(base, i))
            if path.ends is None:
                grads = path.gradients_with_ends(ctx, points, i)
            else:
                grads, _, _ = input_gradients(ctx, points, path.target.select(i.tolist()))
            return grads * weights[k].view(-1, 1, 1, 1)

        return accumulate(ctx, len(alphas), self.config["batch_size"], term)


def fold_ends(x: torch.Tensor) -> bool:
    """Whether the path's two ends ride along with the first batch of path points rather than
    get a forward of their own: on a GPU, where a small batch costs about as much as a large
    one (kernel launches dominate), this saves a whole forward pass. On the CPU every image
    costs, and riding along would add their backward too, so they get a forward alone."""
    return x.device.type != "cpu"


@dataclass
class Path:
    """The straight paths of a batch: inputs, baselines, and once evaluated, the model's
    outputs at both ends ``(2N, ...)`` (inputs first) and the targets fixed on the inputs'."""

    x: torch.Tensor
    base: torch.Tensor
    target: ResolvedTarget | None
    ends: torch.Tensor | None = None

    def gradients_with_ends(
        self, ctx: Context, points: torch.Tensor, i: torch.Tensor
    ) -> torch.Tensor:
        """Gradients of the targets at ``points`` (path points of images ``i``), from one
        forward and backward that also evaluates both ends; sets :attr:`ends` and
        :attr:`target`."""
        m, n = len(points), len(self.x)
        batch = torch.cat([points, self.x, self.base]).detach().requires_grad_(True)
        with torch.enable_grad():
            out = ctx.forward(batch)
            self.ends = out[m:].detach()
            self.target = self.target or ctx.resolve(self.ends[:n])
            scores = self.target.select(i.tolist())(out[:m])
            (grads,) = torch.autograd.grad(scores.sum(), batch)
        return grads[:m]

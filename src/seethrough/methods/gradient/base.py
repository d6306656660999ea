"""The pipeline shared by the gradient family: gradients of the target w.r.t. the input.

Every method here produces a full attribution ``(N, C, H, W)`` (kept as
``Explanation.attributions``) and a map ``(N, H, W)``: its channel reduction, chosen by
``reduce``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ...core import batching
from ...core.inputs import image_parameter
from ...core.noise import normal_noise, standard_normal
from ...core.perturb import hidden_image
from ...core.progress import Ticker
from ...core.targets import ResolvedTarget
from ...errors import InvalidParameterError
from ..base import Context, Method, MethodResult, chunk_size
from ..params import (
    BASELINE,
    BASELINE_KEYWORDS,
    INTERNAL_BATCH,
    REDUCTIONS,
    reduce_param,
)
from ..params import SEED as _SEED

__all__ = [
    "GradientMethod",
    "Attribution",
    "input_gradients",
    "reduce_channels",
    "baseline_image",
    "standard_normal",
    "normal_noise",
    "rows",
    "REDUCTIONS",
    "reduce_param",
    "BASELINE",
    "BASELINE_KEYWORDS",
    "SEED",
    "INTERNAL_BATCH",
]

SEED = replace(_SEED, help="seed of the random generator (noise, samples)")
"""The seed of the gradient methods that draw noise or samples."""


def reduce_channels(a: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce ``(N, C, H, W)`` to ``(N, H, W)`` as named by ``how`` (see :data:`REDUCTIONS`)."""
    if how == "abs_max":
        return a.abs().amax(dim=1)
    if how == "max":
        return a.amax(dim=1)
    if how == "sum":
        return a.sum(dim=1)
    if how == "abs_sum":
        return a.abs().sum(dim=1)
    if how == "mean":
        return a.mean(dim=1)
    if how == "abs_mean":
        return a.abs().mean(dim=1)
    if how == "l2":
        return a.pow(2).sum(dim=1).sqrt()
    raise InvalidParameterError(f"reduce={how!r}: choose one of {', '.join(REDUCTIONS)}")


def input_gradients(
    ctx: Context,
    x: torch.Tensor,
    target: ResolvedTarget | None,
    objective: Callable[[torch.Tensor, ResolvedTarget], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, ResolvedTarget]:
    """``d objective / d x`` for a batch, in one forward and one backward pass.

    Args:
        ctx: the call's context.
        x: inputs ``(B, C, H, W)``.
        target: resolved targets for the B inputs, or ``None`` to resolve them on this output.
        objective: ``(output, target) -> (B,)``; default: the target's score.

    Returns:
        ``(gradients, output (detached), target)``.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), ctx.many_inputs(x.shape[0]):
        output = ctx.forward(x)
        target = target or ctx.resolve(output)
        scores = objective(output, target) if objective is not None else target(output)
        (grads,) = torch.autograd.grad(scores.sum(), x)
    return grads, output.detach(), target


def baseline_image(
    ctx: Context, x: torch.Tensor, baseline: object, generator: torch.Generator
) -> torch.Tensor:
    """The reference input for ``x`` ``(N, C, H, W)``: same shape, see :data:`BASELINE`.

    'black' is the image whose pixels are 0 before normalisation (``-mean / std`` when the
    model's normalisation is known, else 0). A tensor must have ``x``'s channels and size (see
    :func:`~seethrough.core.inputs.image_parameter`); anything else raises
    ``InvalidParameterError`` naming ``baseline``.
    """
    baseline = image_parameter("baseline", baseline, x, keywords=BASELINE_KEYWORDS)
    if isinstance(baseline, str) and baseline == "black":
        if ctx.normalization is None:
            return torch.zeros_like(x)
        mean, std = (
            torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            for v in ctx.normalization
        )
        return (-mean / std).expand_as(x).clone()
    if isinstance(baseline, torch.Tensor) and baseline.dim() == 4 and baseline.shape[0] > 1:
        return baseline  # one baseline per image
    return torch.cat(
        [
            hidden_image(x[i : i + 1], baseline, generator, name="baseline")
            for i in range(x.shape[0])
        ]
    )


def auto_internal_batch(ctx: Context) -> int:
    """Inputs per forward/backward for methods that evaluate many, by the gradient policy of
    :mod:`seethrough.core.batching` (probed on CUDA; on the CPU 8 inputs of 224x224, at most 16
    smaller ones)."""
    return batching.auto_batch_size(ctx.x, batching.GRADIENT, ctx.forward)


class GradientMethod(Method):
    """Shared pipeline: attributions ``(N, C, H, W)`` from a variant, reduced to a map."""

    family = "gradient"
    needs_gradients = True
    layout_switch = True

    def chunk(self, ctx: Context) -> int:
        """Images per pass: the backward to the input keeps every activation of the network,
        so chunks follow :data:`~seethrough.core.batching.ONE_PASS_INPUT_GRADIENTS`."""
        return chunk_size(ctx.x, ctx.forward, batching.ONE_PASS_INPUT_GRADIENTS)

    def run(self, ctx: Context) -> MethodResult:
        """Attributions from :meth:`attribute`, reduced with ``reduce``."""
        a = self.attribute(ctx, None)
        raw = reduce_channels(a.attributions, self.config["reduce"])
        return ctx.result(
            raw, raw, a.output, a.target, stats=a.stats, attributions=a.attributions.detach()
        )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """Attributions of ``ctx.x`` for ``target`` (``None``: resolve on the clean output)."""
        raise NotImplementedError


@dataclass
class Attribution:
    """What a gradient method computed: attributions ``(N, C, H, W)``, the clean output, the
    targets and optional per-sample stats."""

    attributions: torch.Tensor
    output: torch.Tensor
    target: ResolvedTarget
    stats: list[dict[str, float]] | None = None


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(total)`` in steps of ``size``."""
    return [(s, min(s + size, total)) for s in range(0, total, max(1, size))]


def clean_output(
    ctx: Context, target: ResolvedTarget | None
) -> tuple[torch.Tensor, ResolvedTarget]:
    """The model's output on the clean input (in chunks, see :meth:`Context.outputs`), and the
    targets fixed against it."""
    output = ctx.outputs(ctx.x)
    return output, target or ctx.resolve(output)


def accumulate(
    ctx: Context,
    samples: int,
    batch_size: int,
    term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    copies: int = 1,
) -> torch.Tensor:
    """``total[i] = sum_k term(i, k)`` over every image ``i`` and sample ``k < samples``.

    The ``(i, k)`` pairs are evaluated ``batch_size`` at a time (``0``: chosen to fit memory):
    ``term`` receives index tensors ``i`` and ``k`` of one batch and returns ``(B, C, H, W)``,
    or ``(B, copies * C, H, W)`` where it sums several quantities at once (moments).
    Progress is reported per pair.
    """
    n = ctx.x.shape[0]
    image = torch.arange(n).repeat_interleave(samples)
    sample = torch.arange(samples).repeat(n)
    total = ctx.x.new_zeros((n, copies * ctx.x.shape[1], *ctx.x.shape[2:]))
    ticker = Ticker(ctx, n * samples)
    with ctx.many_inputs(n * samples):
        for start, stop in chunks(n * samples, batch_size or auto_internal_batch(ctx)):
            i, k = image[start:stop], sample[start:stop]
            total.index_add_(0, i.to(ctx.x.device), term(i, k))
            ticker.advance(stop - start)
    return total


def rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` for an index tensor of :func:`accumulate`, without a copy when possible.

    One index repeated (the image index of a batch of one image's samples) gives that single
    row ``(1, ...)``: use the result only where it broadcasts against the batch. Consecutive
    indices (the sample index of such a batch) give the slice ``t[first:last + 1]``, a view.
    Any other index gathers.
    """
    first, last = int(index[0]), int(index[-1])
    if first == last and bool((index == first).all()):
        return t[first : first + 1]
    if last - first == len(index) - 1 and torch.equal(index, torch.arange(first, last + 1)):
        return t[first : last + 1]
    return t[index]

"""DeepLIFT (Rescale rule) and DeepLIFT-SHAP: differences from a reference, propagated back.

The Rescale rule is applied by swapping every activation module of the model, for one call,
for a module whose forward is the activation's own and whose backward passes the DeepLIFT
multiplier instead of the derivative. The model runs on the input and its baseline stacked
``[x, x']`` in one batch, so each swapped module sees both halves and forms
``(y - y') / (x - x')`` from them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from ...core.targets import ResolvedTarget
from ...registry import register_method
from ..base import Context
from .base import (
    BASELINE,
    INTERNAL_BATCH,
    SEED,
    Attribution,
    GradientMethod,
    accumulate,
    baseline_image,
    clean_output,
    reduce_param,
)
from .guided_backprop import swap_modules
from .smoothgrad import N_SAMPLES, baseline_set

__all__ = ["DeepLift", "DeepLiftShap", "rescale_rules", "rescale_gradients", "ELEMENTWISE"]

ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
)
"""The activation modules the Rescale rule replaces (one input, one output, elementwise)."""

MAX_POOLS: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
"""The max-pooling modules, which get the max rule of :class:`_MaxRescale`."""


def _threshold(dtype: torch.dtype) -> float:
    """``|x - x'|`` below which a unit counts as unchanged and keeps its plain gradient."""
    return 10 * torch.finfo(dtype).eps


def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


class _RescaleFunction(torch.autograd.Function):
    """``y = f(x)`` on a batch ``[x, x']``; backward: the Rescale multiplier.

    The incoming gradient ``g`` of both halves is multiplied by ``(y - y') / (x - x')``, or by
    ``f'(x)`` where ``|x - x'|`` is below :func:`_threshold` (the limit of the ratio). Only the
    first half matters (the objective never reaches the second): the multiplier of the first
    half is kept, nothing else, and the backward is one multiplication.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: _Rescale) -> torch.Tensor:  # noqa: ANN001
        out = rule.fn(x)
        (dx, dy) = (a - b for a, b in (_halves(x), _halves(out)))
        unchanged = dx.abs() < _threshold(x.dtype)
        multiplier = dy.div_(dx.masked_fill_(unchanged, 1.0))
        if bool(unchanged.any()):
            multiplier = torch.where(unchanged, rule.derivative(_halves(x)[0]), multiplier)
        ctx.save_for_backward(multiplier)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        (multiplier,) = ctx.saved_tensors
        return (grad.unflatten(0, (2, -1)) * multiplier).flatten(0, 1), None


class _MaxRescaleFunction(torch.autograd.Function):
    """Max pooling on a batch ``[x, x']``; backward: a rule that keeps completeness.

    With ``y``, ``y'`` the pooled outputs of the two halves and ``z = max(y, y')``, the
    difference ``y - y'`` of each output is split into ``z - y'`` (sent to the position of the
    input's maximum) and ``y - z`` (sent to the position of the baseline's maximum): one of the
    two is 0. Each input position gets the sum ``C`` of what reaches it, so ``sum C = sum g
    (y - y')``, and its multiplier is ``C / (x - x')`` (the plain gradient where ``x = x'``).
    This is the rule Captum's DeepLift applies to max pooling; where windows overlap, the
    shares reaching one position are summed (as the gradient of max pooling sums them).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # noqa: ANN001
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            out = fn(leaf)
        ctx.graph = (leaf, out)
        return out.detach()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        leaf, out = ctx.graph
        y, y_ref = _halves(out.detach())
        g = _halves(grad)[0]
        z = torch.maximum(y, y_ref)
        (shares,) = torch.autograd.grad(
            out, leaf, torch.cat([g * (z - y_ref), g * (y - z)]), retain_graph=True
        )
        (plain,) = torch.autograd.grad(out, leaf, grad)
        a, b = _halves(shares)
        dx = _halves(leaf.detach())
        dx = dx[0] - dx[1]
        unchanged = dx.abs() < _threshold(dx.dtype)
        first, _ = _halves(plain)
        first.copy_(torch.where(unchanged, first, (a + b) / dx.masked_fill(unchanged, 1.0)))
        return plain, None


class _Rescale(nn.Module):
    """Stands in for an activation or max-pooling module during a DeepLIFT call.

    ``fn`` is the original module (a copy computing out of place where it was in place): the
    rule needs its input after the forward.
    """

    def __init__(self, original: nn.Module, rule: type[torch.autograd.Function]) -> None:
        super().__init__()
        if getattr(original, "inplace", False):
            original = copy.copy(original)
            original.inplace = False
        self.fn = original
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rule.apply(x, self if self.rule is _RescaleFunction else self.fn)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """``f'(x)`` elementwise: in closed form for the ReLUs, else by autograd."""
        if type(self.fn) is nn.ReLU:
            return (x > 0).to(x.dtype)
        if type(self.fn) is nn.ReLU6:
            return ((x > 0) & (x < 6)).to(x.dtype)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (d,) = torch.autograd.grad(self.fn(leaf).sum(), leaf)
        return d


@contextmanager
def rescale_rules(model: nn.Module) -> Iterator[int]:
    """Swap every activation module of :data:`ELEMENTWISE` for the Rescale rule and every max
    pooling module of :data:`MAX_POOLS` for the max rule; restore on exit. Yields the number
    of swapped modules.

    While active, the model must be run on batches ``[inputs, baselines]`` (two halves of equal
    size): each swapped module pairs row ``i`` with row ``i + N/2``. Activations called as
    functions (``F.relu`` in a ``forward``) are not seen and keep their plain gradient, as do
    operations that are neither linear nor listed (products such as attention, softmax): the
    completeness gap in the result's stats shows how much that costs.
    """
    swapped: dict[int, _Rescale] = {}  # a module used at several places: one stand-in

    def rule(child: nn.Module) -> nn.Module | None:
        if isinstance(child, ELEMENTWISE):
            kind: type[torch.autograd.Function] = _RescaleFunction
        elif isinstance(child, MAX_POOLS) and not getattr(child, "return_indices", False):
            kind = _MaxRescaleFunction
        else:
            return None
        if id(child) not in swapped:
            swapped[id(child)] = _Rescale(child, kind)
        return swapped[id(child)]

    with swap_modules(model, rule) as count:
        yield count


def rescale_gradients(
    ctx: Context, x: torch.Tensor, base: torch.Tensor, target: ResolvedTarget | None
) -> tuple[torch.Tensor, torch.Tensor, ResolvedTarget]:
    """DeepLIFT multipliers ``m`` of the target w.r.t. the inputs ``x`` from baselines ``base``
    (both ``(B, C, H, W)``), in one forward of the ``2B`` stacked inputs and one backward.
    :func:`rescale_rules` must be active.

    Returns:
        ``(m, outputs of [x, base] (detached, 2B rows), target)``; the target is resolved on
        the outputs of ``x`` when ``None``.
    """
    n = x.shape[0]
    batch = torch.cat([x, base]).detach().requires_grad_(True)
    with torch.enable_grad(), ctx.many_inputs(2 * n):
        out = ctx.forward(batch)
        target = target or ctx.resolve(out[:n].detach())
        (grads,) = torch.autograd.grad(target(out[:n]).sum(), batch)
    return grads[:n], out.detach(), target


def _gap_stats(attributions: torch.Tensor, delta: torch.Tensor) -> list[dict[str, float]]:
    gap = (attributions.flatten(1).sum(1) - delta).abs()
    return [
        {"completeness_gap": float(g), "delta": float(d)} for g, d in zip(gap, delta, strict=True)
    ]


@register_method
class DeepLift(GradientMethod):
    """DeepLIFT with the Rescale rule: contributions of the input's difference from a baseline.

    Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating Activation
    Differences", ICML 2017. For a baseline ``x'``, each unit's difference ``dx = x - x'`` is
    passed on with a multiplier: linear layers (convolutions, batch norm in eval mode,
    average pooling, sums) keep their weights, each activation ``y = f(x)`` gets the Rescale
    multiplier, and the multipliers chain as gradients do::

        m = (f(x) - f(x')) / (x - x')      (f'(x) where x = x')
        a = (x - x') * m_{x -> y_c}

    so that ``sum(a) = y_c(x) - y_c(x')`` (summation to delta). Max pooling splits each output's
    difference between the two maxima (see :class:`_MaxRescaleFunction`, as Captum does).
    Activations must be modules (see :func:`rescale_rules`); the gap
    ``|sum(a) - (y_c(x) - y_c(x'))|`` is reported in ``.stats["completeness_gap"]``, with
    ``delta``. On a ReLU network without biases and a zero baseline it equals input x gradient.
    One forward and one backward pass of the input and baseline stacked.

    Sanity: it passes the cascading randomization check (its maps decorrelate as the layers
    are randomised from the output down).
    """

    name = "deeplift"
    title = "DeepLIFT"
    rank = 45
    swaps_modules = True
    paper = "Shrikumar et al., ICML 2017"
    params = (reduce_param("sum"), BASELINE, SEED)

    def chunk(self, ctx: Context) -> int:
        """Half the images of a plain gradient pass: each runs with its baseline."""
        return max(1, super().chunk(ctx) // 2)

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """The multipliers of the stacked input and baseline, times their difference."""
        p = self.config
        x = ctx.x
        base = baseline_image(ctx, x, p["baseline"], torch.Generator().manual_seed(p["seed"]))
        with rescale_rules(ctx.model):
            grads, out, target = rescale_gradients(ctx, x, base, target)
        n = x.shape[0]
        attributions = grads.mul_(x - base)
        delta = target(out[:n]) - target(out[n:])
        return Attribution(attributions, out[:n], target, _gap_stats(attributions, delta))


@register_method
class DeepLiftShap(GradientMethod):
    """DeepLIFT averaged over a distribution of baselines.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017
    (section 4.2, Deep SHAP); Shrikumar et al., ICML 2017. With baselines ``x'_k`` drawn from
    the ``baseline`` distribution::

        a = 1/n sum_k DeepLIFT(x; x'_k)

    so ``sum(a) = y_c(x) - 1/n sum_k y_c(x'_k)`` (gap and delta in ``.stats``). The
    distribution is ``n_samples`` noise images for ``"noise"``; for a set of images whose
    count differs from the batch's, every image of the set when it holds at most ``n_samples``
    of them (the exact mean), else ``n_samples`` of them drawn without replacement; any single
    baseline (``"black"``, a number, ...) makes it DeepLIFT. The seed fixes the draws. Pairs of
    an image and a baseline run ``batch_size`` at a time.

    Sanity: as DeepLIFT, it passes the cascading randomization check.
    """

    name = "deeplift_shap"
    title = "DeepLIFT SHAP"
    rank = 46
    swaps_modules = True
    reports_progress = True  # per batch of (image, baseline) pairs
    paper = "Lundberg & Lee, NeurIPS 2017; Shrikumar et al., ICML 2017"
    params = (
        reduce_param("sum"),
        replace(
            BASELINE,
            default="noise",
            help=BASELINE.help + "; a set of images is a distribution to draw from",
        ),
        replace(N_SAMPLES, default=16, help="baselines drawn per image"),
        INTERNAL_BATCH,
        SEED,
    )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """DeepLIFT of every (image, baseline) pair in batches, averaged per image."""
        p = self.config
        x, n = ctx.x, ctx.x.shape[0]
        generator = torch.Generator().manual_seed(p["seed"])
        baselines = baseline_set(ctx, p["baseline"], p["n_samples"], generator)
        noise = isinstance(p["baseline"], str) and p["baseline"] == "noise"
        if len(baselines) == n and not noise:  # one baseline per image: DeepLIFT
            pick = None
            m = 1
        elif len(baselines) <= p["n_samples"]:
            pick = torch.arange(len(baselines))
            m = len(baselines)
        else:
            pick = torch.randperm(len(baselines), generator=generator)[: p["n_samples"]]
            m = p["n_samples"]
        output, target = clean_output(ctx, target)
        reference = x.new_zeros(n)

        def term(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            xi = x[i.to(x.device)]
            b = baselines[i.to(x.device)] if pick is None else baselines[pick[k].to(x.device)]
            sub_target = target.select(i.tolist())
            grads, out, _ = rescale_gradients(ctx, xi, b, sub_target)
            reference.index_add_(0, i.to(x.device), sub_target(out[len(i) :]))
            return grads.mul_(xi - b)

        with rescale_rules(ctx.model):
            attributions = accumulate(ctx, m, p["batch_size"], term) / m
        delta = target(output) - reference / m
        return Attribution(attributions, output, target, _gap_stats(attributions, delta))

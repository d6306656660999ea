"""Layer-wise relevance propagation with named composites of rules."""

from __future__ import annotations

import torch

from ...core.targets import ResolvedTarget
from ...errors import MethodNotApplicableError
from ...registry import Param, register_method
from ..base import Context
from ._lrp_rules import (
    AlphaBeta,
    Composite,
    Epsilon,
    Flat,
    Gamma,
    RelevanceMode,
    ZBox,
    ZPlus,
)
from .base import Attribution, GradientMethod, reduce_param

__all__ = ["LRP", "COMPOSITES", "composite", "box_bounds"]

COMPOSITES = (
    "epsilon",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_plus_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "epsilon_gamma_box",
    "z_plus",
)
"""The composites :class:`LRP` knows (see its docstring for the rules of each)."""


def composite(name: str, epsilon: float, low: torch.Tensor, high: torch.Tensor) -> Composite:
    """The composite called ``name`` (one of :data:`COMPOSITES`), with ``epsilon`` for the
    epsilon rule and the bounds ``low``/``high`` of the input for the box rule."""
    eps = Epsilon(epsilon)
    box = ZBox(low, high)
    table = {
        "epsilon": Composite(conv=eps, linear=eps),
        "z_plus": Composite(conv=ZPlus(), linear=ZPlus()),
        "epsilon_plus": Composite(conv=ZPlus(), linear=eps),
        "epsilon_plus_flat": Composite(conv=ZPlus(), linear=eps, first=Flat()),
        "epsilon_plus_box": Composite(conv=ZPlus(), linear=eps, first=box),
        "epsilon_alpha2_beta1": Composite(conv=AlphaBeta(2.0, 1.0), linear=eps),
        "epsilon_alpha2_beta1_flat": Composite(conv=AlphaBeta(2.0, 1.0), linear=eps, first=Flat()),
        "epsilon_gamma_box": Composite(conv=Gamma(0.25), linear=eps, first=box),
    }
    return table[name]


def box_bounds(ctx: Context, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest value of each input channel, ``(N or 1, C, 1, 1)`` each: pixel
    values 0 and 1 through the model's normalisation ``(v - mean) / std`` when it is known,
    else each image's own minimum and maximum per channel."""
    if ctx.normalization is None or x.dim() != 4:
        dims = tuple(range(2, x.dim()))
        return x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in ctx.normalization)
    shape = (1, -1, 1, 1)
    mean, std = mean.view(shape), std.view(shape)
    return (0 - mean) / std, (1 - mean) / std


@register_method
class LRP(GradientMethod):
    """Layer-wise relevance propagation: the target's score redistributed layer by layer.

    Bach et al., "On pixel-wise explanations for non-linear classifier decisions by layer-wise
    relevance propagation", PLoS ONE 2015; Montavon et al., "Layer-wise relevance propagation:
    an overview", 2019. The relevance of the output is the target's score (for a class: its
    logit, 0 elsewhere); each layer ``z_k = sum_j x_j w_jk + b_k`` passes the relevance ``R_k``
    of its outputs to its inputs by a rule (``s = R / z``, ``stab`` the stabiliser ``1e-6``)::

        epsilon   R_j = x_j sum_k w_jk R_k / (z_k + eps sign z_k)
        z+        R_j = x+_j sum_k w+_jk R_k / z+_k  (+ x-_j w-_jk: inputs of either sign)
        alpha2b1  R_j = 2 (positive contributions' share) - 1 (negative contributions' share)
        gamma     R_j = sum_k x_j (w_jk + 0.25 w+_jk) R_k / sum_j' x_j' (w_j'k + 0.25 w+_j'k)
        z^B       R_j = sum_k (x_j w_jk - l_j w+_jk - h_j w-_jk) R_k / z^B_k   (first layer)
        flat      R_j = sum_k R_k / |receptive field of k|                     (first layer)

    A composite names the rule of each layer, as Zennit (Anders et al. 2021) and Montavon et al.
    define them: ``epsilon`` (epsilon everywhere; ``epsilon -> 0`` is LRP-0, equal to gradient
    x input on a ReLU network, biases or not), ``z_plus`` (z+ everywhere), ``epsilon_plus`` (z+
    for convolutions, epsilon for linear layers), ``epsilon_alpha2_beta1`` (alpha=2, beta=1
    for convolutions), ``..._flat`` (the first layer flat), ``epsilon_plus_box`` and
    ``epsilon_gamma_box`` (the first layer z^B, with the bounds ``l``, ``h`` of the input:
    pixels 0 and 1 through the model's normalisation, or without one each image's own minimum
    and maximum per channel; gamma=0.25 for the other convolutions).

    Canonization, for the call only (the model is never changed): a batch norm after a
    convolution or linear layer is merged into it; residual sums split relevance in proportion
    to their summands; average pooling and means split it in proportion to their inputs; ReLU,
    ReLU6, dropout and reshapes pass it unchanged; max pooling gives it to the winner. Any other
    operation on the activations (attention, softmax, layer norm, GELU, products of
    activations, a batch norm not after a layer) raises ``MethodNotApplicableError``.

    ``stats["relevance_sum"]`` is the total relevance reaching the input: the target's score
    where every rule conserves relevance, less what biases, epsilon and stabilisers absorb.

    One forward and one backward pass: a rule costs the layer's transposed convolution (the
    gradient's own) plus, for z+, the positive weights' forward (two where the layer's input
    has both signs), for alpha-beta that and one more transposed convolution (three where the
    input has both signs), for gamma and the box a few more: the arithmetic floor that
    ``benchmarks/lrp_speed.py`` measures beside the method.

    Sanity (Adebayo et al. 2018, cascading randomisation, ResNet18 with random weights,
    layers re-initialised from ``fc`` down to ``conv1``): ``epsilon`` decorrelates as gradient
    x input does (Spearman 0.13 after the head, 0.03 at the end); the z+ composites
    (``epsilon_plus``, ``epsilon_plus_flat``, ``z_plus``) do not (above 0.92 at every step) and
    ``epsilon_alpha2_beta1`` barely (0.77 at the end, guided backprop 0.67): their maps depend
    little on the upper layers' weights, as Sixt et al. (ICML 2020) show for z+ and
    alpha-beta.
    """

    name = "lrp"
    title = "LRP"
    rank = 70
    paper = "Bach et al., PLoS ONE 2015; Montavon et al., 2019"
    params = (
        Param(
            "composite",
            "epsilon_plus",
            "the rules per layer: " + ", ".join(COMPOSITES),
            str,
            choices=COMPOSITES,
        ),
        Param(
            "epsilon",
            1e-6,
            "epsilon of the epsilon rule (larger values absorb weak or contradictory relevance)",
            float,
            min=0.0,
        ),
        reduce_param("sum"),
    )

    def attribute(self, ctx: Context, target: ResolvedTarget | None) -> Attribution:
        """One forward with the rules in place and one backward of the relevance."""
        model = ctx.model
        if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
            raise MethodNotApplicableError(
                "LRP needs to see the model's operations, which a TorchScript model hides: load "
                "its weights with its architecture (--arch)"
            )
        x = ctx.x.detach().requires_grad_(True)
        low, high = box_bounds(ctx, ctx.x)
        rules = composite(self.config["composite"], self.config["epsilon"], low, high)
        mode = RelevanceMode(rules)
        with torch.enable_grad(), ctx.many_inputs(x.shape[0]):
            with mode:
                output = ctx.forward(x)
            target = target or ctx.resolve(output.detach())
            scores = target(output)
            if mode.layers == 0 or not scores.requires_grad:
                raise MethodNotApplicableError(
                    "LRP found no convolution or linear layer on the way from the input to the "
                    "target"
                )
            (relevance,) = torch.autograd.grad(scores, x, scores.detach())
        totals = relevance.flatten(1).sum(1).tolist()
        stats = [{"relevance_sum": total} for total in totals]
        return Attribution(relevance, output.detach(), target, stats)

"""Attention rollout for vision transformers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ...core.layers import named_modules
from ...core.tokens import prefix_and_grid
from ...errors import MethodNotApplicableError
from ...registry import Param, register_method
from ..base import Context, Method, MethodResult

__all__ = ["AttentionRollout", "rollout", "attention_modules"]


def attention_modules(
    model: nn.Module, named: dict[str, nn.Module] | None = None
) -> dict[str, nn.Module]:
    """timm-style attention modules (they apply ``attn_drop`` to the attention probabilities);
    ``named``: ``dict(model.named_modules())`` if the caller has it already."""
    found = {
        name: m
        for name, m in (named or named_modules(model)).items()
        if isinstance(getattr(m, "attn_drop", None), nn.Module) and hasattr(m, "qkv")
    }
    if not found:
        raise MethodNotApplicableError(
            "the attention methods (rollout, LeGrad, attention heads) need timm "
            "vision-transformer attention modules (ViT, DeiT, ...); this model has none"
        )
    return found


@contextmanager
def explicit_attention(modules: dict[str, nn.Module]) -> Iterator[None]:
    """Turn off fused attention kernels for the call, so the probabilities pass ``attn_drop``."""
    saved = {name: getattr(m, "fused_attn", None) for name, m in modules.items()}
    try:
        for m in modules.values():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        yield
    finally:
        for name, m in modules.items():
            if saved[name] is not None:
                m.fused_attn = saved[name]


def rollout(attentions: list[torch.Tensor], head_fusion: str, discard_ratio: float) -> torch.Tensor:
    """Roll out per-layer attention ``(N, heads, L, L)`` into token relevance ``(N, L, L)``.

    Per layer: fuse the heads, set the ``discard_ratio`` weakest attentions of each sample to
    zero (never the class token's attention to itself), add the residual path and
    renormalise the rows, ``A' = norm((A + I) / 2)``; then multiply the layers from the first up.
    """
    result = None
    for a in attentions:
        fused = {"mean": a.mean(dim=1), "max": a.amax(dim=1), "min": a.amin(dim=1)}[head_fusion]
        n, length, _ = fused.shape
        if discard_ratio > 0:
            flat = fused.reshape(n, -1).clone()
            drop = int(flat.shape[1] * discard_ratio)
            weakest = flat.topk(drop, dim=1, largest=False).indices
            keep_self = weakest != 0
            flat.scatter_(1, weakest, flat.gather(1, weakest) * ~keep_self)
            fused = flat.reshape(n, length, length)
        eye = torch.eye(length, dtype=fused.dtype, device=fused.device)
        layer = (fused + eye) / 2
        layer = layer / layer.sum(dim=-1, keepdim=True)
        result = layer if result is None else layer @ result
    return result


@register_method
class AttentionRollout(Method):
    """How much each patch flows into the class token through all attention layers.

    Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020. With ``A_l`` the
    head-fused attention of layer ``l`` (``head_fusion``: mean, max or min over heads), after
    discarding its weakest ``discard_ratio`` entries::

        R = prod_l norm((A_l + I) / 2)       (l from the last layer down to the first)
        map = R[class token, patch tokens]   (folded into the patch grid)

    A model without a class token (average-pooled tokens) gets the mean of all rows of ``R``.

    Class-agnostic (the target's score is still reported). Works with timm vision
    transformers, whose fused attention kernels are switched off for the call.
    """

    name = "attention_rollout"
    title = "Attention rollout"
    rank = 10
    family = "attention"
    paper = "Abnar & Zuidema, ACL 2020"
    needs_gradients = False
    class_specific = False
    params = (
        Param(
            "head_fusion",
            "mean",
            "how heads are fused: mean, max or min",
            str,
            choices=("mean", "max", "min"),
        ),
        Param(
            "discard_ratio",
            0.9,
            "fraction of the weakest attentions dropped per layer",
            float,
            min=0.0,
            max=0.99,
        ),
    )

    def run(self, ctx: Context) -> MethodResult:
        """One forward recording every layer's attention probabilities; roll them out."""
        modules = attention_modules(ctx.model, ctx.named_modules)
        drops = {name: m.attn_drop for name, m in modules.items()}
        with explicit_attention(modules), ctx.runner.record(drops) as rec, torch.no_grad():
            output = ctx.forward(ctx.x)
        target = ctx.resolve(output)
        attentions = [rec.output(name).double() for name in drops]
        relevance = rollout(attentions, self.config["head_fusion"], self.config["discard_ratio"])
        prefix, (h, w) = prefix_and_grid(ctx.model, relevance.shape[-1])
        # the class token's row; a model without one pools all tokens, so their rows are averaged
        rows = relevance[:, 0, prefix:] if prefix > 0 else relevance.mean(dim=1)
        maps = rows.reshape(-1, h, w).to(ctx.x.dtype)
        return ctx.result(maps, maps, output, target)

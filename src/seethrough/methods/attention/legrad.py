"""LeGrad and the per-head attention view for vision transformers."""

from __future__ import annotations

import torch
from torch import nn

from ...core.tokens import prefix_and_grid
from ...errors import InvalidParameterError, MethodNotApplicableError
from ...registry import Param, register_method
from ..base import Context, Method, MethodResult
from .rollout import attention_modules, explicit_attention

__all__ = ["LeGrad", "AttentionHeads", "patch_maps"]


def patch_maps(rows: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Per-key values ``(..., L)`` over all tokens to patch maps ``(..., h, w)`` (prefix keys,
    such as the class token, dropped)."""
    prefix, (h, w) = prefix_and_grid(model, rows.shape[-1])
    return rows[..., prefix:].reshape(*rows.shape[:-1], h, w)


@register_method
class LeGrad(Method):
    """Positive gradients of each layer's prediction with respect to its attention maps.

    Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature
    Formation Sensitivity", 2024. With ``A^l`` the attention probabilities of block ``l``
    ``(heads, L, L)`` and ``s^l`` the target's score predicted from the tokens leaving block
    ``l`` (the model's final norm and head applied to them, as the paper's layer-wise
    predictions; ``score="output"``: the model's own output score for every layer)::

        E^l[k] = mean_{heads, queries q} ReLU(d s^l / d A^l[h, q, k])
        map = mean_l E^l                   (patch keys k folded into the grid)

    Over the last ``layers`` blocks (0: all). Not scaled to [0, 1] (``raw`` = ``map``). One
    forward and one backward per layer; timm vision transformers (fused attention switched off
    for the call).
    """

    name = "legrad"
    title = "LeGrad"
    rank = 20
    family = "attention"
    paper = "Bousselham et al., 2024 (arXiv 2404.03214)"
    params = (
        Param("layers", 0, "use the last this many blocks (0: all)", int, min=0),
        Param(
            "score",
            "layer",
            "what each layer explains: 'layer' (its own prediction through the model's final "
            "norm and head, as the paper) or 'output' (the model's output score)",
            str,
            choices=("layer", "output"),
        ),
    )

    def run(self, ctx: Context) -> MethodResult:
        """One forward recording attentions (and block outputs); one backward per layer."""
        model = ctx.model
        modules = attention_modules(model, ctx.named_modules)
        names = list(modules)[-self.config["layers"] :] if self.config["layers"] else list(modules)
        drops = {name: modules[name].attn_drop for name in names}
        blocks = {name: ctx.named_modules[name.rpartition(".")[0]] for name in names}
        per_layer = self.config["score"] == "layer"
        vit = _with_head(ctx.named_modules) if per_layer else None
        first = next(iter(drops.values()))
        recorded = {**{f"attn:{n}": m for n, m in drops.items()}}
        if per_layer:
            recorded |= {f"block:{n}": blocks[n] for n in names}
        with (
            explicit_attention(modules),
            ctx.runner.graph_from(first),
            ctx.runner.record(recorded) as rec,
            torch.enable_grad(),
        ):
            output = ctx.forward(ctx.x)
            target = ctx.resolve(output)
            total = None
            for i, name in enumerate(names):
                if per_layer:
                    tokens = rec.output(f"block:{name}")
                    score = target(vit.forward_head(vit.norm(tokens)))
                else:
                    score = target(output)
                (grad,) = torch.autograd.grad(
                    score.sum(), rec.output(f"attn:{name}"), retain_graph=i < len(names) - 1
                )
                e = torch.relu(grad).mean(dim=(1, 2))  # (N, L) over heads and queries
                total = e if total is None else total + e
        maps = patch_maps(total.detach() / len(names), model).to(ctx.x.dtype)
        return ctx.result(maps, maps, output.detach(), target)


def _with_head(named: dict[str, nn.Module]) -> nn.Module:
    """The outermost module with timm's final ``norm`` and ``forward_head`` (the model, or the
    transformer inside a wrapper)."""
    for module in named.values():
        if isinstance(getattr(module, "norm", None), nn.Module) and callable(
            getattr(module, "forward_head", None)
        ):
            return module
    raise MethodNotApplicableError(
        "legrad with score='layer' needs the transformer's final norm and head (timm's norm "
        "and forward_head): use score='output'"
    )


@register_method
class AttentionHeads(Method):
    """What each attention head of one block looks at: the class token's attention to the
    patches, head by head.

    For block ``block`` with attention probabilities ``A`` ``(heads, L, L)`` (softmax rows)::

        map_h = A[h, class token, patches]     (folded into the patch grid)
        map = map_head                          (head = -1: mean over heads)

    ``extras["heads"]`` holds every head's map ``(heads, h, w)``, for a grid of heads. A model
    without a class token gets each head's attention averaged over all query tokens. Reads
    one layer of attention (Abnar & Zuidema, ACL 2020, and Voita et al., ACL 2019, look at
    heads one by one); class-agnostic, one forward pass.
    """

    name = "attention_heads"
    title = "Attention heads"
    rank = 30
    family = "attention"
    paper = "Voita et al., ACL 2019"
    needs_gradients = False
    class_specific = False
    params = (
        Param("block", -1, "which transformer block (0 first, -1 last)", int),
        Param("head", -1, "which head the map shows (-1: their mean)", int, min=-1),
    )

    def run(self, ctx: Context) -> MethodResult:
        """One forward recording the block's attention probabilities."""
        modules = attention_modules(ctx.model, ctx.named_modules)
        names = list(modules)
        block, head = self.config["block"], self.config["head"]
        if not -len(names) <= block < len(names):
            raise InvalidParameterError(
                f"block={block}: this model has {len(names)} attention blocks "
                f"(0 to {len(names) - 1}, or -1 for the last)"
            )
        name = names[block]
        drop = {name: modules[name].attn_drop}
        with explicit_attention(modules), ctx.runner.record(drop) as rec, torch.no_grad():
            output = ctx.forward(ctx.x)
        target = ctx.resolve(output)
        attn = rec.output(name)  # (N, heads, L, L)
        if head >= attn.shape[1]:
            raise InvalidParameterError(
                f"head={head}: block {block} has {attn.shape[1]} heads (0 to {attn.shape[1] - 1})"
            )
        prefix, _ = prefix_and_grid(ctx.model, attn.shape[-1])
        rows = attn[:, :, 0] if prefix > 0 else attn.mean(dim=2)  # (N, heads, L)
        heads = patch_maps(rows, ctx.model).to(ctx.x.dtype)
        maps = heads.mean(dim=1) if head < 0 else heads[:, head]
        return ctx.result(maps, maps, output, target, heads=heads)

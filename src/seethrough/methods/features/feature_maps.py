"""Feature maps: the channels of a layer that respond most to the image."""

from __future__ import annotations

import torch

from ...core.tokens import tokens_to_map
from ...registry import Param, register_method
from ..base import Context, Method, MethodResult

__all__ = ["FeatureMaps"]


@register_method
class FeatureMaps(Method):
    """The most activated channels of a layer, and their sum.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014 (their
    layer visualisation shows the strongest feature maps of a layer for an image). With ``A``
    ``(C, h, w)`` the layer's activations::

        raw = map = sum_c A_c                       (the channel-sum map)
        score_c = mean_ij A_c[i, j]   (rank_by="mean")   or   max_ij A_c[i, j]   (rank_by="max")

    Extras: ``channels`` (top_k, h, w), the maps of the ``top_k`` channels with the highest
    score, best first; ``channel_indices`` (top_k,); ``channel_scores`` (top_k,). One forward
    pass, no gradient; the map does not depend on the target (whose score is still reported).
    """

    name = "feature_maps"
    title = "Feature maps"
    rank = 10
    family = "features"
    paper = "Zeiler & Fergus, ECCV 2014 (layer visualisation)"
    needs_gradients = False
    needs_layer = True
    class_specific = False
    params = (
        Param("top_k", 16, "number of channels shown (the most activated ones)", int, min=1),
        Param("rank_by", "mean", "channel score: 'mean' or 'max' activation", str, ("mean", "max")),
    )

    def run(self, ctx: Context) -> MethodResult:
        """One forward recording the layer; rank its channels."""
        with ctx.runner.record({str(ctx.layer): ctx.layer_module}) as rec, torch.no_grad():
            output = ctx.forward(ctx.x)
        target = ctx.resolve(output)
        acts = tokens_to_map(rec.output(str(ctx.layer)).detach(), ctx.model, ctx.layer)
        n, c, h, w = acts.shape
        flat = acts.reshape(n, c, h * w)
        score = flat.mean(dim=2) if self.config["rank_by"] == "mean" else flat.amax(dim=2)
        scores, indices = score.topk(min(self.config["top_k"], c), dim=1)
        channels = acts.gather(1, indices[:, :, None, None].expand(-1, -1, h, w))
        raw = acts.sum(dim=1)
        return ctx.result(
            raw,
            raw,
            output,
            target,
            channels=channels,
            channel_indices=indices,
            channel_scores=scores,
        )

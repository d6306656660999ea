"""Deep Feature Factorization: the concepts of a layer, found by NMF of its activations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.heads import gap_linear_head, linear_modules
from ...core.tokens import tokens_to_map
from ...registry import Param, register_method
from ..base import Context, Method, MethodResult
from .nmf import EPS, nmf_batched, relative_error

__all__ = ["DeepFeatureFactorization", "Concepts", "factorize"]


@dataclass
class Concepts:
    """K concepts of N images' activations ``A`` ``(N, C, h, w)``.

    Attributes:
        heatmaps: ``W`` reshaped ``(N, K, h, w)``, each concept's maximum scaled to 1 (over one
            image, or over all images when the factorization is joint).
        embeddings: ``H`` ``(N, K, C)``, scaled by the same factors so ``W H`` is unchanged:
            ``H_k`` is the activation vector of a pixel made only of concept ``k``.
        errors: relative reconstruction error ``||V - W H||_F / ||V||_F`` per image ``(N,)``.
    """

    heatmaps: torch.Tensor
    embeddings: torch.Tensor
    errors: torch.Tensor


def factorize(acts: torch.Tensor, k: int, n_iter: int, joint: bool) -> Concepts:
    """NMF of each image's ``V = A^T`` ``(h*w, C)``, or one NMF of all images' rows stacked.

    Concepts are ordered by their share of the reconstruction ``sum(W_k) * ||H_k||``, largest
    first. Negative activations are clamped to 0.
    """
    n, c, h, w = acts.shape
    v = acts.detach().double().clamp_min(0).reshape(n, c, h * w).mT  # (N, hw, C)
    stacked = v.reshape(1, n * h * w, c) if joint else v
    wk, hk, _ = nmf_batched(stacked, k, n_iter)
    wk = wk.reshape(n, h * w, k)
    peak = wk.amax(dim=(0, 1) if joint else 1, keepdim=True).clamp_min(EPS)  # (N or 1, 1, K)
    wk, hk = wk / peak, hk * peak.mT
    hk = hk.expand(n, k, c)
    share = (
        wk.sum(dim=(0, 1) if joint else 1, keepdim=True)
        * torch.linalg.vector_norm(hk, dim=2)[:, None]
    )
    order = share.argsort(dim=2, descending=True, stable=True)  # (N, 1, K)
    wk = wk.gather(2, order.expand(n, h * w, k))
    hk = hk.gather(1, order.mT.expand(n, k, c))
    errors = relative_error(v, wk, hk)
    heatmaps = wk.mT.reshape(n, k, h, w)
    return Concepts(heatmaps.to(acts.dtype), hk.to(acts.dtype), errors.to(acts.dtype))


@register_method
class DeepFeatureFactorization(Method):
    """Concepts of a layer: non-negative factors of its activations, and the classes they evoke.

    Collins, Achanta & Süsstrunk, "Deep Feature Factorization for Concept Discovery", ECCV
    2018. The activations ``A`` ``(C, h, w)`` of the layer, as ``V`` ``(h*w, C)``, are factorized
    by NMF (:mod:`.nmf`) into ``K`` concepts::

        V ~ W H,   W >= 0 (h*w, K) concept heatmaps,   H >= 0 (K, C) concept embeddings
        raw = map = max_k W_k / max(W_k)          (the strongest concept at each pixel)

    NMF needs ``V >= 0``: negative values are clamped to 0, so pick a layer after a ReLU (the
    default, the last spatial layer, usually is). With ``joint=True`` one factorization of all
    images' activations stacked gives concepts shared by the batch (same ``H``; each image has
    its own heatmaps): what in this picture is the same as in the others.

    When the layer feeds global average pooling and a linear head (checked on the forward),
    each concept is classified as an image made only of it: ``softmax(head(H_k))``, with ``W_k``
    scaled to a maximum of 1. Extras: ``concepts`` (K, h, w), ``concept_embeddings`` (K, C) and,
    with a head, ``concept_classes`` / ``concept_scores`` (K, top_k) and ``concept_labels``
    (when the model has labels); stats: ``reconstruction_error`` ``||V - W H||_F / ||V||_F``.
    The map does not depend on the target (whose score is still reported).
    """

    name = "dff"
    title = "Deep Feature Factorization"
    rank = 10
    family = "concepts"
    paper = "Collins, Achanta & Süsstrunk, ECCV 2018"
    needs_gradients = False
    needs_layer = True
    class_specific = False
    params = (
        Param("n_concepts", 5, "number of concepts K (NMF rank)", int, min=1),
        Param("n_iter", 200, "maximum number of NMF multiplicative updates", int, min=1),
        Param(
            "joint", False, "one factorization of all images: concepts shared by the batch", bool
        ),
        Param("top_k", 3, "classes reported per concept (needs a GAP + linear head)", int, min=1),
    )

    def chunk(self, ctx: Context) -> int:
        """A joint factorization needs every image at once; else images go in chunks."""
        return ctx.x.shape[0] if self.config["joint"] else super().chunk(ctx)

    def run(self, ctx: Context) -> MethodResult:
        """One forward recording the layer and the linear layers' inputs, then NMF."""
        with ctx.runner.record(
            {**linear_modules(ctx.named_modules), ctx.layer: ctx.layer_module}, inputs=True
        ) as rec:
            with torch.no_grad():
                output = ctx.forward(ctx.x)
            target = ctx.resolve(output)
        acts = tokens_to_map(rec.output(ctx.layer).detach(), ctx.model, ctx.layer)
        concepts = factorize(
            acts, self.config["n_concepts"], self.config["n_iter"], self.config["joint"]
        )
        raw = concepts.heatmaps.amax(dim=1)
        extras: dict[str, torch.Tensor | list[np.ndarray]] = {
            "concepts": concepts.heatmaps,
            "concept_embeddings": concepts.embeddings,
        }
        head = gap_linear_head(rec, acts, output)
        if head is not None:
            extras.update(self._classify(ctx, head, concepts.embeddings))
        stats = [{"reconstruction_error": float(e)} for e in concepts.errors]
        return ctx.result(raw, raw, output, target, stats=stats, **extras)

    def _classify(
        self, ctx: Context, head: nn.Linear, embeddings: torch.Tensor
    ) -> dict[str, torch.Tensor | list[np.ndarray]]:
        """Top classes of each concept: ``softmax(head(H_k))``."""
        w = head.weight.detach()
        b = None if head.bias is None else head.bias.detach()
        probs = F.linear(embeddings.to(w.dtype), w, b).float().softmax(dim=-1)
        scores, classes = probs.topk(min(self.config["top_k"], probs.shape[-1]), dim=-1)
        out: dict[str, torch.Tensor | list[np.ndarray]] = {
            "concept_classes": classes,
            "concept_scores": scores,
        }
        if ctx.labels is not None:
            labels = list(ctx.labels)

            def name(c: int) -> str:
                return str(labels[c]) if c < len(labels) else f"class {c}"

            rows = classes.tolist()  # (N, K, top_k): a few names, not pixels
            out["concept_labels"] = [np.array([[name(c) for c in r] for r in img]) for img in rows]
        return out

"""The CAM pipeline shared by every class-activation-map variant.

For a layer with activations ``A`` of shape (C, h, w) and a target score ``y``, every variant
computes ``raw = sum_c w_c * A_c`` (or an element-wise variant of it), then ``map = ReLU(raw)``.
A variant only says how the weights (or the element-wise combination) are obtained.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ...core.hooks import Recorder
from ...core.runner import graph_from
from ...core.targets import ResolvedTarget
from ...core.tokens import tokens_to_map
from ...errors import MethodNotApplicableError
from ..base import RELU, Context, Method, MethodResult, chunk_size

__all__ = ["CAMMethod", "CAMState", "graph_from"]


def _unreachable(layer: str | None) -> MethodNotApplicableError:
    return MethodNotApplicableError(
        f"the target score does not depend on layer '{layer}': pick a layer on its path"
    )


@dataclass
class CAMState:
    """What a CAM variant gets to compute its weights.

    Attributes:
        ctx: the call's context (model, preprocessed input, layer).
        activations: ``A`` at the layer, detached ``(N, C, h, w)``.
        gradients: ``dy/dA`` ``(N, C, h, w)``, or ``None`` for gradient-free variants.
        scores: the target scores ``y`` ``(N,)``.
        target: the resolved targets.
        recorder: the recorder of the forward pass (for variants that record more modules).
        output: the model's output on the input, detached.
    """

    ctx: Context
    activations: torch.Tensor
    gradients: torch.Tensor | None
    scores: torch.Tensor
    target: ResolvedTarget
    recorder: Recorder
    output: torch.Tensor


class CAMMethod(Method):
    """Shared pipeline: one forward (and one backward to the layer), weights, weighted sum, ReLU."""

    family = "cam"
    needs_layer = True
    layout_switch = True
    params = (RELU,)
    record_inputs = False  # variants that also need the inputs of recorded modules set this
    clean_gradients = True  # False: a gradient variant that needs no gradients of the clean pass

    @property
    def clean_backward(self) -> bool:
        """Whether the clean pass takes a backward to the layer (the gradients of its input)."""
        return self.needs_gradients and self.clean_gradients

    def chunk(self, ctx: Context) -> int:
        """Images per :meth:`run`: where rows share inputs (:attr:`Context.shared_rows`) and the
        distinct inputs fit in one pass, the whole batch (one forward per distinct input)."""
        distinct = ctx.distinct_rows() if self.clean_backward else None
        if distinct is not None:
            first = distinct[0]
            if chunk_size(ctx.x[first], ctx.forward) >= len(first):
                return ctx.x.shape[0]
        return super().chunk(ctx)

    def run(self, ctx: Context) -> MethodResult:
        """One forward (+ one backward to the layer when gradients are needed), then combine.

        The input never requires gradients: with gradients the autograd graph starts at the
        layer's output (:meth:`~seethrough.core.runner.ModelRunner.graph_from`), so the activations before the layer are freed as
        the forward goes, as without gradients, and the backward stops at the layer.

        Rows that share an input (:attr:`Context.shared_rows`, k targets of one image) share
        its forward: with gradients, each distinct input runs once and each row takes its own
        backward from its score to the layer (``torch.autograd.grad`` with the graph retained),
        so k targets of one image cost one forward and k backwards, with the same result as k
        calls.
        """
        grads_needed = self.clean_backward
        distinct = ctx.distinct_rows() if grads_needed else None
        x = ctx.x if distinct is None else ctx.x[distinct[0]]
        with (
            ctx.runner.graph_from(ctx.layer_module) if grads_needed else nullcontext(),
            ctx.runner.record(self.recorded_modules(ctx), inputs=self.record_inputs) as rec,
            torch.set_grad_enabled(grads_needed),
            ctx.many_inputs(x.shape[0]),
        ):
            output = ctx.forward(x)
            inverse = None if distinct is None else distinct[1]
            if inverse is not None:  # row i's output is its input's
                output = output.index_select(0, torch.tensor(inverse, device=output.device))
            target = ctx.resolve(output)
            scores = target(output)
            acts = rec.output(ctx.layer)
            grads = self._gradients(scores, acts, ctx.layer, inverse) if grads_needed else None
            if inverse is not None:
                acts = acts.index_select(0, torch.tensor(inverse, device=acts.device))
        acts = tokens_to_map(acts.detach(), ctx.model, ctx.layer)  # ViT tokens: (N, D, h, w)
        grads = tokens_to_map(grads, ctx.model, ctx.layer) if grads is not None else None
        state = CAMState(ctx, acts, grads, scores.detach(), target, rec, output.detach())
        with torch.no_grad():
            raw = self.combine(state)
        mapped = torch.relu(raw) if self.config["relu"] else raw
        return ctx.result(raw, mapped, output, target)

    @staticmethod
    def _gradients(
        scores: torch.Tensor,
        acts: torch.Tensor,
        layer: str | None,
        inverse: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``d score_i / d A_i`` ``(N, C, h, w)``: one backward of the summed scores (each row's
        score depends on its own activations only), or, where rows share activations
        (``inverse``: row i's row of ``acts``), one backward per row."""
        if not scores.requires_grad:  # no path from the layer (the only leaf) to the score
            raise _unreachable(layer)
        if inverse is None:
            (grads,) = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
            if grads is None:
                raise _unreachable(layer)
            return grads
        rows = []
        last = len(scores) - 1
        for i, row in enumerate(inverse):
            (grad,) = torch.autograd.grad(scores[i], acts, retain_graph=i < last, allow_unused=True)
            if grad is None:
                raise _unreachable(layer)
            rows.append(grad[row])
        return torch.stack(rows)

    def recorded_modules(self, ctx: Context) -> dict[str, nn.Module]:
        """Modules whose outputs the forward records (the target layer; variants may add)."""
        return {ctx.layer: ctx.layer_module}

    def weights(self, s: CAMState) -> torch.Tensor:
        """Channel weights ``w`` of shape ``(N, C)``; each variant overrides this."""
        raise NotImplementedError

    def combine(self, s: CAMState) -> torch.Tensor:
        """``raw = sum_c w_c A_c`` of shape ``(N, h, w)``; element-wise variants override this."""
        return torch.einsum("nc,nchw->nhw", self.weights(s), s.activations)

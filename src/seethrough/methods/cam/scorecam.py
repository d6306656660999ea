"""Score-CAM: channel weights from the scores of activation-masked inputs."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ...registry import register_method
from ..base import Ticker
from ..params import BATCH_SIZE, RELU
from .base import CAMMethod, CAMState


@register_method
class ScoreCAM(CAMMethod):
    """Each channel weighted by the score of the input masked with that channel.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPRW 2020. With ``H_c`` the activation ``A_c`` upsampled to the input and min-max
    scaled to [0, 1], and ``x`` the (preprocessed) input::

        s_c = y(x * H_c)
        w = softmax_c(s)
        map = ReLU(sum_c w_c A_c)

    Subtracting the score of a baseline input (the paper's ``f(X_b)``) would shift every
    ``s_c`` of a sample equally and leave the softmax unchanged, so it is skipped. Needs one
    forward per channel, evaluated ``batch_size`` masked images at a time; no gradient.
    Progress counts the masked images (``N * C``): reported before the first batch of masks
    and after each, so a cancel stops the call at the next batch.
    """

    name = "scorecam"
    title = "Score-CAM"
    rank = 70
    paper = "Wang et al., CVPRW 2020"
    needs_gradients = False
    reports_progress = True
    params = (RELU, replace(BATCH_SIZE, default=32, help="masked images per forward pass", min=1))

    @property
    def passes(self) -> int:
        """Masked inputs per channel (:meth:`masked`): ``n_samples`` where a variant has it,
        else 1; the weights average their scores."""
        return self.config.get("n_samples", 1)

    def weights(self, s: CAMState) -> torch.Tensor:
        """Softmax over channels of the (mean) target score of each channel's masked inputs.

        The ``passes * C`` masked inputs of an image (pass-major) go through the model
        ``batch_size`` at a time."""
        x = s.ctx.x
        n, c = s.activations.shape[:2]
        bs, total = self.config["batch_size"], c * self.passes
        scores = torch.zeros(n, total, dtype=s.activations.dtype, device=x.device)
        ticker = Ticker(s.ctx, n * total)
        ticker.advance(0)
        with s.ctx.many_inputs(n * total):
            for i in range(n):
                score = s.target.row(i)
                generator = self.generator()  # per image: an image gets the same draws alone
                for start in range(0, total, bs):
                    items = torch.arange(start, min(start + bs, total), device=x.device)
                    acts = s.activations[i : i + 1, items % c]
                    masks = _unit_masks(acts, x.shape[-2:]).transpose(0, 1)
                    batch = self.masked(x[i : i + 1], masks, items // c, generator)
                    scores[i, start : start + len(items)] = score(s.ctx.forward(batch))
                    ticker.advance(len(items))
        return scores.view(n, self.passes, c).mean(dim=1).softmax(dim=1)

    def generator(self) -> torch.Generator | None:
        """The random generator of one image's passes (``None``: no randomness)."""
        return None

    def masked(
        self,
        x: torch.Tensor,
        masks: torch.Tensor,
        passes: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Masked inputs: ``x`` ``(1, C, H, W)`` times each of ``masks`` ``(B, 1, H, W)``
        (unit-scaled upsampled activations), ``passes`` ``(B,)`` the pass of each mask."""
        return x * masks


def _unit_masks(acts: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Upsample ``(1, B, h, w)`` activations to ``size`` and min-max scale each to [0, 1]."""
    up = F.interpolate(acts, size=tuple(size), mode="bilinear", align_corners=False)
    lo = up.amin(dim=(2, 3), keepdim=True)
    span = up.amax(dim=(2, 3), keepdim=True) - lo
    return torch.where(span > 0, (up - lo) / torch.where(span > 0, span, 1), 0)

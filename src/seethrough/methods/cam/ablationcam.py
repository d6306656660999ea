"""Ablation-CAM: channel weights from the score drop when each channel is zeroed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from ...registry import register_method
from ..base import Ticker
from ..params import BATCH_SIZE, RELU
from .base import CAMMethod, CAMState


@register_method
class AblationCAM(CAMMethod):
    """Each channel weighted by the relative drop of the score when it is ablated (set to 0).

    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
    Gradient-free Localization", WACV 2020. With ``y`` the target score and ``y^k`` the score
    when channel ``k`` of the layer's output is set to zero::

        w_k = (y - y^k) / y                (y = 0: w_k = y - y^k)
        map = ReLU(sum_k w_k A_k)

    Gradient-free. One pass per ``batch_size`` channels: a forward hook on the layer repeats
    its output ``batch_size`` times and zeroes a different channel in each copy, so the network
    before the layer runs once per pass on the single image and only the part after it runs on
    the copies (whatever the layer reads later, such as a residual input, broadcasts over them).
    Should a model not allow that (a concatenation with an earlier tensor, an output without
    one row per copy), the image itself is repeated instead, as pytorch-grad-cam does. For
    transformer tokens ``(N, L, D)`` a channel is one of the ``D`` features of every token.
    Progress counts the ablated channels (``N * C``).
    """

    name = "ablationcam"
    title = "Ablation-CAM"
    rank = 75
    paper = "Desai & Ramaswamy, WACV 2020"
    needs_gradients = False
    reports_progress = True
    params = (RELU, replace(BATCH_SIZE, default=32, help="ablated copies per forward pass", min=1))

    def weights(self, s: CAMState) -> torch.Tensor:
        """``(y - y^k) / y`` for every channel ``k``, ``batch_size`` channels per forward."""
        x = s.ctx.x
        n, c = s.activations.shape[:2]
        bs = self.config["batch_size"]
        ablated = torch.empty(n, c, dtype=s.scores.dtype, device=s.scores.device)
        ticker = Ticker(s.ctx, n * c)
        ticker.advance(0)
        share = True  # run the network before the layer once per pass (see the class doc)
        with s.ctx.many_inputs(n * c):
            for i in range(n):
                score = s.target.row(i)
                for start in range(0, c, bs):
                    channels = torch.arange(start, min(start + bs, c), device=x.device)
                    out = self._ablated(s, x[i : i + 1], channels, share) if share else None
                    if out is None:
                        share = False
                        out = self._ablated(s, x[i : i + 1], channels, share)
                    ablated[i, start : start + len(channels)] = score(out)
                    ticker.advance(len(channels))
        y = s.scores[:, None]
        drop = y - ablated
        return torch.where(y != 0, drop / torch.where(y != 0, y, 1), drop)

    @staticmethod
    def _ablated(
        s: CAMState, x: torch.Tensor, channels: torch.Tensor, share: bool
    ) -> torch.Tensor | None:
        """The model's output on one copy of ``x`` per channel of ``channels``, each with that
        channel zeroed at the layer; ``share``: copies made at the layer (``None`` where the
        model does not allow it), else copies of ``x``."""
        b = len(channels)
        with _ablating(s.ctx.layer_module, channels, expand=share):
            if not share:
                return s.ctx.forward(x.expand(b, *x.shape[1:]))
            try:
                out = s.ctx.forward(x)
            except RuntimeError:
                return None
        return out if out.shape[0] == b else None


@contextmanager
def _ablating(layer: nn.Module | None, channels: torch.Tensor, expand: bool) -> Iterator[None]:
    """A block in which ``layer``'s output has channel ``channels[j]`` of copy ``j`` set to 0
    (channels: dim 1 of a ``(B, C, h, w)`` map, the last dim of ``(B, L, D)`` tokens);
    ``expand``: the layer's output has one row, repeated to one copy per channel."""
    assert layer is not None  # needs_layer: the pipeline resolved it

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(channels), device=output.device)
        out = output.expand(len(channels), *output.shape[1:]) if expand else output
        out = out.clone()
        if out.dim() == 3:
            out[rows, :, channels] = 0
        else:
            out[rows, channels] = 0
        return out

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()

"""Occlusion sensitivity: slide a window over the image and record the score drop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.kinds import Pair
from ...core.progress import Ticker
from ...registry import Param, register_method
from ..base import Context
from .base import PerturbationMethod, Sample, Single


@dataclass
class WindowMasks:
    """Masks hiding one ``wh x ww`` window each: rows ``(P, H)`` x columns ``(P, W)`` indicators."""

    rows: torch.Tensor
    cols: torch.Tensor

    def __len__(self) -> int:
        return self.rows.shape[0]

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """1 outside the window, 0 inside (an outer product, no loop)."""
        return 1 - self.rows[start:stop, :, None] * self.cols[start:stop, None, :]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start positions covering ``size``: every ``stride``, plus one flush with the far border.

    A window larger than the image is clipped to it (one position).
    """
    window = min(window, size)
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


@register_method
class Occlusion(PerturbationMethod):
    """Score drop when a window is hidden, averaged over the windows covering each pixel.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014. For
    windows ``W_p`` (size ``window``, moved by ``stride``; the last window of a row or column is
    placed flush with the border so every pixel is covered)::

        drop_p = f(x) - f(x with W_p hidden)
        map[h, w] = mean of drop_p over the windows p that contain (h, w)

    Positive values: hiding the region lowers the score. With a stride larger than the window
    some pixels lie in no window: their value is 0. ``.weights`` holds ``drop_p`` per window in
    row-major order of their positions.
    """

    name = "occlusion"
    title = "Occlusion"
    rank = 30
    paper = "Zeiler & Fergus, ECCV 2014"
    params = (
        Param("window", "32", "occluding window: SIZE or HEIGHTxWIDTH in input pixels", Pair),
        Param("stride", "16", "step between windows: SIZE or HEIGHTxWIDTH", Pair),
        *PerturbationMethod.params,
    )

    def _windows(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = ctx.x.shape[-2:]
        (wh, ww), (sh, sw) = self.config["window"], self.config["stride"]
        ys, xs = window_starts(h, wh, sh), window_starts(w, ww, sw)
        wh, ww = min(wh, h), min(ww, w)
        rows = torch.stack([(torch.arange(h) >= y) & (torch.arange(h) < y + wh) for y in ys])
        cols = torch.stack([(torch.arange(w) >= x) & (torch.arange(w) < x + ww) for x in xs])
        # every (row window, column window) pair, row-major
        return rows.repeat_interleave(len(xs), 0).double(), cols.repeat(len(ys), 1).double()

    def evaluations(self, ctx: Context) -> int:
        """One per window position (the unoccluded score comes from the clean forward)."""
        return len(self._windows(ctx)[0])

    def explain_one(self, ctx: Context, s: Sample, batch: int, ticker: Ticker) -> Single:
        """Score every occluded image; spread each drop over its window; average."""
        rows, cols = self._windows(ctx)
        clean = s.score(s.clean).double().cpu()[0, 0]
        scores = self.scores(
            ctx, s, WindowMasks(rows.to(s.x.device), cols.to(s.x.device)), batch, ticker
        )
        drop = clean - scores[:, 0]
        total = torch.einsum("p,ph,pw->hw", drop, rows, cols)
        count = torch.einsum("ph,pw->hw", rows, cols)
        mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
        return Single(mean, {"weights": drop.float().numpy()}, {"windows": float(len(drop))})

"""RISE: randomized input sampling for explanation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ...core.progress import Ticker
from ...registry import Param, register_method
from ..base import Context
from ..params import N_SAMPLES
from .base import PerturbationMethod, Sample, Single


@dataclass
class RiseMasks:
    """Smooth random masks: coarse binary grids, upsampled bilinearly, randomly shifted."""

    grids: torch.Tensor  # (N, s, s) in {0, 1}
    shifts: torch.Tensor  # (N, 2) pixel offsets within one cell
    size: tuple[int, int]

    def __len__(self) -> int:
        return self.grids.shape[0]

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Upsample the grids to (s + 1) cells, then crop each at its shift."""
        h, w = self.size
        s = self.grids.shape[-1]
        ch, cw = -(-h // s), -(-w // s)
        up = F.interpolate(
            self.grids[start:stop, None],
            size=((s + 1) * ch, (s + 1) * cw),
            mode="bilinear",
            align_corners=False,
        )[:, 0]
        return torch.stack(
            [
                m[dy : dy + h, dx : dx + w]
                for m, (dy, dx) in zip(up, self.shifts[start:stop].tolist(), strict=True)
            ]
        )


@register_method
class Rise(PerturbationMethod):
    """Average of random masks weighted by the score they leave.

    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018. Masks ``M_i``: a ``cells x cells`` grid whose cells are kept with
    probability ``p_keep``, upsampled bilinearly to ``(cells + 1)`` cell sizes and cropped at a
    random shift of less than one cell::

        map = 1 / (N p_keep) * sum_i f(x * M_i + hidden * (1 - M_i)) M_i
    """

    name = "rise"
    title = "RISE"
    rank = 40
    paper = "Petsiuk et al., BMVC 2018"
    params = (
        replace(N_SAMPLES, default=2000, help="number of random masks"),
        Param("cells", 7, "the masks' grid is cells x cells before upsampling", int, min=1),
        Param("p_keep", 0.5, "probability that a cell is kept", float, min=1e-3, max=1.0),
        *PerturbationMethod.params,
    )

    def evaluations(self, ctx: Context) -> int:
        """``n_samples`` masks per image."""
        return self.config["n_samples"]

    def explain_one(self, ctx: Context, s: Sample, batch: int, ticker: Ticker) -> Single:
        """Draw the masks, score them in batches, accumulate the weighted masks."""
        n, cells, p = self.config["n_samples"], self.config["cells"], self.config["p_keep"]
        h, w = s.x.shape[-2:]
        grids = (
            torch.rand(n, cells, cells, generator=s.generator, dtype=torch.float64) < p
        ).double()
        offsets = torch.rand(n, 2, generator=s.generator, dtype=torch.float64)
        shifts = (offsets * torch.tensor([-(-h // cells), -(-w // cells)])).long()
        total = torch.zeros(h, w, dtype=torch.float64)

        def add(built: torch.Tensor, scores: torch.Tensor) -> None:  # each batch, as scored
            total.add_(torch.einsum("n,nhw->hw", scores[:, 0], built))

        self.scores(ctx, s, RiseMasks(grids, shifts, (h, w)), batch, ticker, add)
        return Single(total / (n * p))

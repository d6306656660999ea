"""SS-CAM and IS-CAM: Score-CAM with smoothed or integrated masks."""

from __future__ import annotations

from dataclasses import replace

import torch

from ...core.noise import normal_noise
from ...registry import Param, register_method
from ..params import N_SAMPLES, SEED
from .scorecam import ScoreCAM

__all__ = ["SSCAM", "ISCAM"]


@register_method
class SSCAM(ScoreCAM):
    """Score-CAM whose channel scores are averaged over noisy copies of each mask.

    Wang et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization", 2020.
    With ``H_c`` Score-CAM's mask (``A_c`` upsampled to the input and min-max scaled to [0, 1])
    and ``n`` = ``n_samples`` draws of per-pixel noise ``d_i ~ N(0, noise^2)``::

        s_c = 1/n sum_i y(x * (H_c + d_i))
        w = softmax_c(s)
        map = ReLU(sum_c w_c A_c)

    As in torchcam's ``SSCAM`` the noise is added to the mask (``noise`` = 2 by default, as
    there); the default ``n_samples`` is 10, not the 35 of torchcam, to keep the cost at ten
    Score-CAMs (``n_samples * C`` forwards per image). The noise of one image is drawn from
    ``seed`` alone, so an image gets the same noise in any batch.
    """

    name = "sscam"
    title = "SS-CAM"
    rank = 72
    paper = "Wang et al., 2020 (arXiv 2006.14255)"
    params = (
        *ScoreCAM.params,
        replace(N_SAMPLES, default=10, help="noisy copies of each mask (each costs C forwards)"),
        Param("noise", 2.0, "std of the Gaussian noise added to each [0, 1] mask", float, min=0),
        SEED,
    )

    def generator(self) -> torch.Generator:
        """Seeded with ``seed``, afresh for each image."""
        return torch.Generator().manual_seed(self.config["seed"])

    def masked(
        self,
        x: torch.Tensor,
        masks: torch.Tensor,
        passes: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """``x * (H_c + d)`` with fresh noise ``d`` for every mask."""
        assert generator is not None
        return x * (masks + normal_noise(tuple(masks.shape), generator, x, self.config["noise"]))


@register_method
class ISCAM(ScoreCAM):
    """Score-CAM whose channel scores are integrated over growing copies of each mask.

    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based explanations", 2020. With
    ``H_c`` Score-CAM's mask and ``n`` = ``n_samples`` steps, step ``i`` scaling the mask by the
    running sum ``a_i = sum_{j=1}^{i} j / n``::

        s_c = 1/n sum_{i=1}^{n} y(a_i * H_c * x)
        w = softmax_c(s)
        map = ReLU(sum_c w_c A_c)

    The coefficients are those of torchcam's ``ISCAM`` (the paper writes the sum from
    ``j = 0`` to ``i - 1``, which only shifts them by one step). Costs ``n_samples * C`` forwards
    per image; deterministic.
    """

    name = "iscam"
    title = "IS-CAM"
    rank = 74
    paper = "Naidu et al., 2020 (arXiv 2010.03023)"
    params = (
        *ScoreCAM.params,
        replace(N_SAMPLES, default=10, help="integration steps (each costs C forwards)"),
    )

    def masked(
        self,
        x: torch.Tensor,
        masks: torch.Tensor,
        passes: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """``a_k * H_c * x`` with ``a_k = sum_{j=1}^{k+1} j / n`` for the mask of pass ``k``."""
        coeff = (passes + 1) * (passes + 2) / (2 * self.config["n_samples"])
        return coeff.to(x.dtype).view(-1, 1, 1, 1) * (masks * x)

"""Shapley value sampling over groups of pixels: marginal contributions along random orders."""

from __future__ import annotations

from dataclasses import replace

import torch

from ...core.coalitions import permutation_coalitions, shapley_from_permutations
from ...registry import register_method
from ..base import Context
from ..params import N_SAMPLES
from .base import DistinctCoalitions, PerturbationMethod
from .segmentation import SEGMENT_PARAMS
from .surrogate import TOP_LABELS, Fit, SurrogateMethod


@register_method
class ShapleySampling(DistinctCoalitions, SurrogateMethod):
    """Shapley values of pixel groups estimated from random permutations of the groups.

    Castro, Gomez & Tejada, "Polynomial calculation of the Shapley value based on sampling",
    Computers & Operations Research 2009; Strumbelj & Kononenko, "An Efficient Explanation of
    Individual Classifications using Game Theory", JMLR 2010. With ``v(S)`` the score of the
    image whose groups outside ``S`` are replaced by the fill (``hide``), ``P = n_samples``
    permutations ``pi_p`` of the ``F`` groups and ``Pre_p(i)`` the groups before ``i`` in
    ``pi_p``::

        phi_i = 1/P sum_p [v(Pre_p(i) + i) - v(Pre_p(i))]

    an unbiased estimate of the Shapley value, efficient for any ``P``: each permutation's
    contributions sum to ``v(all) - v(empty)`` (``.stats["efficiency_gap"]`` is the largest
    difference of the sum from that, rounding only). The permutations are ``torch.randperm``
    draws from the image's generator seeded with ``seed``, as Captum's ShapleyValueSampling
    draws them from the global generator (so ``torch.manual_seed(seed)`` before Captum gives
    the same permutations). A coalition that occurs in several permutations (the empty and
    the full one in all of them) is evaluated once, the full one not at all (the clean
    forward's score): at most ``P (F - 1) + 1`` evaluations.
    """

    name = "shapley_sampling"
    title = "Shapley value sampling"
    rank = 22
    paper = "Castro et al., 2009; Strumbelj & Kononenko, JMLR 2010"
    params = (
        *SEGMENT_PARAMS,
        replace(
            N_SAMPLES,
            default=25,
            help="random permutations of the groups (each costs F - 1 model evaluations for F "
            "groups)",
        ),
        TOP_LABELS,
        *PerturbationMethod.params,
    )

    def evaluations(self, ctx: Context) -> int:
        """About ``n_samples (n_segments - 1) + 1`` per image (exact once segmented)."""
        return self.config["n_samples"] * max(self.config["n_segments"] - 1, 1) + 1

    def coalitions(
        self, n_features: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty coalition, then each permutation's growing coalitions."""
        z = permutation_coalitions(n_features, self.config["n_samples"], generator)
        return z, torch.ones(len(z), dtype=torch.float64)

    def fit(self, z: torch.Tensor, weights: torch.Tensor, y: torch.Tensor) -> Fit:
        """Average the marginal contributions; the efficiency gap of the primary target."""
        phi = shapley_from_permutations(z, y)
        total = y[-1] - y[0]  # v(all) - v(empty)
        gap = float((phi[0].sum() - total[0]).abs())
        return Fit(
            phi,
            y[0],
            {"base_value": float(y[0, 0]), "full_value": float(y[-1, 0]), "efficiency_gap": gap},
        )

"""Feature ablation: the score drop when one group of pixels is hidden."""

from __future__ import annotations

import torch

from ...registry import register_method
from ..base import Context
from .base import DistinctCoalitions, PerturbationMethod
from .segmentation import SEGMENT_PARAMS
from .surrogate import TOP_LABELS, Fit, SurrogateMethod


@register_method
class FeatureAblation(DistinctCoalitions, SurrogateMethod):
    """Each group's attribution is the score lost when that group alone is hidden.

    Zeiler & Fergus, ECCV 2014 (occlusion), in the grouped form of Captum's FeatureAblation
    (Kokhlikyan et al., "Captum: A unified and generic model interpretability library for
    PyTorch", 2020). For groups ``g`` (superpixels, grid cells, or an integer label array given
    as ``segments``) and the fill ``b`` (``hide``)::

        a_g = f(x) - f(x with the pixels of g replaced by b)

    and every pixel of ``g`` gets ``a_g``. For a linear model ``f(x) = w.x`` this is
    ``w_g.(x_g - b_g)``. ``f(x)`` comes from the clean forward every method starts with, then
    one model evaluation per group, in batches of ``batch_size``. ``.weights``
    holds ``a`` per group (one row per class with ``top_labels``), ``.intercept`` ``f(x)``.
    """

    name = "feature_ablation"
    title = "Feature ablation"
    rank = 32
    paper = "Zeiler & Fergus, ECCV 2014; Kokhlikyan et al., 2020 (Captum)"
    params = (*SEGMENT_PARAMS, TOP_LABELS, *PerturbationMethod.params)

    def evaluations(self, ctx: Context) -> int:
        """About ``n_segments`` per image (the exact count is known once segmented)."""
        return self.config["n_segments"]

    def coalitions(
        self, n_features: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The full coalition, then each feature hidden alone: ``[1; 1 - I]``."""
        full = torch.ones(1, n_features, dtype=torch.float64)
        z = torch.cat([full, 1 - torch.eye(n_features, dtype=torch.float64)])
        return z, torch.ones(len(z), dtype=torch.float64)

    def fit(self, z: torch.Tensor, weights: torch.Tensor, y: torch.Tensor) -> Fit:
        """``a_g = f(1) - f(1 - e_g)`` for every target."""
        drop = (y[0] - y[1:]).T  # (T, F)
        return Fit(drop, y[0], {"full_value": float(y[0, 0])})

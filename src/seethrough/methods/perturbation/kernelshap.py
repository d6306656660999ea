"""Kernel SHAP on superpixels, built on LIME's machinery."""

from __future__ import annotations

import torch

from ...core.coalitions import kernel_shap_coalitions, kernel_shap_fit
from ...registry import register_method
from .surrogate import Fit, SurrogateMethod


@register_method
class KernelShap(SurrogateMethod):
    """Shapley values of superpixels by the Shapley-kernel weighted regression.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017. For F
    features and a coalition ``z`` of size ``s``::

        pi(z) = (F - 1) / (C(F, s) s (F - s))
        min_phi sum_z pi(z) (f(z) - f(0) - phi.z)^2   subject to   sum_i phi_i = f(1) - f(0)

    The constraint (efficiency) holds exactly. When every coalition fits in ``n_samples``
    (``2^F - 2 <= n_samples - 2``) they are all enumerated and the result is the exact Shapley
    value; otherwise coalitions are drawn with probability proportional to ``pi`` (so they
    enter the regression with equal weights) in antithetic pairs ``z, 1 - z``. ``f(0)`` (all
    features hidden) is in ``.stats["base_value"]``.
    """

    name = "kernelshap"
    title = "Kernel SHAP"
    rank = 20
    paper = "Lundberg & Lee, NeurIPS 2017"

    def coalitions(
        self, n_features: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows 0 and 1: all kept, all hidden; then every coalition, or paired kernel samples."""
        return kernel_shap_coalitions(n_features, self.config["n_samples"], generator)

    def fit(self, z: torch.Tensor, weights: torch.Tensor, y: torch.Tensor) -> Fit:
        """Weighted least squares with the efficiency constraint eliminated (last feature)."""
        coef, stats = kernel_shap_fit(z, weights, y)
        return Fit(coef, y[1], stats)

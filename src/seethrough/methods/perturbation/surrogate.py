"""Local surrogate models over features: the machinery LIME and Kernel SHAP share.

Per image: segment it into F features, draw coalitions ``z`` in {0, 1}^F (1 keeps a feature),
evaluate the model on each masked image in batches, and fit a linear model of the scores on ``z``.
A variant says how coalitions are drawn and weighted (:meth:`coalitions`) and how the linear
model is fitted (:meth:`fit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...core.coalitions import complements, weighted_ridge
from ..base import Context
from ..params import N_SAMPLES, TOP_LABELS
from .base import PerturbationMethod, Sample, Single
from .engine import FeatureMasks, Ticker
from .segmentation import SEGMENT_PARAMS, segment

__all__ = ["SurrogateMethod", "Fit", "N_SAMPLES", "TOP_LABELS", "complements", "weighted_ridge"]


@dataclass
class Fit:
    """A fitted linear surrogate: ``score ~ intercept + coef @ z`` for each of T targets."""

    coef: torch.Tensor  # (T, F)
    intercept: torch.Tensor  # (T,)
    stats: dict[str, float]


class SurrogateMethod(PerturbationMethod):
    """Segment, sample coalitions, evaluate in batches, fit a linear model per target."""

    params = (*SEGMENT_PARAMS, N_SAMPLES, TOP_LABELS, *PerturbationMethod.params)

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self.extra_targets = self.config["top_labels"] - 1

    def evaluations(self, ctx: Context) -> int:
        """``n_samples`` per image."""
        return self.config["n_samples"]

    def explain_one(self, ctx: Context, s: Sample, batch: int, ticker: Ticker) -> Single:
        """Segment, sample, evaluate, fit; the map paints each segment with its weight."""
        p = self.config
        labels = segment(
            s.image,
            p["segments"],
            n_segments=p["n_segments"],
            compactness=p["compactness"],
            kernel_size=p["kernel_size"],
            scale=p["scale"],
        )
        n_features = int(labels.max()) + 1
        z, weights = self.coalitions(n_features, s.generator)
        ticker.total += len(z) - self.evaluations(ctx)  # exact enumeration may need fewer
        segments = torch.from_numpy(labels).long().to(s.x.device)
        y = self.scores(
            ctx, s, FeatureMasks(z.to(s.x.dtype).to(s.x.device), segments), batch, ticker
        )
        fit = self.fit(z, weights, y)
        coef = fit.coef.float()
        extras = {
            "segments": labels,
            "weights": coef.numpy() if len(coef) > 1 else coef[0].numpy(),
            "intercept": fit.intercept.float().numpy(),
            "classes": np.array([-1 if c is None else c for c in s.classes]),
        }
        return Single(coef[0][segments.cpu()], extras, {"features": float(n_features), **fit.stats})

    def coalitions(
        self, n_features: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Coalitions ``(M, F)`` (float64, 1 = feature kept) and their regression weights ``(M,)``."""
        raise NotImplementedError

    def fit(self, z: torch.Tensor, weights: torch.Tensor, y: torch.Tensor) -> Fit:
        """Fit the surrogate to scores ``y`` ``(M, T)``."""
        raise NotImplementedError

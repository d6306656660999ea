"""The two ways a table's features are hidden: a coalition game against a background set
(the Shapley methods) and LIME's samples from the background's distribution."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..attribution.estimators import Attribution, progress_ticker
from ..core.coalitions import weighted_ridge
from ..core.progress import Progress
from .model import ScoreFunction
from .table import Table

__all__ = ["BackgroundGame", "lime_tabular"]


class BackgroundGame:
    """The interventional value of a coalition: the model's mean output when the kept features
    take the row's values and the others a background row's, over the background rows::

        v(S) = 1/B sum_b f(x_S, b_{not S})

    (Janzing et al. 2020; what shap's KernelExplainer and interventional TreeExplainer compute).
    ``v(all) = f(x)`` and ``v(none)`` is the background's mean output. Every coalition costs
    ``B`` model evaluations; ``rows_per_call`` bounds one call's rows.
    """

    def __init__(
        self,
        score: ScoreFunction,
        table: Table,
        row: np.ndarray,
        background: np.ndarray,
        rows_per_call: int,
        model: Any = None,
    ) -> None:
        self.score, self.table = score, table
        self.row, self.background = row, background
        self.model = model  # the user's model, for methods that read it (Tree SHAP)
        self.feature_of_column = np.empty(len(table.columns), dtype=np.int64)
        for f, cols in enumerate(table.groups):
            self.feature_of_column[cols] = f
        self.n_features = len(table.groups)
        self.rows_per_call = rows_per_call
        self.evaluations = 0

    @property
    def coalitions_per_call(self) -> int:
        """How many coalitions one model call takes."""
        return max(1, self.rows_per_call // len(self.background))

    def __call__(self, z: np.ndarray) -> np.ndarray:
        b = len(self.background)
        kept = np.asarray(z, dtype=bool)[:, self.feature_of_column]  # (M, d)
        rows = np.where(  # (M * B, d), coalition-major
            np.repeat(kept, b, axis=0), self.row, np.tile(self.background, (len(z), 1))
        )
        scores = self.score(self.table.to_model(rows))
        self.evaluations += len(rows)
        return scores.reshape(len(z), b, -1).mean(1)


def lime_tabular(
    score: ScoreFunction,
    table: Table,
    row: np.ndarray,
    background: np.ndarray,
    *,
    n_samples: int,
    generator: torch.Generator,
    kernel_width: float | None,
    alpha: float,
    rows_per_call: int,
    progress: Progress | None,
) -> tuple[Attribution, np.ndarray]:
    """LIME for a row of a table (Ribeiro et al., KDD 2016; as ``lime``'s LimeTabularExplainer
    without discretisation).

    Samples: the first is the row itself; the others draw each numeric column from a normal
    with the background's mean and standard deviation, and each categorical column or group
    from the background's rows (its values' frequencies). The interpretable features are the
    standardised values ``(v - mean) / std`` of numeric columns and, for a categorical column
    or a group, 1 where a sample equals the row and 0 elsewhere. Each sample is weighted by
    ``sqrt(exp(-d^2 / width^2))`` with ``d`` its Euclidean distance to the row in those
    features (default width ``0.75 sqrt(F)``), and a weighted ridge regression
    (``alpha``) of the model's scores on them gives the slopes. For a linear model of numeric
    columns the slopes are its coefficients times the columns' standard deviations: the
    coefficients of the standardised features.

    Returns the attribution and the interpretable features' scales (the std of each numeric
    column, 1 for the others).
    """
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    n_background = len(background)
    samples = np.tile(row, (n_samples, 1))
    z = np.ones((n_samples, len(table.groups)), dtype=np.float64)
    scales = np.ones(len(table.groups))
    for f, cols in enumerate(table.groups):
        if len(cols) == 1 and cols[0] not in table.categorical:
            c = cols[0]
            values = background[:, c].astype(np.float64)
            mean, std = float(values.mean()), float(values.std())
            std = std if std > 0 else 1.0
            drawn = rng.normal(mean, std, n_samples)
            drawn[0] = float(row[c])
            samples[:, c] = drawn
            z[:, f] = (drawn - mean) / std
            scales[f] = std
        else:
            picks = rng.integers(0, n_background, n_samples)
            picks_rows = background[picks][:, cols]
            picks_rows[0] = row[cols]
            samples[:, cols] = picks_rows
            z[:, f] = (picks_rows == row[cols]).all(1)
    width = kernel_width if kernel_width is not None else 0.75 * np.sqrt(len(table.groups))
    distance = np.linalg.norm(z - z[0], axis=1)
    weights = np.sqrt(np.exp(-(distance**2) / width**2))
    ticker = progress_ticker(progress, n_samples, "samples")
    scores = []
    for start in range(0, n_samples, rows_per_call):
        chunk = samples[start : start + rows_per_call]
        scores.append(score(table.to_model(chunk)))
        ticker.advance(len(chunk))
    y = torch.from_numpy(np.concatenate(scores))
    coef, intercept, r2 = weighted_ridge(torch.from_numpy(z), y, torch.from_numpy(weights), alpha)
    attribution = Attribution(
        coef.numpy(), intercept.numpy(), y[0].numpy(), n_samples, {"r2": float(r2[0])}
    )
    return attribution, scales

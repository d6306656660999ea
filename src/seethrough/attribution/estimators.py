"""Attributions of a cooperative game: Shapley values (exact, Kernel SHAP, permutation sampling)
and LIME's local linear fit, for any value function over coalitions of features.

A *game* gives the value of coalitions: ``game(z)`` with ``z`` ``(M, F)`` booleans (``True``
keeps a feature) returns ``(M, T)`` scores, one column per model output. What keeping or
hiding a feature means is the game's business (a column takes a background row's value, a word
is dropped); the estimators here only choose coalitions, ask for their values in batches
(reporting progress, honouring cancel) and combine them. The coalition sampling and the fits are
the ones the image methods use (:mod:`seethrough.core.coalitions`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..core.coalitions import (
    all_coalitions,
    kernel_shap_coalitions,
    kernel_shap_fit,
    lime_coalitions,
    shapley_from_values,
    weighted_ridge,
)
from ..core.progress import Progress, Ticker
from ..errors import InvalidParameterError

__all__ = [
    "Game",
    "Attribution",
    "EXACT_LIMIT",
    "evaluate",
    "progress_ticker",
    "exact_shapley",
    "kernel_shap",
    "permutation_shap",
    "lime",
]

EXACT_LIMIT = 16
"""The most features :func:`exact_shapley` enumerates (``2^16`` coalitions)."""


class Game(Protocol):
    """A value function over coalitions of ``n_features`` features."""

    n_features: int

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Scores ``(M, T)`` of the coalitions ``z`` ``(M, F)`` (booleans, True = kept)."""
        ...


@dataclass
class Attribution:
    """What an estimator found: ``values`` ``(T, F)`` (one row per model output), the value of
    the empty coalition (``base``, ``(T,)``: Shapley's base value, LIME's intercept), the full
    coalition's (``full``, ``(T,)``), the model evaluations used and statistics."""

    values: np.ndarray
    base: np.ndarray
    full: np.ndarray
    evaluations: int
    stats: dict[str, float] = field(default_factory=dict)


class _Progress:
    """A context for :class:`~seethrough.core.progress.Ticker` (it reads ``.progress``)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress


def evaluate(
    game: Game, z: torch.Tensor, batch_size: int, ticker: Ticker | None = None
) -> torch.Tensor:
    """The game's values of the coalitions ``z`` (``(M, F)``, 1 = kept), ``batch_size`` at a
    time, as float64 ``(M, T)``; the ticker advances by the coalitions evaluated."""
    keep = z.numpy() > 0.5
    out = []
    for start in range(0, len(keep), batch_size):
        scores = np.asarray(game(keep[start : start + batch_size]), dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] != min(batch_size, len(keep) - start):
            raise InvalidParameterError(
                f"the value function returned shape {scores.shape} for "
                f"{min(batch_size, len(keep) - start)} coalitions; expected (coalitions, outputs)"
            )
        out.append(torch.from_numpy(scores))
        if ticker is not None:
            ticker.advance(len(scores))
    return torch.cat(out)


def progress_ticker(progress: Progress | None, total: int, unit: str = "coalitions") -> Ticker:
    """A :class:`~seethrough.core.progress.Ticker` over ``total`` units for a bare callback,
    reported once before any work."""
    ticker = Ticker(_Progress(progress), total, unit)
    ticker.advance(0)
    return ticker


def exact_shapley(
    game: Game, *, batch_size: int = 256, progress: Progress | None = None
) -> Attribution:
    """Shapley values by enumerating all ``2^F`` coalitions (Shapley 1953)::

        phi_i = sum_{S not containing i} |S|! (F - |S| - 1)! / F! (v(S + i) - v(S))

    Refused above :data:`EXACT_LIMIT` features.
    """
    f = game.n_features
    if f > EXACT_LIMIT:
        raise InvalidParameterError(
            f"exact_shapley enumerates 2^{f} coalitions; it takes at most {EXACT_LIMIT} features "
            "(use kernelshap or permutation_shap, or group features)"
        )
    z = all_coalitions(f)
    values = evaluate(game, z, batch_size, progress_ticker(progress, len(z)))
    phi = shapley_from_values(values, f)
    return Attribution(phi.numpy(), values[0].numpy(), values[-1].numpy(), len(z))


def kernel_shap(
    game: Game,
    *,
    n_samples: int,
    generator: torch.Generator,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> Attribution:
    """Kernel SHAP (Lundberg & Lee, NeurIPS 2017): the Shapley-kernel weighted regression with
    the efficiency constraint, on every coalition when they fit in ``n_samples`` (then exact),
    else on ``n_samples`` coalitions drawn in antithetic pairs
    (:func:`~seethrough.core.coalitions.kernel_shap_coalitions`)."""
    z, weights = kernel_shap_coalitions(game.n_features, n_samples, generator)
    y = evaluate(game, z, batch_size, progress_ticker(progress, len(z)))
    coef, stats = kernel_shap_fit(z, weights, y)
    return Attribution(coef.numpy(), y[1].numpy(), y[0].numpy(), len(z), stats)


def permutation_shap(
    game: Game,
    *,
    n_permutations: int,
    generator: torch.Generator,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> Attribution:
    """Shapley values by antithetic permutation sampling (Strumbelj & Kononenko 2014; Mitchell
    et al. 2022 for the antithetic pairs).

    For a random order ``pi`` of the features, features are added one at a time and each is
    credited with the change of value it brings: ``v(pi_1..pi_k) - v(pi_1..pi_{k-1})``. Every
    order is followed by its reverse; the values are the mean over the orders. Each order's
    credits sum to ``v(all) - v(none)``, so efficiency holds exactly for any number of orders.
    Costs ``2 + n_permutations * 2 * (F - 1)`` evaluations.
    """
    f = game.n_features
    if n_permutations < 1:
        raise InvalidParameterError(f"n_permutations must be >= 1, got {n_permutations}")
    orders = []
    for _ in range(n_permutations):
        order = torch.randperm(f, generator=generator)
        orders += [order, order.flip(0)]
    position = torch.stack(orders).argsort(1)  # (orders, F): where each feature comes
    # coalition k of an order keeps its first k features, k = 1 .. F-1 (the ends are shared)
    steps = torch.arange(1, f)
    chains = (position[:, None, :] < steps[None, :, None]).double()  # (orders, F - 1, F)
    ends = torch.stack([torch.ones(f), torch.zeros(f)]).double()
    z = torch.cat([ends, chains.reshape(-1, f)])
    y = evaluate(game, z, batch_size, progress_ticker(progress, len(z)))
    full, empty = y[0], y[1]
    t = y.shape[1]
    inner = y[2:].reshape(len(orders), f - 1, t)
    chain = torch.cat(
        [empty.expand(len(orders), 1, t), inner, full.expand(len(orders), 1, t)], dim=1
    )  # (orders, F + 1, T): values as features are added
    gains = chain[:, 1:] - chain[:, :-1]  # (orders, F, T): the k-th added feature's credit
    credit = gains.gather(1, position[:, :, None].expand(-1, -1, t))  # (orders, F, T) by feature
    phi = credit.mean(0).T.contiguous()
    gap = float((phi.sum(1) - (full - empty)).abs().max())
    stats = {"efficiency_gap": gap, "permutations": float(len(orders))}
    return Attribution(phi.numpy(), empty.numpy(), full.numpy(), len(z), stats)


def lime(
    game: Game,
    *,
    n_samples: int,
    generator: torch.Generator,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    paired: bool = True,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> Attribution:
    """LIME on coalitions (Ribeiro et al., KDD 2016), as for superpixels: coalitions keep each
    feature with probability 1/2 (the first keeps all), weighted by an exponential kernel on
    their cosine distance to the full coalition, and a weighted ridge regression of the scores
    on them (:func:`~seethrough.core.coalitions.weighted_ridge`); ``stats["r2"]`` is the fit's
    weighted R^2 for the first output."""
    z, weights = lime_coalitions(
        game.n_features, n_samples, generator, paired=paired, kernel_width=kernel_width
    )
    y = evaluate(game, z, batch_size, progress_ticker(progress, len(z)))
    coef, intercept, r2 = weighted_ridge(z, y, weights, alpha)
    full = y[0]  # the first coalition keeps every feature
    return Attribution(coef.numpy(), intercept.numpy(), full.numpy(), len(z), {"r2": float(r2[0])})


Estimator = Callable[..., Attribution]

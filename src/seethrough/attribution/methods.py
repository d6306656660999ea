"""The methods that explain any :class:`~seethrough.attribution.estimators.Game` (a table's
row, a text's words): each with its name, title, paper and parameters, and one lookup, so tables
and texts list, check and run them the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core.progress import Progress
from ..errors import InvalidParameterError, suggest
from ..registry import Param
from .estimators import Attribution, Game, exact_shapley, kernel_shap, lime, permutation_shap
from .scores import KERNELSHAP_SAMPLES, LIME_SAMPLES, PERMUTATIONS, RIDGE_ALPHA, kernelshap_samples

__all__ = ["Run", "FeatureMethod", "GAME_METHODS", "find_method"]


@dataclass(frozen=True)
class Run:
    """One call's settings, as a method sees them."""

    config: dict[str, Any]
    generator: torch.Generator
    batch_size: int  # coalitions per model call
    progress: Progress | None


@dataclass(frozen=True)
class FeatureMethod:
    """A method for features that are not pixels.

    ``run(game, settings)`` returns the attribution; ``shapley``: its values share out
    ``prediction - base_value`` exactly (efficiency).
    """

    name: str
    title: str
    paper: str
    params: tuple[Param, ...]
    run: Callable[[Game, Run], Attribution]
    shapley: bool = True


def _kernelshap(game: Game, run: Run) -> Attribution:
    return kernel_shap(
        game,
        n_samples=kernelshap_samples(run.config["n_samples"], game.n_features),
        generator=run.generator,
        batch_size=run.batch_size,
        progress=run.progress,
    )


def _exact(game: Game, run: Run) -> Attribution:
    return exact_shapley(game, batch_size=run.batch_size, progress=run.progress)


def _permutation(game: Game, run: Run) -> Attribution:
    return permutation_shap(
        game,
        n_permutations=run.config["n_permutations"],
        generator=run.generator,
        batch_size=run.batch_size,
        progress=run.progress,
    )


def _lime(game: Game, run: Run) -> Attribution:
    p = run.config
    return lime(
        game,
        n_samples=p["n_samples"],
        generator=run.generator,
        kernel_width=p["kernel_width"],
        alpha=p["alpha"],
        paired=p["paired"],
        batch_size=run.batch_size,
        progress=run.progress,
    )


GAME_METHODS: dict[str, FeatureMethod] = {
    m.name: m
    for m in (
        FeatureMethod(
            "kernelshap",
            "Kernel SHAP",
            "Lundberg & Lee, NeurIPS 2017",
            (KERNELSHAP_SAMPLES,),
            _kernelshap,
        ),
        FeatureMethod("exact_shapley", "Exact Shapley values", "Shapley 1953", (), _exact),
        FeatureMethod(
            "permutation_shap",
            "Permutation SHAP",
            "Strumbelj & Kononenko 2014",
            (PERMUTATIONS,),
            _permutation,
        ),
        FeatureMethod(
            "lime",
            "LIME",
            "Ribeiro et al., KDD 2016",
            (
                LIME_SAMPLES,
                Param(
                    "kernel_width",
                    0.25,
                    "width of the exponential kernel on the cosine distance to the input "
                    "(lime's LimeTextExplainer: 25 on the distance times 100)",
                    float,
                    min=1e-6,
                ),
                RIDGE_ALPHA,
                Param(
                    "paired",
                    True,
                    "draw samples in complementary pairs (each feature kept with probability 1/2)",
                    bool,
                ),
            ),
            _lime,
            shapley=False,
        ),
    )
}
"""The methods on coalitions of features: every one of them explains a text; a table takes
the Shapley ones (its LIME samples values, and it adds Tree SHAP)."""


def find_method(methods: Mapping[str, FeatureMethod], name: str, what: str) -> FeatureMethod:
    """``methods[name]``, or an error listing them with a did-you-mean; ``what``: ``"text"``
    or ``"tabular"``, for the message."""
    if name not in methods:
        raise InvalidParameterError(
            f"unknown {what} method {name!r}.{suggest(name, list(methods))} "
            f"Methods: {', '.join(methods)}"
        )
    return methods[name]

"""``explain_tabular``: Shapley values and LIME for rows of a table."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..attribution.estimators import (
    Attribution,
    exact_shapley,
    kernel_shap,
    permutation_shap,
)
from ..attribution.explanation import FeatureExplanation, FeatureExplanations
from ..attribution.scores import (
    KERNELSHAP_SAMPLES,
    LIME_SAMPLES,
    PERMUTATIONS,
    RIDGE_ALPHA,
    ScoreFunction,
    kernelshap_samples,
    output_index,
)
from ..core.progress import Progress
from ..errors import InvalidParameterError, suggest
from ..registry import Param, validate_params
from .model import as_score_function
from .sampling import BackgroundGame, lime_tabular
from .table import ColumnRef, Table

__all__ = ["explain_tabular", "TabularMethod", "TABULAR_METHODS", "MAX_BACKGROUND"]

MAX_BACKGROUND = 100
"""Background rows kept by default (a seeded sample of a larger set): each coalition of the
Shapley methods costs one model evaluation per background row."""


@dataclass(frozen=True)
class Call:
    """One row's explanation problem, as a method sees it."""

    score: ScoreFunction
    table: Table
    row: np.ndarray
    background: np.ndarray
    model: Any
    config: dict[str, Any]
    generator: torch.Generator
    rows_per_call: int
    progress: Progress | None

    def game(self) -> BackgroundGame:
        return BackgroundGame(self.score, self.table, self.row, self.background, self.rows_per_call)


@dataclass(frozen=True)
class TabularMethod:
    """A method for rows of a table: its name, title, paper, parameters and how it runs."""

    name: str
    title: str
    paper: str
    params: tuple[Param, ...]
    run: Callable[[Call], Attribution]
    shapley: bool = True  # base_value + sum(values) == prediction


def _kernelshap(call: Call) -> Attribution:
    game = call.game()
    n = kernelshap_samples(call.config["n_samples"], game.n_features)
    return kernel_shap(
        game,
        n_samples=n,
        generator=call.generator,
        batch_size=game.coalitions_per_call,
        progress=call.progress,
    )


def _exact(call: Call) -> Attribution:
    game = call.game()
    return exact_shapley(game, batch_size=game.coalitions_per_call, progress=call.progress)


def _permutation(call: Call) -> Attribution:
    game = call.game()
    return permutation_shap(
        game,
        n_permutations=call.config["n_permutations"],
        generator=call.generator,
        batch_size=game.coalitions_per_call,
        progress=call.progress,
    )


def _lime(call: Call) -> Attribution:
    p = call.config
    attribution, _ = lime_tabular(
        call.score,
        call.table,
        call.row,
        call.background,
        n_samples=p["n_samples"],
        generator=call.generator,
        kernel_width=p["kernel_width"],
        alpha=p["alpha"],
        rows_per_call=call.rows_per_call,
        progress=call.progress,
    )
    return attribution


def _tree(call: Call) -> Attribution:
    from .tree import tree_shap

    return tree_shap(call.model, call.score, call.table, call.row, call.background)


_EVALUATIONS = "model evaluations"
TABULAR_METHODS: dict[str, TabularMethod] = {
    m.name: m
    for m in (
        TabularMethod(
            "kernelshap",
            "Kernel SHAP",
            "Lundberg & Lee, NeurIPS 2017",
            (KERNELSHAP_SAMPLES,),
            _kernelshap,
        ),
        TabularMethod(
            "exact_shapley",
            "Exact Shapley values",
            "Shapley 1953",
            (),
            _exact,
        ),
        TabularMethod(
            "permutation_shap",
            "Permutation SHAP",
            "Strumbelj & Kononenko 2014",
            (PERMUTATIONS,),
            _permutation,
        ),
        TabularMethod(
            "lime",
            "LIME",
            "Ribeiro et al., KDD 2016",
            (
                LIME_SAMPLES,
                Param(
                    "kernel_width",
                    None,
                    "width of the exponential kernel on the standardised distance "
                    "(None: 0.75 sqrt(features))",
                    float,
                    min=1e-6,
                ),
                RIDGE_ALPHA,
            ),
            _lime,
            shapley=False,
        ),
        TabularMethod(
            "tree_shap",
            "Tree SHAP",
            "Lundberg et al., Nature Machine Intelligence 2020",
            (),
            _tree,
        ),
    )
}


def _method(name: str) -> TabularMethod:
    if name not in TABULAR_METHODS:
        raise InvalidParameterError(
            f"unknown tabular method {name!r}.{suggest(name, list(TABULAR_METHODS))} "
            f"Methods: {', '.join(TABULAR_METHODS)}"
        )
    return TABULAR_METHODS[name]


def explain_tabular(
    model: Any,
    background: Any,
    rows: Any,
    method: str = "kernelshap",
    *,
    target: int | str | None = None,
    feature_names: Sequence[str] | None = None,
    categorical: Sequence[ColumnRef] | None = None,
    groups: Mapping[str, Sequence[ColumnRef]] | None = None,
    output: str = "auto",
    labels: Sequence[str] | None = None,
    seed: int = 0,
    max_background: int = MAX_BACKGROUND,
    batch_size: int = 8192,
    progress: Progress | None = None,
    **params: Any,
) -> FeatureExplanation | FeatureExplanations:
    """Explain rows of a table: how much each feature moved the model's output.

    Args:
        model: a function ``f(rows) -> scores``, a ``torch.nn.Module`` or a scikit-learn
            estimator (see :func:`~seethrough.tabular.model.as_score_function`).
        background: rows that stand for "a feature unknown" (``(n, d)`` array or DataFrame,
            typically training rows); more than ``max_background`` are sampled down (seeded).
        rows: one row (1-D, a Series or a mapping of column names) or many (2-D).
        method: ``"kernelshap"``, ``"exact_shapley"``, ``"permutation_shap"``, ``"lime"`` or
            ``"tree_shap"`` (see :data:`TABULAR_METHODS`).
        target: the output explained, by index or label (default: the row's top output).
        feature_names: the columns' names for an array (a DataFrame brings its own).
        categorical: the categorical columns (default: non-numeric ones).
        groups: named groups of columns explained as one feature (a one-hot encoding).
        output: for an estimator, ``"predict_proba"``, ``"decision_function"`` or
            ``"predict"`` (default: the first it has, in that order).
        labels: the outputs' names (default: an estimator's classes).
        seed: seeds the sampling; the same seed gives the same values.
        max_background: most background rows kept.
        batch_size: most rows per model call.
        progress: ``progress(done, total)`` per batch; returning ``False`` cancels
            (:class:`~seethrough.errors.CancelledError`).
        **params: the method's parameters (``n_samples``, ``n_permutations``, ...).

    Returns:
        A :class:`~seethrough.attribution.FeatureExplanation` for one row, a
        :class:`~seethrough.attribution.FeatureExplanations` (with a global
        ``importance()``) for many.

    Raises:
        InvalidInputError: a row or background value that does not fit the table (naming the
            column).
        InvalidParameterError: an unknown method or parameter.
        InvalidTargetError, UnknownClassError: a target the model does not have.
    """
    info = _method(method)
    config = validate_params(info.params, params, method)
    for name, value in (("max_background", max_background), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{name} must be a positive integer, got {value!r}")
    score = as_score_function(model, output=output, labels=labels)
    table, back = Table.from_background(
        background, feature_names=feature_names, categorical=categorical, groups=groups
    )
    if len(back) > max_background:
        pick = np.random.default_rng(seed).choice(len(back), max_background, replace=False)
        back = back[np.sort(pick)]
    single = _one_row(rows)
    checked = table.check(rows, "row")
    predictions = score(table.to_model(checked))
    out = []
    for i, row in enumerate(checked):
        start = time.perf_counter()
        t = output_index(target, score.labels, predictions[i])
        call = Call(
            score,
            table,
            row,
            back,
            model,
            config,
            torch.Generator().manual_seed(seed + i),
            batch_size,
            progress,
        )
        a = info.run(call)
        out.append(
            FeatureExplanation(
                kind="tabular",
                method=info.name,
                title=info.title,
                features=list(table.features),
                shown=table.shown(row),
                values=a.values[t],
                target=t,
                label=score.labels[t] if score.labels and t < len(score.labels) else None,
                prediction=float(predictions[i, t]),
                base_value=float(a.base[t]),
                output=score.output,
                all_values=a.values,
                params={**config, "seed": seed, "background_rows": len(back)},
                stats=a.stats,
                evaluations=a.evaluations * (len(back) if info.name != "lime" else 1),
                seconds=time.perf_counter() - start,
            )
        )
    return out[0] if single else FeatureExplanations(out)


def _one_row(rows: Any) -> bool:
    """Whether ``rows`` is one row (1-D, a Series, a mapping) rather than a table."""
    if isinstance(rows, Mapping):
        return True
    if hasattr(rows, "columns"):
        return False
    if hasattr(rows, "index") and hasattr(rows, "to_numpy"):
        return True
    try:
        return np.asarray(rows, dtype=object).ndim == 1
    except Exception:
        return False

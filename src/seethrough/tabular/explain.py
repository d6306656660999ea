"""``explain_tabular``: Shapley values and LIME for rows of a table."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..attribution.estimators import Attribution, Game
from ..attribution.explanation import FeatureExplanation, FeatureExplanations
from ..attribution.methods import GAME_METHODS, FeatureMethod, Run, find_method
from ..attribution.scores import LIME_SAMPLES, RIDGE_ALPHA, output_index
from ..core.progress import Progress
from ..errors import InvalidParameterError
from ..registry import Param, validate_params
from .model import as_score_function
from .sampling import BackgroundGame, lime_tabular
from .table import ColumnRef, Table

__all__ = ["explain_tabular", "TabularMethod", "TABULAR_METHODS", "MAX_BACKGROUND"]

MAX_BACKGROUND = 100
"""Background rows kept by default (a seeded sample of a larger set): each coalition of the
Shapley methods costs one model evaluation per background row."""


def _game(game: Game) -> BackgroundGame:
    if not isinstance(game, BackgroundGame):  # pragma: no cover - explain_tabular makes it
        raise TypeError("a table's method needs a BackgroundGame")
    return game


def _lime(game: Game, run: Run) -> Attribution:
    g, p = _game(game), run.config
    attribution, _ = lime_tabular(
        g.score,
        g.table,
        g.row,
        g.background,
        n_samples=p["n_samples"],
        generator=run.generator,
        kernel_width=p["kernel_width"],
        alpha=p["alpha"],
        rows_per_call=g.rows_per_call,
        progress=run.progress,
    )
    return attribution


def _tree(game: Game, run: Run) -> Attribution:
    from .tree import tree_shap

    g = _game(game)
    return tree_shap(g.model, g.score, g.table, g.row, g.background)


TABULAR_METHODS: dict[str, FeatureMethod] = {
    **{name: GAME_METHODS[name] for name in ("kernelshap", "exact_shapley", "permutation_shap")},
    "lime": replace(  # LIME on samples of the background's distribution, not on coalitions
        GAME_METHODS["lime"],
        params=(
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
        run=_lime,
    ),
    "tree_shap": FeatureMethod(
        "tree_shap",
        "Tree SHAP",
        "Lundberg et al., Nature Machine Intelligence 2020",
        (),
        _tree,
    ),
}
"""The methods :func:`explain_tabular` runs, by name: the Shapley methods on coalitions of
columns (:data:`~seethrough.attribution.methods.GAME_METHODS`), LIME on samples of the
background's distribution, and Tree SHAP."""

TabularMethod = FeatureMethod  # the name this module used first


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
    info = find_method(TABULAR_METHODS, method, "tabular")
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
        game = BackgroundGame(score, table, row, back, batch_size, model)
        run = Run(
            config, torch.Generator().manual_seed(seed + i), game.coalitions_per_call, progress
        )
        a = info.run(game, run)
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

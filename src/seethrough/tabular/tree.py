"""Tree SHAP for tree ensembles, through shap's compiled TreeExplainer (extra ``tabular``).

Lundberg et al., "From local explanations to global understanding with explainable AI for
trees", Nature Machine Intelligence 2020: the exact interventional Shapley values of a tree
ensemble against a background set, in time linear in the trees' size, with no sampling. The
values are the same game as :class:`~seethrough.tabular.sampling.BackgroundGame` (the model's
mean output with the hidden features taken from each background row), computed exactly; the
result is checked against the model's own output (efficiency) before it is returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..attribution.estimators import Attribution
from ..errors import MethodNotApplicableError, MissingDependencyError
from .model import ScoreFunction
from .table import Table

__all__ = ["tree_shap"]

_TOLERANCE = 1e-2  # shap computes in float32: a forest of 10 trees is off by up to 2e-3


def _explainer(model: Any, background: np.ndarray, model_output: str) -> Any:
    try:
        import shap
    except ImportError:
        raise MissingDependencyError(
            "tree_shap needs shap: pip install 'seethrough[tabular]'"
        ) from None
    try:
        return shap.TreeExplainer(
            model,
            data=background,
            feature_perturbation="interventional",
            model_output=model_output,
        )
    except Exception as exc:  # shap raises bare Exceptions for unsupported models
        raise MethodNotApplicableError(
            f"tree_shap explains tree ensembles (scikit-learn forests and gradient boosting, "
            f"XGBoost, LightGBM): {type(model).__name__} is not one ({str(exc).splitlines()[0]})"
        ) from None


def tree_shap(
    model: Any, score: ScoreFunction, table: Table, row: np.ndarray, background: np.ndarray
) -> Attribution:
    """Interventional Tree SHAP values of ``row`` for every output of ``score``.

    Raises:
        MethodNotApplicableError: not a tree ensemble, categorical columns or groups (the trees
            see single numeric columns), or an output the trees do not compute (checked by
            efficiency against ``score``).
        MissingDependencyError: shap is not installed.
    """
    if not table.numeric or any(len(cols) > 1 for cols in table.groups):
        raise MethodNotApplicableError(
            "tree_shap explains single numeric columns: use kernelshap for categorical "
            "columns or groups"
        )
    x = row.astype(np.float32).astype(np.float64)[None]  # as the trees see it
    bg = background.astype(np.float32).astype(np.float64)
    want = score(table.to_model(row[None]))[0]
    base_want = score(table.to_model(background)).mean(0)
    tried = []
    for model_output in ("raw",):
        explainer = _explainer(model, bg, model_output)
        values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype=np.float64)
        base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
        values = values.reshape(1, len(table.columns), -1)[0].T  # (T, F)
        if values.shape[0] != len(want) and values.shape[0] == 1 and len(want) == 2:
            values = np.stack([-values[0], values[0]])  # one score for two classes
            base = np.array([1 - base[0], base[0]]) if model_output == "probability" else base
        if values.shape[0] == len(want) and len(base) == len(want):
            gap = np.abs(base + values.sum(1) - want).max()
            base_gap = np.abs(base - base_want).max()
            if gap < _TOLERANCE * max(1.0, float(np.abs(want).max())) and base_gap < 1e-4:
                stats = {"efficiency_gap": float(np.abs(values.sum(1) - (want - base)).max())}
                return Attribution(values, base, want, 0, stats)
        tried.append(model_output)
    raise MethodNotApplicableError(
        f"tree_shap computes the trees' {' or '.join(tried)} output, which is not the "
        f"{score.output} being explained: choose output='decision_function' or 'predict_proba' "
        "to match, or use kernelshap"
    )

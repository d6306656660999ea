"""``audit_features``: does a model use its features the way it should? A random column and a
leak check.

The random-column check (the "random probe" of feature selection: Stoppiglia et al., JMLR 2003;
used with Shapley values by many practitioners since Lundberg & Lee, NeurIPS 2017): a copy of
the estimator is fitted on the table with one more column of uniform noise, and the rows'
Shapley values are summarised as a global importance per feature,

    importance(j) = mean over explained rows x of |phi_j(x)|,

the mean absolute attribution (shap's "global bar plot"). The noise carries no information
about the target, so whatever importance it gets is what the model draws from chance: a
feature ranked below it is one the model does not really use.

The leak check: a feature that explains almost everything by itself is usually a copy of the
target that would not be known when the model is used (an id that encodes the label, a
timestamp set after the outcome). A feature is reported as a leak when

    importance(top) >= LEAK_FACTOR * importance(second)  and  importance(top) > LEAK_SHARE * total

with :data:`LEAK_FACTOR` = 5 and :data:`LEAK_SHARE` = 1/2 (the random column counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attribution.explanation import FeatureExplanations
from ..errors import InvalidParameterError, MethodNotApplicableError
from .explain import explain_tabular
from .table import ColumnRef

__all__ = ["audit_features", "FeatureAudit", "LEAK_FACTOR", "LEAK_SHARE", "RANDOM_COLUMN"]

LEAK_FACTOR = 5.0
"""How many times the second feature's importance the top one needs to be a leak."""

LEAK_SHARE = 0.5
"""The share of the total importance the top feature needs to be a leak."""

RANDOM_COLUMN = "random"
"""The name of the added noise column (``random_2``, ... if the table has one so named)."""


@dataclass
class FeatureAudit:
    """What :func:`audit_features` found.

    Attributes:
        importance: every feature's mean ``|Shapley value|`` over the explained rows, the
            random column included, largest first.
        random_column: the name of the added noise column.
        unused: the features ranked below the random column (the model does not really use
            them), most important first.
        leak: the feature whose importance dwarfs the rest (see the module docstring), or
            ``None``.
        method: the method that computed the values.
        explanations: the explained rows' explanations (the random column included).
        estimator: the fitted copy of the estimator (with the random column as last column).
    """

    importance: dict[str, float]
    random_column: str
    unused: list[str]
    leak: str | None
    method: str
    explanations: FeatureExplanations
    estimator: Any

    @property
    def random_rank(self) -> int:
        """The random column's place in :attr:`importance` (0 = the most important)."""
        return list(self.importance).index(self.random_column)

    def table(self) -> str:
        """The importances as text, one feature a line, with what each was found to be."""
        width = max(len(f) for f in self.importance)
        lines = []
        for rank, (feature, value) in enumerate(self.importance.items(), 1):
            note = ""
            if feature == self.leak:
                note = "  <- leak?"
            elif feature == self.random_column:
                note = "  <- random noise"
            elif feature in self.unused:
                note = "  below random"
            lines.append(f"  {rank:>2}. {feature:<{width}}  {value:.4g}{note}")
        return "\n".join(lines)

    def __str__(self) -> str:
        rows = len(self.explanations)
        total = len(self.importance)
        lines = [
            f"Feature audit ({self.method}, mean |value| over {rows} rows): the random column "
            f"ranks {self.random_rank + 1} of {total}",
            self.table(),
        ]
        if self.leak is not None:
            values = list(self.importance.values())
            lines.append(
                f"leak? '{self.leak}' has {values[0] / max(values[1], 1e-300):.1f}x the next "
                f"feature's importance and {values[0] / sum(values):.0%} of the total: check "
                "that it is known when the model is used"
            )
        if self.unused:
            lines.append(f"not really used (below random noise): {', '.join(self.unused)}")
        if self.leak is None and not self.unused:
            lines.append("no leak found, and every feature ranks above random noise")
        return "\n".join(lines)


def audit_features(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    method: str | None = None,
    random_state: int = 0,
    rows: int = 50,
    max_background: int = 50,
    feature_names: Sequence[str] | None = None,
    categorical: Sequence[ColumnRef] | None = None,
    output: str = "auto",
    target: int | str | None = None,
    **params: Any,
) -> FeatureAudit:
    """Fit a copy of ``estimator`` with a random column added and report the features ranked
    below it and a feature that dwarfs the rest (see the module docstring for the formulas).

    Args:
        estimator: an unfitted (or fitted: it is cloned) scikit-learn estimator.
        X: the table, ``(n, d)`` (an array or a DataFrame).
        y: the target, ``(n,)``.
        method: the Shapley method (``"kernelshap"``, ``"exact_shapley"``,
            ``"permutation_shap"``, ``"tree_shap"``); default ``"tree_shap"`` for a tree
            ensemble when shap is installed and it computes the explained output, else
            ``"kernelshap"``.
        random_state: seeds the noise, the rows explained, the background and the sampling.
        rows: how many rows are explained (a seeded sample of ``X``; all when fewer).
        max_background: background rows (a seeded sample of ``X``).
        feature_names: the columns' names for an array (default ``x0, x1, ...``).
        categorical: categorical columns (default: non-numeric ones).
        output: which output of the estimator is explained (see
            :func:`~seethrough.tabular.as_score_function`).
        target: the explained output, by index or label (default: each row's top output).
        **params: the method's parameters.

    Returns:
        A :class:`FeatureAudit`; ``print(audit)`` gives the summary.

    Raises:
        InvalidParameterError: a bad ``rows``, ``X`` and ``y`` of different lengths, ``lime``
            (its slopes are not shares of the output).
    """
    from sklearn.base import clone

    if method == "lime":
        raise InvalidParameterError(
            "audit_features ranks Shapley values: use kernelshap, exact_shapley, "
            "permutation_shap or tree_shap"
        )
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidParameterError(f"rows must be a positive integer, got {rows!r}")
    rng = np.random.default_rng(random_state)
    frame = hasattr(X, "columns") and hasattr(X, "iloc")
    n = len(X)
    if len(y) != n:
        raise InvalidParameterError(f"X has {n} rows and y {len(y)}")
    if frame:
        names = [str(c) for c in X.columns]
    else:
        width = np.asarray(X, dtype=object).reshape(n, -1).shape[1]
        names = (
            list(feature_names) if feature_names is not None else [f"x{i}" for i in range(width)]
        )
    random_name = RANDOM_COLUMN
    k = 1
    while random_name in names:
        k += 1
        random_name = f"{RANDOM_COLUMN}_{k}"
    noise = rng.uniform(size=n)
    if frame:
        augmented = X.copy()
        augmented[random_name] = noise
    else:
        array = np.asarray(X)
        augmented = np.concatenate([array, noise[:, None].astype(array.dtype)], axis=1)
    fitted = clone(estimator).fit(augmented, y)
    pick = np.sort(rng.choice(n, min(rows, n), replace=False))
    explained = augmented.iloc[pick] if frame else augmented[pick]
    common: dict[str, Any] = dict(
        target=target,
        feature_names=None if frame else [*names, random_name],
        categorical=categorical,
        output=output,
        seed=random_state,
        max_background=max_background,
        **params,
    )
    chosen = method or _default_method(fitted)
    try:
        many = explain_tabular(fitted, augmented, explained, chosen, **common)
    except MethodNotApplicableError:
        if method is not None:
            raise
        chosen = "kernelshap"  # tree_shap computes another output than the one explained
        many = explain_tabular(fitted, augmented, explained, chosen, **common)
    if not isinstance(many, FeatureExplanations):  # one row explained
        many = FeatureExplanations([many])
    importance = many.importance()
    return FeatureAudit(
        importance=importance,
        random_column=random_name,
        unused=_below(importance, random_name),
        leak=_leak(importance),
        method=chosen,
        explanations=many,
        estimator=fitted,
    )


def _default_method(fitted: Any) -> str:
    """``tree_shap`` for a tree or tree ensemble (exact and fast; the caller falls back to
    ``kernelshap`` where it does not apply), else ``kernelshap``."""
    trees = any(hasattr(fitted, a) for a in ("tree_", "estimators_", "_predictors"))
    return "tree_shap" if trees else "kernelshap"


def _below(importance: dict[str, float], random_name: str) -> list[str]:
    """The features ranked after the random column."""
    order = list(importance)
    return order[order.index(random_name) + 1 :]


def _leak(importance: dict[str, float]) -> str | None:
    """The top feature when it is :data:`LEAK_FACTOR` times the second and more than
    :data:`LEAK_SHARE` of the total, else ``None``."""
    names, values = list(importance), list(importance.values())
    if len(values) < 2 or values[0] <= 0:
        return None
    if values[0] >= LEAK_FACTOR * values[1] and values[0] > LEAK_SHARE * sum(values):
        return names[0]
    return None

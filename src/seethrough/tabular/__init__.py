"""Explanations for rows of a table: Shapley values (exact, Kernel SHAP, permutation sampling,
Tree SHAP) and LIME, on the same coalition machinery as the image methods.

>>> from seethrough.tabular import explain_tabular
>>> e = explain_tabular(model, X_train, X_test[0], "kernelshap")   # doctest: +SKIP
>>> print(e.table(top=5))                                            # doctest: +SKIP
"""

from .audit import FeatureAudit, audit_features
from .explain import MAX_BACKGROUND, TABULAR_METHODS, TabularMethod, explain_tabular
from .files import TabularModel, load_tabular_model
from .model import OUTPUTS, ScoreFunction, as_score_function
from .table import Table

__all__ = [
    "explain_tabular",
    "TABULAR_METHODS",
    "TabularMethod",
    "MAX_BACKGROUND",
    "ScoreFunction",
    "as_score_function",
    "OUTPUTS",
    "Table",
    "audit_features",
    "FeatureAudit",
    "load_tabular_model",
    "TabularModel",
]

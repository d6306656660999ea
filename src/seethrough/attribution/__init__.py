"""Attributions over features that are not pixels: the columns of a table and the words of a
text. One cooperative-game interface (:class:`~seethrough.attribution.estimators.Game`), the
Shapley and LIME estimators on it, and the result object
(:class:`~seethrough.attribution.explanation.FeatureExplanation`)."""

from .estimators import Attribution, Game, exact_shapley, kernel_shap, lime, permutation_shap
from .explanation import FeatureExplanation, FeatureExplanations

__all__ = [
    "Attribution",
    "Game",
    "exact_shapley",
    "kernel_shap",
    "permutation_shap",
    "lime",
    "FeatureExplanation",
    "FeatureExplanations",
]

"""What tables and texts share around the estimators: a model as one checked function from inputs
to scores, the choice of the output explained, and the parameters the Shapley and LIME methods
take whatever the features are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidTargetError, ModelOutputError, UnknownClassError, suggest
from ..registry import Param

__all__ = [
    "ScoreFunction",
    "output_index",
    "KERNELSHAP_SAMPLES",
    "kernelshap_samples",
    "PERMUTATIONS",
    "LIME_SAMPLES",
    "RIDGE_ALPHA",
]


@dataclass
class ScoreFunction:
    """``fn(inputs) -> (n, T)`` float64 scores, and what they are.

    Attributes:
        fn: takes the inputs as the model wants them (rows of a table: a 2-D array or a
            DataFrame; texts: a list of strings) and returns ``(n,)`` or ``(n, T)`` scores.
        output: which output is explained, for people (``"predict_proba"``, ``"function"``).
        labels: the outputs' names (a classifier's classes), if known.
        unit: what one input is, for error messages (``"rows"``, ``"texts"``).
    """

    fn: Callable[[Any], np.ndarray]
    output: str
    labels: list[str] | None = None
    unit: str = "rows"

    def __call__(self, inputs: Any) -> np.ndarray:
        scores = np.asarray(self.fn(inputs))
        if scores.dtype == object or not np.issubdtype(scores.dtype, np.number):
            raise ModelOutputError(
                f"the model's {self.output} returned {scores.dtype} values, not numbers"
            )
        scores = scores.astype(np.float64, copy=False)
        if scores.ndim == 1:
            scores = scores[:, None]
        n = len(inputs)
        if scores.ndim != 2 or scores.shape[0] != n:
            raise ModelOutputError(
                f"the model's {self.output} returned shape {scores.shape} for {n} {self.unit}; "
                f"expected ({self.unit},) or ({self.unit}, outputs)"
            )
        return scores


def output_index(
    target: int | str | None, labels: Sequence[str] | None, prediction: np.ndarray
) -> int:
    """The output to explain: ``target`` by index or by label (one of ``labels``), else the
    input's top output (``prediction``, ``(T,)``, the model's scores on it).

    Raises:
        UnknownClassError: a label that is not one of ``labels``.
        InvalidTargetError: an index out of range, or neither an index nor a label.
    """
    outputs = len(prediction)
    if target is None:
        return int(np.argmax(prediction)) if outputs > 1 else 0
    if isinstance(target, str):
        names = list(labels or [])
        if target in names:
            return names.index(target)
        raise UnknownClassError(f"unknown class {target!r}.{suggest(target, names)}")
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
        raise InvalidTargetError(f"target must be an output index or a label, got {target!r}")
    if not 0 <= int(target) < outputs:
        raise InvalidTargetError(
            f"target {target} is out of range: the model has {outputs} outputs"
        )
    return int(target)


KERNELSHAP_SAMPLES = Param(
    "n_samples",
    0,
    "coalitions (0: 2F + 2048, as shap's KernelExplainer; all of them, exact, when they fit)",
    int,
    min=0,
)
"""Kernel SHAP's budget of coalitions."""


def kernelshap_samples(n_samples: int, n_features: int) -> int:
    """Kernel SHAP's budget: ``n_samples``, or for 0 ``2F + 2048`` (shap's KernelExplainer's
    default for ``F`` features)."""
    return n_samples or 2 * n_features + 2048


PERMUTATIONS = Param(
    "n_permutations",
    10,
    "random orders of the features, each followed by its reverse",
    int,
    min=1,
)
"""Permutation SHAP's number of random orders."""

LIME_SAMPLES = Param("n_samples", 5000, "perturbed samples around the input", int, min=2)
"""LIME's number of perturbed samples (lime's default)."""

RIDGE_ALPHA = Param("alpha", 1.0, "ridge penalty of the local linear model", float, min=0)
"""LIME's ridge penalty (lime's default, scikit-learn's ``Ridge(alpha=1)``)."""

"""The batched engine every perturbation method uses to evaluate the model on masked inputs.

The machinery lives in :mod:`seethrough.core.perturb` (the gradient methods' baselines and the
faithfulness metrics use it too) and the progress counter in :mod:`seethrough.core.progress`;
this module keeps their names where the perturbation family, and code written against it,
imports them, next to the family's shared parameters.
"""

from __future__ import annotations

from ...core.perturb import (
    FeatureMasks,
    MaskSource,
    PixelMasks,
    auto_batch_size,
    evaluate,
    hidden_image,
)
from ...core.progress import Ticker
from ..params import BATCH_SIZE, HIDE, HIDE_KEYWORDS, SCORE, SEED

__all__ = [
    "MaskSource",
    "FeatureMasks",
    "PixelMasks",
    "Ticker",
    "evaluate",
    "hidden_image",
    "auto_batch_size",
    "HIDE",
    "BATCH_SIZE",
    "SEED",
    "SCORE",
    "HIDE_KEYWORDS",
]

"""The parameters several methods share, declared once.

A method lists these in its ``params`` as they are, or as a variant with its own default or
help text made by :func:`dataclasses.replace` (a :class:`~seethrough.registry.Param` is frozen):

    params = (replace(N_SAMPLES, default=2000, help="number of random masks"), ...)

so a shared parameter keeps one name, type and bounds across the methods, and a change to them
is made in one place.
"""

from __future__ import annotations

from dataclasses import replace

from ..core.kinds import Fill
from ..core.perturb import HIDE_KEYWORDS
from ..registry import Param

__all__ = [
    "RELU",
    "SEED",
    "N_SAMPLES",
    "BATCH_SIZE",
    "INTERNAL_BATCH",
    "TOP_LABELS",
    "HIDE",
    "HIDE_KEYWORDS",
    "SCORE",
    "BASELINE",
    "BASELINE_KEYWORDS",
    "REDUCTIONS",
    "reduce_param",
]

RELU = Param("relu", True, "keep only the positive evidence (ReLU), as the paper does", bool)
"""Whether a CAM map keeps only its positive part."""

SEED = Param("seed", 0, "seed of the random generator (same seed, same result, bit for bit)", int)
"""The seed of a method that draws random numbers."""

N_SAMPLES = Param("n_samples", 1000, "model evaluations per image", int, min=1)
"""How many random samples (coalitions, masks, noisy copies) a method draws per image."""

BATCH_SIZE = Param(
    "batch_size",
    0,
    "perturbed images per forward pass (0: what fits GPU memory; 4 of 224x224 on the CPU)",
    int,
    min=0,
)
"""Model inputs per forward pass of a method that evaluates many per image (0: automatic)."""

INTERNAL_BATCH = replace(
    BATCH_SIZE,
    help="inputs per forward/backward pass when a method evaluates many (0: chosen to fit memory)",
    aliases=("internal_batch_size",),
)
"""``batch_size`` of a gradient method that evaluates many inputs: inputs per forward and
backward pass (0: automatic). Its former name ``internal_batch_size`` still works, with a
``DeprecationWarning``."""

TOP_LABELS = Param(
    "top_labels",
    1,
    "explain this many classes at once (the target, then the next most likely); free: "
    "the same evaluations serve every class, one row of .weights each",
    int,
    min=1,
)
"""How many classes a surrogate explains from the same evaluations."""


HIDE = Param(
    "hide",
    0.0,
    "what replaces hidden pixels: a number in model-input space (0 = the dataset's mean colour "
    "for normalised inputs), 'mean' (the image's channel means), 'blur', 'noise', or an image "
    "(with the input's channels and size; one, or one per input image)",
    Fill.of(HIDE_KEYWORDS),
    kind="image",
)
"""What a perturbation method puts in place of the pixels it hides."""

SCORE = Param(
    "score",
    "probability",
    "what is explained for a class target: its softmax 'probability' or its 'logit'",
    str,
    choices=("probability", "logit"),
)
"""Which output of a class a perturbation method explains."""

BASELINE_KEYWORDS = ("black", "blur", "mean", "noise")
"""The words ``baseline`` takes besides numbers and images."""

BASELINE = Param(
    "baseline",
    "black",
    "reference input: 'black' (black image in model-input space), 'blur', 'mean' (the image's "
    "channel means), 'noise', a number (model-input space), or an image (with the input's "
    "channels and size; one, or one per input image)",
    Fill.of(BASELINE_KEYWORDS),
    kind="image",
)
"""The reference input of a path or expectation gradient method."""

REDUCTIONS = ("abs_max", "max", "sum", "abs_sum", "mean", "abs_mean", "l2")
"""How a gradient attribution ``(C, H, W)`` becomes a map ``(H, W)``."""

_REDUCE = Param(
    "reduce",
    "abs_max",
    "how the (C, H, W) attribution becomes a map: 'abs_max' (max over channels of |a|), "
    "'max', 'sum' (signed), 'abs_sum', 'mean', 'abs_mean' or 'l2' (norm over channels)",
    str,
    choices=REDUCTIONS,
)


def reduce_param(default: str) -> Param:
    """The ``reduce`` parameter with a method's own default."""
    return replace(_REDUCE, default=default)

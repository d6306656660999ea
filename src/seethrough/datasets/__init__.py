"""Data sets with ground truth for evaluating explanations.

:mod:`seethrough.datasets.synthetic`: digits on clutter with known stroke masks. The small CNN
trained on them is :mod:`seethrough.models.digits` (``load_model("synthetic_digits")``); its
names ``DigitsNet``, ``load_digits_model`` and ``train_digits_model`` still resolve here.
"""

from typing import Any

from . import synthetic
from .synthetic import (
    ShortcutDigits,
    SyntheticDigits,
    make_digits,
    make_shortcut_digits,
    write_folder,
)

__all__ = [
    "DigitsNet",
    "ShortcutDigits",
    "SyntheticDigits",
    "load_digits_model",
    "make_digits",
    "make_shortcut_digits",
    "train_digits_model",
    "write_folder",
]

_MODEL_NAMES = ("DigitsNet", "load_digits_model", "train_digits_model")


def __getattr__(name: str) -> Any:
    """The digits model's names, from :mod:`seethrough.models.digits`, where they now live."""
    if name in _MODEL_NAMES:
        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

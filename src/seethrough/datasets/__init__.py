"""Data sets with ground truth for evaluating explanations.

:mod:`seethrough.datasets.synthetic`: digits on clutter with known stroke masks, and a small CNN
trained on them (``load_model("synthetic_digits")``).
"""

from seethrough.datasets.synthetic import (
    DigitsNet,
    SyntheticDigits,
    load_digits_model,
    make_digits,
    train_digits_model,
    write_folder,
)

__all__ = [
    "DigitsNet",
    "SyntheticDigits",
    "load_digits_model",
    "make_digits",
    "train_digits_model",
    "write_folder",
]

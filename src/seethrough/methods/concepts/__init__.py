"""The concepts family: Deep Feature Factorization on a torch NMF.

Imports are in registry order.
"""
# isort: skip_file

from .nmf import nmf, nmf_batched
from .dff import Concepts, DeepFeatureFactorization, factorize

__all__ = [
    "nmf",
    "nmf_batched",
    "Concepts",
    "DeepFeatureFactorization",
    "factorize",
]

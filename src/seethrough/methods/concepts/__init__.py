"""The concepts family: Deep Feature Factorization on a torch NMF."""

from .dff import Concepts, DeepFeatureFactorization, factorize
from .nmf import nmf, nmf_batched

__all__ = [
    "nmf",
    "nmf_batched",
    "Concepts",
    "DeepFeatureFactorization",
    "factorize",
]

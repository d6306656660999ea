"""The perturbation family: one batched engine (:mod:`.engine`), segmentation, and the methods.

Imports are in registry order.
"""
# isort: skip_file

from .engine import FeatureMasks, PixelMasks, evaluate, hidden_image
from .segmentation import segment
from .base import PerturbationMethod
from .surrogate import SurrogateMethod
from .lime import Lime
from .kernelshap import KernelShap
from .occlusion import Occlusion
from .rise import Rise

__all__ = [
    "FeatureMasks",
    "PixelMasks",
    "evaluate",
    "hidden_image",
    "segment",
    "PerturbationMethod",
    "SurrogateMethod",
    "Lime",
    "KernelShap",
    "Occlusion",
    "Rise",
]

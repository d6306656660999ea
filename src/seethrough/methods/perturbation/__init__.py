"""The perturbation family: one batched engine (:mod:`.engine`), segmentation, and the methods."""

from .base import PerturbationMethod
from .drise import DRise
from .engine import FeatureMasks, PixelMasks, evaluate, hidden_image
from .kernelshap import KernelShap
from .lime import Lime
from .occlusion import Occlusion
from .rise import Rise
from .segmentation import segment
from .surrogate import SurrogateMethod

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
    "DRise",
]

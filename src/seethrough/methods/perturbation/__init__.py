"""The perturbation family: one batched engine (:mod:`.engine`), segmentation, and the methods."""

from .base import PerturbationMethod
from .dax import Dax
from .drise import DRise
from .engine import FeatureMasks, PixelMasks, evaluate, hidden_image
from .feature_ablation import FeatureAblation
from .kernelshap import KernelShap
from .lime import Lime
from .occlusion import Occlusion
from .rise import Rise
from .segmentation import segment
from .shapley_sampling import ShapleySampling
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
    "FeatureAblation",
    "ShapleySampling",
    "Dax",
]

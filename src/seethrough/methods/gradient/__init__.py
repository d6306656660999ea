"""The gradient family: saliency, guided backprop, Guided Grad-CAM, integrated gradients,
SmoothGrad and Gradient SHAP, on one pipeline (:mod:`.base`).
"""

from .base import GradientMethod, input_gradients, reduce_channels
from .guided_backprop import GuidedBackprop, GuidedGradCAM
from .integrated_gradients import IntegratedGradients
from .saliency import Saliency
from .smoothgrad import GradientShap, SmoothGrad

__all__ = [
    "GradientMethod",
    "input_gradients",
    "reduce_channels",
    "Saliency",
    "GuidedBackprop",
    "GuidedGradCAM",
    "IntegratedGradients",
    "SmoothGrad",
    "GradientShap",
]

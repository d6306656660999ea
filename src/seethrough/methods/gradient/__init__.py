"""The gradient family: saliency, input x gradient, guided backprop, the deconvnet, Guided
Grad-CAM, integrated gradients, DeepLIFT, DeepLIFT SHAP, SmoothGrad, Gradient SHAP, the noise
tunnel and LRP, on one pipeline (:mod:`.base`).
"""

from .base import GradientMethod, input_gradients, reduce_channels
from .deconvnet import Deconvnet
from .deeplift import DeepLift, DeepLiftShap
from .guided_backprop import GuidedBackprop, GuidedGradCAM
from .input_x_gradient import InputXGradient
from .integrated_gradients import IntegratedGradients
from .lrp import LRP
from .noise_tunnel import NoiseTunnel
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
    "InputXGradient",
    "Deconvnet",
    "DeepLift",
    "DeepLiftShap",
    "NoiseTunnel",
    "LRP",
]

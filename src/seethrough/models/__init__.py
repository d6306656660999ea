"""The model zoo: classifiers with their preprocessing and labels.

``load_model()`` gives the bundled EfficientNet-Lite0 (real ImageNet weights, offline);
``load_model("resnet50")`` a torchvision model, ``load_model("timm:convnext_tiny")`` a timm one,
``load_model("resnet18", weights="finetuned.safetensors")`` local weights.
"""

from .labels import generic_labels, imagenet_labels
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .vision_model import Prediction, VisionModel, module_of
from .zoo import list_models, load_model

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Prediction",
    "Preprocessing",
    "VisionModel",
    "generic_labels",
    "imagenet_labels",
    "list_models",
    "load_model",
    "module_of",
]

"""The CAM family: one pipeline (:mod:`.base`) and one short module per variant.

Imports are in registry order (the order the CLI and the dashboard list the methods).
"""
# isort: skip_file

from .base import CAMMethod, CAMState
from .cam import CAM
from .gradcam import GradCAM
from .gradcampp import GradCAMPlusPlus
from .xgradcam import XGradCAM
from .layercam import LayerCAM
from .hirescam import HiResCAM
from .scorecam import ScoreCAM
from .eigencam import EigenCAM

__all__ = [
    "CAMMethod",
    "CAMState",
    "CAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "HiResCAM",
    "ScoreCAM",
    "EigenCAM",
]

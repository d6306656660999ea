"""The CAM family: one pipeline (:mod:`.base`) and one short module per variant."""

from .base import CAMMethod, CAMState
from .cam import CAM
from .eigencam import EigenCAM
from .gradcam import GradCAM
from .gradcampp import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .scorecam import ScoreCAM
from .xgradcam import XGradCAM

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

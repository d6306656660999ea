"""The CAM family: one pipeline (:mod:`.base`) and one short module per variant."""

from .ablationcam import AblationCAM
from .base import CAMMethod, CAMState
from .cam import CAM
from .eigencam import EigenCAM
from .fullgrad import FullGrad
from .gradcam import GradCAM
from .gradcam_elementwise import GradCAMElementWise
from .gradcampp import GradCAMPlusPlus
from .hirescam import HiResCAM
from .kpcacam import KPCACAM
from .layercam import LayerCAM
from .scorecam import ScoreCAM
from .smoothgradcampp import SmoothGradCAMPlusPlus
from .sscam import ISCAM, SSCAM
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
    "GradCAMElementWise",
    "SmoothGradCAMPlusPlus",
    "AblationCAM",
    "SSCAM",
    "ISCAM",
    "KPCACAM",
    "FullGrad",
]

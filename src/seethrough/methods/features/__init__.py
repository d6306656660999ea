"""The features family: what a layer responds to (feature maps) and what input reproduces or
excites it (feature inversion and visualisation).
"""

from .feature_maps import FeatureMaps
from .inversion import FeatureInversion, display_images, gaussian_blur, total_variation

__all__ = [
    "FeatureMaps",
    "FeatureInversion",
    "display_images",
    "gaussian_blur",
    "total_variation",
]

"""Numbers that say how good an explanation is, each with metadata in the registry.

Plain functions on numpy maps and masks (and the model where needed):

- localisation: :func:`iou`, :func:`iou_sweep`, :func:`pointing_game`, :func:`energy_pointing_game`
  against a mask or a box (:func:`explained_region`: the box or mask a detector's or
  segmenter's target explains);
- faithfulness: :func:`deletion`, :func:`insertion`, :func:`hide_top`, :func:`average_drop`,
  :func:`increase_in_confidence`;
- robustness: :func:`robustness`;
- randomization (sanity check): :func:`cascading_randomization`;
- baselines every table includes: :func:`random_map`, :func:`centre_gaussian`.

``seethrough.list_metrics()`` gives each metric's category, whether higher is better and what it
needs, so reports and front ends can label and sort them.
"""

from ..registry import MetricInfo, get_metric, list_metrics
from .base import ModelProbe, as_map, as_mask, as_region, box_mask, explained_region
from .baselines import centre_gaussian, random_map
from .faithfulness import *  # noqa: F403
from .faithfulness import __all__ as _faithfulness
from .localisation import IoUSweep, binarize, energy_pointing_game, iou, iou_sweep, pointing_game
from .randomization import *  # noqa: F403
from .randomization import __all__ as _randomization
from .robustness import *  # noqa: F403
from .robustness import __all__ as _robustness

__all__ = [
    "MetricInfo",
    "get_metric",
    "list_metrics",
    "ModelProbe",
    "as_map",
    "as_mask",
    "as_region",
    "box_mask",
    "explained_region",
    "random_map",
    "centre_gaussian",
    "iou",
    "iou_sweep",
    "IoUSweep",
    "binarize",
    "pointing_game",
    "energy_pointing_game",
    *_faithfulness,
    *_robustness,
    *_randomization,
]

"""seethrough: see what deep vision models look at, and why.

The public face::

    import seethrough
    model = seethrough.load_model()                   # bundled EfficientNet-Lite0 (ImageNet)
    top5 = model.predict("sample:chelsea")            # [(index, label, probability), ...]
    e = seethrough.explain(model, "sample:chelsea", "gradcam")
    e.save("out/")                                    # PNG overlay, .npz arrays, JSON manifest
    seethrough.list_methods()                         # everything explain() can run
    seethrough.list_metrics()                         # how to score a map (seethrough.metrics)

Detectors and segmenters explain a box or a class mask (``from seethrough.targets import Box,
Mask``)::

    detector = seethrough.load_model("fasterrcnn_mobilenet_v3_large_320_fpn")
    e = seethrough.explain(detector, "sample:astronaut", "gradcam", target=seethrough.Box(index=0))

Rows of a table and words of a text have their own entry points::

    e = seethrough.explain_tabular(estimator, X_train, X_test[0], "kernelshap")
    report = seethrough.audit_features(estimator, X, y)   # a random column, a leak
    e = seethrough.explain_text(predict_proba, "a sentence to explain", "lime")
"""

from typing import Any

from . import errors, registry
from ._version import __version__
from .api import explain
from .explanation import Explanation
from .models import Preprocessing, VisionModel, list_models, load_model
from .registry import (
    MethodInfo,
    MetricInfo,
    Param,
    get_method,
    get_metric,
    list_methods,
    list_metrics,
)
from .tabular import audit_features, explain_tabular
from .targets import Box, Mask
from .text import explain_text


def _builtin_methods() -> None:
    from . import methods  # noqa: F401  (importing registers every built-in method)


def _builtin_metrics() -> None:
    from . import metrics  # noqa: F401  (importing registers every built-in metric)


def __getattr__(name: str) -> Any:
    """``ExplanationRecorder``, from :mod:`seethrough.training`, imported on first use."""
    if name == "ExplanationRecorder":
        from .training import ExplanationRecorder

        return ExplanationRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# the registry imports none of what it lists: this package fills it, on the first lookup
registry.METHODS.fill_with(_builtin_methods)
registry.METRICS.fill_with(_builtin_metrics)

__all__ = [
    "__version__",
    "errors",
    "explain",
    "explain_text",
    "explain_tabular",
    "audit_features",
    "Explanation",
    "load_model",
    "list_models",
    "VisionModel",
    "Preprocessing",
    "list_methods",
    "get_method",
    "MethodInfo",
    "Param",
    "list_metrics",
    "get_metric",
    "MetricInfo",
    "Box",
    "Mask",
    "ExplanationRecorder",
]

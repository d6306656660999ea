"""Explanations across training: watch what a model learns to look at, epoch by epoch.

In a plain training loop::

    rec = seethrough.ExplanationRecorder(probe_images, methods=("gradcam",), masks=masks,
                                         labels=labels, out="runs/exp1")
    for epoch in range(epochs):
        train_one_epoch(model)
        rec.record(model, epoch, loss=loss, accuracy=accuracy)
    rec.settled_epoch()                          # the "attention settled" stopping hint
    # with Keras: model.fit(..., callbacks=[seethrough.training.keras_callback(rec)])
    # with Lightning: Trainer(callbacks=[seethrough.training.lightning_callback(rec)])
    seethrough.training.build_report("runs/exp1")  # GIF strips, contact sheets, plots, HTML

:func:`read_run` reads a run directory back (the layout is in :mod:`seethrough.training.run`).
"""

from typing import Any

from .run import Row, Run, read_run, settled_epoch

__all__ = [
    "ExplanationRecorder",
    "Row",
    "Run",
    "build_report",
    "epoch_pictures",
    "keras_callback",
    "lightning_callback",
    "metric_panels",
    "read_run",
    "settled_epoch",
]

_LAZY = {
    "ExplanationRecorder": "recorder",
    "build_report": "report",
    "epoch_pictures": "report",
    "metric_panels": "report",
    "keras_callback": "keras",
    "lightning_callback": "lightning",
}


def __getattr__(name: str) -> Any:
    """The recorder, the report and the adapters, imported on first use (the report needs the
    plotting stack; the adapters import Keras or Lightning only when a callback is made)."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The training demo: watch the evaluation benchmark's small CNN learn where a digit is.

:func:`run_demo` (``seethrough train-demo``) trains a freshly initialised
:class:`~seethrough.models.digits.DigitsNet`, the small CNN that ``seethrough benchmark``
evaluates every method with, on the generated digits of :func:`~seethrough.datasets.make_digits`
(one digit on clutter, its pixels known), in a plain PyTorch loop with an
:class:`~seethrough.training.ExplanationRecorder` on 16 held-out probe images with their
masks, and writes the report. Epoch 0 is the untrained net: its Grad-CAM's peak lands on the
digit for about a quarter of the probes, near chance (the digit covers about a tenth of the
image, and an untrained map has broad ties); by the last epoch it lands there about as often as
with the fully trained benchmark model (:data:`REFERENCE_POINTING_GAME`).

The recipe is the benchmark model's (:func:`~seethrough.models.digits.train_digits_model`:
AdamW, Loshchilov and Hutter, ICLR 2019; a one-cycle learning rate, Smith and Topin, 2017;
cross-entropy; one seeded data order) on fewer images seen more often, so that there are
epochs to watch: the defaults take about a minute on a laptop CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.threads import torch_threads
from ..datasets.synthetic import make_digits
from ..errors import InvalidParameterError
from ..models import VisionModel, load_model
from ..models._trained import to_input
from .recorder import ExplanationRecorder

__all__ = [
    "REFERENCE_POINTING_GAME",
    "DEMO_PROBES",
    "DemoResult",
    "run_demo",
    "train_epoch",
]

REFERENCE_POINTING_GAME = 0.70
"""Grad-CAM's pointing game on held-out digits with the fully trained benchmark model
(``seethrough benchmark --methods gradcam``; :class:`~seethrough.models.digits.DigitsNet`)."""
DEMO_PROBES = 16
"""Held-out probe images the demo records (test split: digits the net never trains on)."""


@dataclass
class DemoResult:
    """What :func:`run_demo` did.

    Attributes:
        out: the run directory.
        epochs: training epochs (the run also holds epoch 0, the untrained net).
        pointing_game: ``{epoch: mean pointing game of the first method over the probes}``.
        accuracy: ``{epoch: the probes' accuracy}``.
        loss: ``{epoch: mean training loss}`` (epochs 1 on).
        train_seconds: seconds spent training (rendering and recording excluded).
        recorder_seconds: seconds the recorder took, all epochs together.
        settled: the "attention settled" epoch, or ``None``.
        report: the HTML report, or ``None`` when it was not built.
        model: the trained model (eval mode).
    """

    out: Path
    epochs: int
    pointing_game: dict[int, float] = field(default_factory=dict)
    accuracy: dict[int, float] = field(default_factory=dict)
    loss: dict[int, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    recorder_seconds: float = 0.0
    settled: int | None = None
    report: Path | None = None
    model: VisionModel | None = None


def train_epoch(
    model: VisionModel,
    images: np.ndarray,
    labels: torch.Tensor,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    order: torch.Generator,
    batch: int,
) -> tuple[float, float]:
    """One pass over ``images`` in an order drawn from ``order``: cross-entropy, one optimiser
    and schedule step per batch.

    Args:
        model: the network in training (its module is put in train mode).
        images: uint8 ``(N, H, W, 3)`` training images, preprocessed as ``model`` says.
        labels: int64 ``(N,)`` classes.
        optimiser: steps the module's parameters.
        schedule: the learning rate schedule, stepped after each batch.
        order: the generator the data order is drawn from.
        batch: images per step.

    Returns:
        The epoch's mean loss and its training accuracy (of the batches as they were trained).
    """
    module = model.module.train()
    total, hits = 0.0, 0
    for idx in torch.randperm(len(images), generator=order).split(batch):
        x = to_input(images[idx.numpy()], model.preprocessing)
        outputs = module(x.to(memory_format=torch.channels_last))
        loss = F.cross_entropy(outputs, labels[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        total += loss.item() * len(idx)
        hits += int((outputs.argmax(1) == labels[idx]).sum())
    return total / len(images), hits / len(images)


def run_demo(
    out: str | os.PathLike[str] = "runs/demo",
    *,
    epochs: int = 8,
    n_train: int = 6000,
    batch: int = 64,
    lr: float = 8e-3,
    methods: Sequence[str] = ("gradcam",),
    probes: int = DEMO_PROBES,
    seed: int = 0,
    threads: int | None = None,
    report: bool = True,
    log: Callable[[str], Any] | None = None,
) -> DemoResult:
    """Train the benchmark's small CNN from scratch with an explanation recorder, and report.

    Renders ``n_train`` training digits and ``probes`` held-out ones (test split, clutter of
    seed ``seed + 1``, with masks and labels), records epoch 0 (the untrained net), then trains
    ``epochs`` passes of :func:`train_epoch` (AdamW, weight decay ``1e-4``, one-cycle learning
    rate peaking at ``lr`` after 20 % of the steps) and records each. The recorder explains each
    probe's true class, so its maps are comparable across epochs. ``seed`` seeds the data, the
    initial weights and the data order: the same seed, library versions and thread count give
    the same run.

    Args:
        out: the run directory (a run of the same probes and methods there is resumed: its
            epochs are replaced).
        epochs: training epochs.
        n_train: training images (rendered once).
        batch: images per step.
        lr: the peak learning rate.
        methods: the methods recorded (the first one's pointing game is reported).
        probes: held-out probe images.
        seed: seeds everything.
        threads: torch intra-op threads (``None``: torch's current setting).
        report: build the HTML report at the end (:func:`seethrough.training.build_report`).
        log: called with one line per recorded epoch (e.g. ``print``).

    Returns:
        What was recorded, the training and recording times, the report's path and the model.

    Raises:
        InvalidParameterError: a count below 1 or a learning rate that is not positive.
    """
    if min(epochs, n_train, batch, probes) < 1 or not lr > 0:
        raise InvalidParameterError("epochs, n_train, batch and probes must be >= 1, lr > 0")
    result = DemoResult(out=Path(out), epochs=epochs)
    with torch_threads(threads):
        train = make_digits(n_train, seed=seed, split="train")
        held_out = make_digits(probes, seed=seed + 1, split="test")
        torch.manual_seed(seed)
        model = load_model("synthetic_digits", weights="none")
        model.module.to(memory_format=torch.channels_last)
        recorder = ExplanationRecorder(
            {f"digit{i:02d}": image for i, image in enumerate(held_out.images)},
            methods=methods,
            masks=held_out.masks,
            labels=held_out.labels,
            out=out,
        )
        recorder.check(model)  # a bad layer or method fails now, not after training
        optimiser = torch.optim.AdamW(model.module.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * -(-n_train // batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, steps, pct_start=0.2)
        order = torch.Generator().manual_seed(seed)
        labels = torch.from_numpy(train.labels)
        for epoch in range(epochs + 1):
            metrics: dict[str, float] = {}
            if epoch > 0:
                start = time.perf_counter()
                loss, accuracy = train_epoch(
                    model, train.images, labels, optimiser, schedule, order, batch
                )
                result.train_seconds += time.perf_counter() - start
                metrics = {"loss": loss, "train_accuracy": accuracy}
                result.loss[epoch] = loss
            summary = recorder.record(model, epoch, **metrics)
            result.recorder_seconds += summary["recorder_seconds"]
            result.pointing_game[epoch] = summary["methods"][recorder.methods[0]]["pointing_game"]
            result.accuracy[epoch] = summary["accuracy"]
            if log is not None:
                log(_epoch_line(epoch, epochs, summary, recorder.methods[0]))
    model.module.to(memory_format=torch.contiguous_format).eval()
    result.model = model
    result.settled = recorder.settled_epoch()
    if report:
        from .report import build_report

        result.report = build_report(out)
    return result


def _epoch_line(epoch: int, epochs: int, summary: dict[str, Any], method: str) -> str:
    """``epoch 3/8: loss 0.412, probes 12/16 right, gradcam pointing game 0.62 (0.4 s)``."""
    loss = summary["metrics"].get("loss")
    parts = [f"epoch {epoch}/{epochs}:", "untrained," if loss is None else f"loss {loss:.3f},"]
    parts.append(f"probe accuracy {summary['accuracy']:.2f},")
    parts.append(f"{method} pointing game {summary['methods'][method]['pointing_game']:.2f}")
    parts.append(f"(recorder {summary['recorder_seconds']:.2f} s)")
    return " ".join(parts)

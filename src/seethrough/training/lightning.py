"""Record explanations while PyTorch Lightning trains: :func:`lightning_callback`.

``Trainer(callbacks=[seethrough.training.lightning_callback(rec)])`` calls
:meth:`ExplanationRecorder.record <seethrough.training.recorder.ExplanationRecorder.record>`
once per training epoch of ``trainer.fit`` with the model being trained, in memory, and the
numbers of ``trainer.callback_metrics`` (what ``self.log`` logged: train and validation loss,
accuracy...) as the user's metrics. Run epoch ``e`` is the model after ``e`` epochs of
training (Lightning's ``current_epoch + 1``), as with the Keras callback, so epoch 0 stays the
untrained model's (``initial=True`` records it when training starts).

When it records (``on=``):

- ``"train"`` (the default): at ``on_train_epoch_end``. Lightning runs an epoch's validation
  before this hook, so the metrics are complete: the epoch's aggregated training metrics
  (logged with ``on_epoch=True``) and its validation metrics. Metrics logged in the
  LightningModule's own ``on_train_epoch_end`` come after callbacks and are not seen.
- ``"validation"``: at ``on_validation_end`` of each validation that ``fit`` runs (the sanity
  check excepted), inside Lightning's ``torch.no_grad()``; epochs without validation
  (``check_val_every_n_epoch``) are not recorded, and with ``val_check_interval`` below one
  epoch the last validation of an epoch replaces the earlier ones. The validation metrics are
  this validation's; the training metrics are as Lightning holds them mid-epoch (the last
  step's, or the previous epoch's aggregate), so prefer ``"train"`` when they matter.

The recorder's ``every`` applies in both. Gradients work inside the call wherever the hook
runs: under ``torch.no_grad()`` (``fit``'s validation) the recorder enables them, and under
``torch.inference_mode()`` (``trainer.validate``'s loop, some strategies) it runs in
``torch.inference_mode(False)`` and makes the probes' tensors there, so none is an inference
tensor (those cannot take part in autograd). Lightning's sanity check is
never recorded, and under a multi-process strategy only global rank 0 explains and writes.

The callback leaves training as it was: besides what the recorder restores (every
parameter's ``requires_grad`` and ``.grad``, train/eval flags, grad mode, the torch, numpy and
Python random states), it reads no optimizer, scheduler or data loader and logs nothing, so a
fit with the callback gives the same weights as one without it for the same
``lightning.seed_everything``.

Lightning is imported on first use only (the ``[lightning]`` extra): ``import seethrough``
does not import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from operator import attrgetter
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ..errors import InvalidParameterError, MissingDependencyError
from ..models import VisionModel
from .recorder import scalar_metrics

if TYPE_CHECKING:
    from .recorder import ExplanationRecorder

__all__ = ["lightning_callback", "lightning_module"]  # and LightningRecorderCallback

ModelChoice = Callable[[nn.Module], VisionModel | nn.Module] | str | None
"""What the callback explains: the LightningModule (``None``), a dotted attribute of it
(``"net"``, ``"model.backbone"``), or a function of the LightningModule."""

_WHEN = ("train", "validation")


def lightning_module() -> ModuleType:
    """``lightning.pytorch``, imported on first use.

    Raises:
        MissingDependencyError: Lightning is not installed.
    """
    try:
        return importlib.import_module("lightning.pytorch")
    except ImportError:
        raise MissingDependencyError(
            "the Lightning callback needs PyTorch Lightning: pip install 'seethrough[lightning]'"
        ) from None


def lightning_callback(
    recorder: ExplanationRecorder,
    *,
    model: ModelChoice = None,
    on: Literal["train", "validation"] = "train",
    initial: bool = False,
    check: bool = True,
) -> Any:
    """A ``lightning.pytorch.Callback`` that records ``recorder`` once per epoch of ``fit``.

    Example:
        >>> rec = seethrough.ExplanationRecorder(probes, masks=masks, out="runs/exp1")
        >>> trainer = lightning.Trainer(max_epochs=10, callbacks=[
        ...     seethrough.training.lightning_callback(rec, model="net")])  # doctest: +SKIP
        >>> trainer.fit(module, train_loader, val_loader)                    # doctest: +SKIP

    Args:
        recorder: the :class:`~seethrough.training.recorder.ExplanationRecorder` to fill.
        model: what to explain: ``None`` for the LightningModule itself, the dotted name of
            one of its attributes (``"net"``), or a function of the LightningModule giving
            an ``nn.Module`` or a :class:`~seethrough.models.VisionModel` (a ``VisionModel``
            turns raw probe images into its input; a plain module takes probes that already
            are its input, a float ``(N, C, H, W)`` tensor).
        on: ``"train"`` to record at the end of each training epoch (after its validation,
            so with the epoch's training and validation metrics), ``"validation"`` at the end
            of each validation during ``fit`` (see the module).
        initial: also record epoch 0, the model as training starts (skipped when ``fit``
            resumes from a checkpoint past epoch 0).
        check: run :meth:`~seethrough.training.recorder.ExplanationRecorder.check` when
            ``fit`` starts, so that a missing layer or a label beyond the classes fails before
            the first epoch, not after it.

    Returns:
        A ``LightningRecorderCallback``; each recording's summary is kept in its
        ``summaries``.

    Raises:
        MissingDependencyError: Lightning is not installed.
        InvalidParameterError: ``on`` is not ``"train"`` or ``"validation"``, or ``model`` is
            not ``None``, a name or a function.
    """
    if on not in _WHEN:
        raise InvalidParameterError(f"on={on!r}: 'train' or 'validation'")
    if model is not None and not isinstance(model, str) and not callable(model):
        raise InvalidParameterError(
            f"model must be None, an attribute name or a function, not {type(model).__name__}"
        )
    return _callback_class()(recorder, model=model, on=on, initial=initial, check=check)


def _explained(pl_module: nn.Module, choice: ModelChoice) -> VisionModel | nn.Module:
    """The model to explain, from the LightningModule and the user's ``model=``."""
    if choice is None:
        return pl_module
    if isinstance(choice, str):
        try:
            found = attrgetter(choice)(pl_module)
        except AttributeError:
            raise InvalidParameterError(
                f"{type(pl_module).__name__} has no attribute {choice!r} to explain"
            ) from None
    else:
        found = choice(pl_module)
    if not isinstance(found, (VisionModel, nn.Module)):
        raise InvalidParameterError(
            f"model={choice!r} gives a {type(found).__name__}, not an nn.Module or a VisionModel"
        )
    return found


@cache
def _callback_class() -> type:
    """The callback class, made once Lightning is imported (its base class is Lightning's)."""
    pl = lightning_module()

    class LightningRecorderCallback(pl.Callback):  # type: ignore[misc, name-defined]
        """Record explanations of the model being trained once per epoch of ``fit`` (see
        :func:`lightning_callback`)."""

        def __init__(
            self,
            recorder: ExplanationRecorder,
            *,
            model: ModelChoice = None,
            on: str = "train",
            initial: bool = False,
            check: bool = True,
        ) -> None:
            super().__init__()
            self.recorder = recorder
            self.model = model
            self.on = on
            self.initial = initial
            self.check = check
            self.summaries: list[dict[str, Any]] = []

        def _record(self, trainer: Any, pl_module: nn.Module, epoch: int) -> None:
            if not trainer.is_global_zero:
                return
            metrics = scalar_metrics(trainer.callback_metrics)
            with torch.inference_mode(False):
                target = _explained(pl_module, self.model)
                self.summaries.append(self.recorder.record(target, epoch, **metrics))

        def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
            """Check that the recorder can explain the model, before the first epoch."""
            if self.check and trainer.is_global_zero:
                with torch.inference_mode(False):
                    self.recorder.check(_explained(pl_module, self.model))

        def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
            """Record epoch 0 with ``initial=True`` (not when resuming past it)."""
            if self.initial and trainer.current_epoch == 0:
                self._record(trainer, pl_module, 0)

        def on_train_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
            """With ``on="train"``: record the model after ``current_epoch + 1`` epochs."""
            if self.on == "train":
                self._record(trainer, pl_module, trainer.current_epoch + 1)

        def on_validation_end(self, trainer: Any, pl_module: nn.Module) -> None:
            """With ``on="validation"``: record after a validation of ``fit`` (not the sanity
            check, nor ``trainer.validate``)."""
            fitting = getattr(trainer.state.fn, "value", trainer.state.fn) == "fit"
            if self.on == "validation" and fitting and not trainer.sanity_checking:
                self._record(trainer, pl_module, trainer.current_epoch + 1)

    return LightningRecorderCallback


def __getattr__(name: str) -> Any:
    """``LightningRecorderCallback``, made on first use (it needs Lightning)."""
    if name == "LightningRecorderCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

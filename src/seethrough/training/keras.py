"""Record explanations while Keras trains: :func:`keras_callback`.

``model.fit(..., callbacks=[seethrough.training.keras_callback(rec)])`` calls
:meth:`ExplanationRecorder.record <seethrough.training.recorder.ExplanationRecorder.record>` at
the end of every epoch with the Keras model being trained, in memory, and the epoch's Keras
logs (``loss``, ``accuracy``, ``val_loss``, ...) as the user's metrics. The model is Keras 3 on
its torch backend, a ``torch.nn.Module``: it is seen as a
:class:`~seethrough.models.VisionModel` the way a loaded Keras file is
(:func:`seethrough.models.keras.vision_model_of`), with a final softmax removed for the
duration of the call so that its scores are logits
(:func:`~seethrough.models.keras.softmax_removed`; the activation is set back afterwards).

The callback leaves training as it was: besides what the recorder restores (every variable's
``requires_grad`` and ``.grad``, train/eval flags, grad mode, the torch, numpy and Python random
states), the model's own output activation is restored and nothing reads or writes the
optimizer, the layers' ``trainable`` flags or Keras' seed generators; a fit with the callback
gives the same weights as one without it for the same seed
(``keras.utils.set_random_seed``).

Keras is imported on first use only: :mod:`seethrough.training` imports without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from ..models.keras import keras_module, softmax_removed, vision_model_of
from .recorder import scalar_metrics, undisturbed

if TYPE_CHECKING:
    from ..models import VisionModel
    from ..models.preprocessing import Preprocessing
    from .recorder import ExplanationRecorder

__all__ = ["keras_callback", "keras_metrics"]  # and KerasRecorderCallback, made on first use


def keras_metrics(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """The numbers among Keras epoch logs (a scalar tensor or array included), as floats
    (:func:`~seethrough.training.recorder.scalar_metrics`)."""
    return scalar_metrics(logs)


def keras_callback(
    recorder: ExplanationRecorder,
    *,
    preprocessing: Preprocessing | str | None = None,
    labels: Sequence[str] | None = None,
    check: bool = True,
) -> Any:
    """A ``keras.callbacks.Callback`` that records ``recorder`` at the end of each epoch.

    At the end of Keras epoch ``i`` (``Epoch i+1/n`` in Keras' progress bar) it calls
    ``recorder.record(model, i + 1, **logs)``: run epoch ``e`` is the model after ``e`` epochs
    of training, so epoch 0 stays the untrained model's (record it before ``fit`` with
    :meth:`KerasRecorderCallback.vision_model`). ``recorder.every`` applies as in a plain
    loop. Each call's summary is kept in the callback's ``summaries``.

    Args:
        recorder: the :class:`~seethrough.training.recorder.ExplanationRecorder` to fill.
        preprocessing: how the probe images become the model's input: a
            :class:`~seethrough.models.preprocessing.Preprocessing`, a Keras mode (``"tf"``,
            ``"caffe"``, ``"torch"``, ``"raw"``) or ``None`` for [0, 1] pixels (images / 255),
            at the model's input size. Unused for probes given as a model-input tensor.
        labels: class names in output order (default ``class 0`` ...).
        check: run :meth:`~seethrough.training.recorder.ExplanationRecorder.check` when
            training begins, so that a missing layer or a label beyond the classes fails
            before the first epoch, not after it.

    Raises:
        MissingDependencyError: Keras is not installed.
        InvalidParameterError: Keras runs on another backend than torch in this process.
    """
    return _callback_class()(recorder, preprocessing=preprocessing, labels=labels, check=check)


@cache
def _callback_class() -> type:
    """The callback class, made once Keras is imported (its base class is Keras')."""
    keras = keras_module()

    class KerasRecorderCallback(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        """Record explanations of the model being trained at the end of each epoch (see
        :func:`keras_callback`)."""

        def __init__(
            self,
            recorder: ExplanationRecorder,
            *,
            preprocessing: Preprocessing | str | None = None,
            labels: Sequence[str] | None = None,
            check: bool = True,
        ) -> None:
            super().__init__()
            self.recorder = recorder
            self.preprocessing = preprocessing
            self.labels = labels
            self.check = check
            self.summaries: list[dict[str, Any]] = []
            self._cached: tuple[Any, VisionModel] | None = None

        @contextmanager
        def vision_model(self, model: Any | None = None) -> Iterator[VisionModel]:
            """A block in which ``model`` (default: the model being trained) is a
            ``VisionModel`` with logits for scores; the model is as it was afterwards."""
            model = self.model if model is None else model
            with softmax_removed(model) as (scoring, _), undisturbed(scoring):
                if self._cached is None or self._cached[0] is not scoring:
                    vm = vision_model_of(
                        scoring,
                        preprocessing=self.preprocessing,  # type: ignore[arg-type]
                        labels=self.labels,
                        weights="in training",
                    )
                    self._cached = (scoring, vm)
                yield self._cached[1]

        def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
            """Check that the recorder can explain the model, before the first epoch."""
            if self.check:
                with self.vision_model() as vm:
                    self.recorder.check(vm)

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            """Record the model after ``epoch + 1`` epochs, with the epoch's logs."""
            with self.vision_model() as vm:
                self.summaries.append(self.recorder.record(vm, epoch + 1, **keras_metrics(logs)))

    return KerasRecorderCallback


def __getattr__(name: str) -> Any:
    """``KerasRecorderCallback``, made on first use (it needs Keras)."""
    if name == "KerasRecorderCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

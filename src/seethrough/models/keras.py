"""Keras models, run on Keras 3's torch backend: files (``.keras``, ``.h5``) and
``keras.applications`` architectures.

On the torch backend a Keras model is a ``torch.nn.Module`` whose variables are torch
parameters, so every method of seethrough runs on it through the PyTorch machinery:
:class:`KerasModule` adapts the model to the ``(N, C, H, W)`` RGB input the rest of the library
uses (channels-last inside, BGR for the ``caffe`` mode, luminance for a one-channel model), and
:class:`KerasRunner` finds layers by their Keras names and hands each method their outputs as
``(N, C, H, W)``.

Nothing in a model file is run as code: before Keras reads a file its configuration is checked
(:func:`check_config`), and a ``Lambda`` layer, a function, a custom or non-Keras class is
refused with :class:`~seethrough.errors.UnsafeModelError`; Keras then loads it with
``safe_mode=True`` (Keras >= 3.8, the versions without the known safe-mode bypasses).

Keras fixes its backend once per process, when it is first imported: this module sets
``KERAS_BACKEND=torch`` before importing it. A process that runs Keras on TensorFlow
(``KERAS_BACKEND=tensorflow`` before the first import, the ``[tensorflow]`` extra) gets the same
checks and loaders, with the model run natively in TensorFlow
(:mod:`seethrough.models.tensorflow`); another backend is refused (:func:`keras_module`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from ..core.hooks import Recorder
from ..core.layers import LayerRef, finishing_order, last_spatial_layer, unknown_layer
from ..core.runner import TorchRunner, _freeze, graph_from
from ..core.state import preserved_state
from ..errors import (
    InvalidParameterError,
    MethodNotApplicableError,
    MissingDependencyError,
    ModelOutputError,
    SeethroughError,
    UnknownLayerError,
    UnknownModelError,
    UnsafeModelError,
    WeightsMismatchError,
    suggest,
)
from ._common import download_errors, first_line
from .labels import generic_labels, imagenet_labels
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .vision_model import VisionModel

if TYPE_CHECKING:
    from .tensorflow import TFRunner

__all__ = [
    "KerasModule",
    "KerasPreprocessing",
    "KerasRunner",
    "MIN_KERAS",
    "application_mode",
    "application_names",
    "check_config",
    "keras_module",
    "load_keras_application",
    "load_keras_file",
    "load_saved_model",
    "softmax_removed",
    "vision_model_of",
]

MIN_KERAS = (3, 8)
"""The oldest Keras accepted: older 3.x releases have known ways around ``safe_mode``."""

Mode = Literal["tf", "caffe", "torch", "raw"]

# ----------------------------------------------------------------------------------- import


def keras_module(*, tensorflow: bool = False) -> ModuleType:
    """The ``keras`` package on its torch backend (with ``tensorflow``: or on its TensorFlow
    backend), imported on first use.

    ``KERAS_BACKEND=tensorflow`` before the first import (allowed with ``tensorflow``) imports
    TensorFlow first, with its oneDNN kernels off
    (:func:`~seethrough.models.tensorflow.tensorflow_module`).

    Raises:
        InvalidParameterError: ``KERAS_BACKEND`` names another backend, or this process has
            already imported Keras with another backend (a process has one), or Keras is older
            than :data:`MIN_KERAS`.
        MissingDependencyError: Keras (or, for the TensorFlow backend, TensorFlow) is not
            installed.
    """
    accepted = ("torch", "tensorflow") if tensorflow else ("torch",)
    loaded = sys.modules.get("keras")
    if loaded is None:
        wanted = os.environ.get("KERAS_BACKEND", "torch") or "torch"
        if wanted not in accepted:
            raise InvalidParameterError(
                f"KERAS_BACKEND is '{wanted}': seethrough runs Keras models on the torch backend "
                "(or on TensorFlow with the tensorflow extra); unset KERAS_BACKEND or set it to "
                "'torch' before starting Python"
            )
        if wanted == "tensorflow":
            from .tensorflow import tensorflow_module

            tensorflow_module()
        os.environ["KERAS_BACKEND"] = wanted
        try:
            import keras as loaded
        except ImportError as exc:
            raise MissingDependencyError(
                f"a Keras model needs keras (pip install 'seethrough[keras]'): {exc}"
            ) from None
    backend = loaded.backend.backend()
    if backend not in accepted:
        raise InvalidParameterError(
            f"this process imported keras with the '{backend}' backend, and Keras keeps one "
            "backend per process: run seethrough's Keras support in a process started with "
            "KERAS_BACKEND=torch or KERAS_BACKEND=tensorflow (or load the Keras model before "
            "anything imports keras)"
        )
    version = tuple(int(p) for p in re.findall(r"\d+", loaded.__version__)[:2])
    if version < MIN_KERAS:
        raise InvalidParameterError(
            f"keras {loaded.__version__} is too old: versions before "
            f"{'.'.join(map(str, MIN_KERAS))} can be made to run code from a model file despite "
            "safe_mode; pip install 'seethrough[keras]' for a supported one"
        )
    return loaded


# --------------------------------------------------------------------------- preprocessing

_MODE_TEXT: dict[str, str] = {
    "tf": "Keras 'tf' mode: pixels to [-1, 1]",
    "caffe": "Keras 'caffe' mode: 0-255 pixels, BGR order, ImageNet mean subtracted",
    "torch": "Keras 'torch' mode: ImageNet mean and std",
    "raw": "0-255 pixels, the model normalises inside",
}


@dataclass
class KerasPreprocessing(Preprocessing):
    """:class:`~seethrough.models.preprocessing.Preprocessing` that also names the Keras
    preprocessing mode it expresses (``mode``; ``""``: none, e.g. after a mean/std override).

    The modes in mean/std of [0, 1] pixels, the units of :class:`Preprocessing`:

    - ``"tf"``: ``x / 127.5 - 1``, i.e. mean 0.5, std 0.5;
    - ``"caffe"``: BGR, ``x - (103.939, 116.779, 123.68)`` on 0-255 pixels, i.e. the RGB mean
      ``(123.68, 116.779, 103.939) / 255`` and std ``1 / 255`` (the adapter reverses the channels);
    - ``"torch"``: ``(x / 255 - mean) / std`` with the ImageNet mean and std;
    - ``"raw"``: 0-255 pixels (mean 0, std ``1 / 255``) for models that normalise inside
      (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3).
    """

    mode: str = ""

    def describe(self) -> str:
        """The base description, followed by the Keras mode when there is one."""
        text = super().describe()
        return f"{text} ({_MODE_TEXT[self.mode]})" if self.mode in _MODE_TEXT else text

    def replace(
        self,
        size: int | tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize: Literal["crop", "squash"] | None = None,
    ) -> KerasPreprocessing:
        """A copy with the given fields overridden; a mean or std given drops the mode name."""
        new = super().replace(size=size, mean=mean, std=std, resize=resize)
        assert isinstance(new, KerasPreprocessing)
        if mean is not None or std is not None:
            new.mode = ""
        return new

    @classmethod
    def of_mode(cls, mode: Mode, size: int | tuple[int, int]) -> KerasPreprocessing:
        """The preprocessing of Keras mode ``mode`` at input size ``size``."""
        third = 1.0 / 255.0
        stats: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
            "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            "caffe": ((123.68 / 255.0, 116.779 / 255.0, 103.939 / 255.0), (third,) * 3),
            "torch": (IMAGENET_MEAN, IMAGENET_STD),
            "raw": ((0.0, 0.0, 0.0), (third,) * 3),
        }
        mean, std = stats[mode]
        return cls(size=size, mean=mean, std=std, mode=mode)


# ---------------------------------------------------------------------------------- adapter

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")


def channels_last_input(x: torch.Tensor, *, bgr: bool, channels: int) -> torch.Tensor:
    """The ``(N, C, H, W)`` RGB batch ``x`` as a Keras model's ``(N, H, W, C)`` input: reversed
    to BGR with ``bgr`` (the ``caffe`` mode), reduced to its luminance
    ``0.299 R + 0.587 G + 0.114 B`` for a model of ``channels`` 1, then made channels-last."""
    if bgr:
        x = x.flip(1)
    if channels == 1 and x.shape[1] == 3:
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * luma).sum(dim=1, keepdim=True)
    return x.permute(0, 2, 3, 1)


def keras_unwrapped(exc: BaseException) -> SeethroughError | None:
    """seethrough's own error behind ``exc``, when Keras re-raised it with its call context.

    A layer call that fails (here: a hook or an operation of seethrough's, run inside the
    layer) is re-raised by Keras as a new exception of the same class (or a ``RuntimeError``
    when the class cannot be built from one message) whose message wraps the original one in
    "Exception encountered when calling ...", ANSI bold codes and the call's arguments; the
    original is kept as its ``__context__``. Returns that original where it is a
    :class:`~seethrough.errors.SeethroughError`, else ``None``.
    """
    original: BaseException | None = exc
    while original is not None and getattr(original, "_keras_call_info_injected", False):
        original = original.__context__
    if original is exc or not isinstance(original, SeethroughError):
        return None
    return original


@contextmanager
def own_errors() -> Iterator[None]:
    """A block that runs Keras layers: seethrough's own errors raised inside a layer call
    reach the caller as raised, typed and with their one-line message (see
    :func:`keras_unwrapped`), not in Keras' wrapping."""
    try:
        yield
    except Exception as exc:
        original = keras_unwrapped(exc)
        if original is None:
            raise
        raise original from None


class KerasModule(nn.Module):
    """A Keras model as a PyTorch classifier of ``(N, C, H, W)`` RGB model input.

    The input is reversed to BGR for a ``caffe``-mode model, reduced to its luminance
    ``0.299 R + 0.587 G + 0.114 B`` for a model with one input channel, made channels-last and
    passed to the model with ``training=False`` (on the input's device); the output is the
    model's, a tensor of class scores.
    """

    def __init__(self, model: nn.Module, *, bgr: bool = False) -> None:
        """Adapt the Keras ``model`` (built, one 4-D channels-last input); ``bgr``: reverse the
        channels (the ``caffe`` mode)."""
        super().__init__()
        self.model = model
        self.bgr = bgr
        self.channels = int(model.input_shape[-1])  # type: ignore[attr-defined]
        self.default_layer: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the batch ``x`` ``(N, C, H, W)``."""
        x = channels_last_input(x, bgr=self.bgr, channels=self.channels)
        with keras_module().device(str(x.device)), own_errors():
            return self.model(x, training=False)


class DenseHead(nn.Linear):
    """A Keras ``Dense`` layer without activation seen as an ``nn.Linear`` (``weight`` the
    kernel transposed, ``bias``), so that the search for a GAP + linear head (CAM, concept
    classification) finds it; :class:`KerasRunner` puts hooks on the Dense layer itself."""

    def __init__(self, layer: nn.Module) -> None:
        nn.Module.__init__(self)
        kernel = layer.kernel  # type: ignore[attr-defined]
        self.in_features, self.out_features = (int(s) for s in kernel.shape)
        object.__setattr__(self, "keras_layer", layer)  # not a submodule

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The kernel as ``(out_features, in_features)``."""
        return _as_torch(self.keras_layer.kernel.value).T

    @property
    def bias(self) -> torch.Tensor | None:  # type: ignore[override]
        """The bias, or ``None``."""
        bias = getattr(self.keras_layer, "bias", None)
        return None if bias is None else _as_torch(bias.value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The Dense layer's output."""
        with own_errors():
            return self.keras_layer(x)


def _as_torch(value: Any) -> torch.Tensor:
    """A variable's value as a torch tensor (a TensorFlow one copied)."""
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))


def _keras_layer(module: nn.Module) -> nn.Module:
    """The Keras layer behind ``module`` (a :class:`DenseHead`'s Dense layer, else itself)."""
    return module.keras_layer if isinstance(module, DenseHead) else module


# ----------------------------------------------------------------------------------- runner

# Layers that only resample, pad or pass on a representation: never a default layer.
_NOT_A_REPRESENTATION = frozenset(
    {
        "InputLayer",
        "Dropout",
        "SpatialDropout2D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
        "AveragePooling2D",
        "Rescaling",
        "Normalization",
        "Resizing",
        "CenterCrop",
        "Identity",
    }
)


def _keras_layers(model: nn.Module, prefix: str = "") -> dict[str, nn.Module]:
    """Every layer of ``model`` by Keras name; a nested model's layers as ``outer/inner``."""
    found: dict[str, nn.Module] = {}
    for layer in getattr(model, "layers", ()):
        name = f"{prefix}{layer.name}"
        found[name] = layer
        if hasattr(layer, "layers"):
            found.update(_keras_layers(layer, f"{name}/"))
    return found


def _to_nchw(t: object) -> object:
    """A channels-last 4-D tensor as ``(N, C, H, W)`` (a view); anything else unchanged."""
    return t.permute(0, 3, 1, 2) if isinstance(t, torch.Tensor) and t.dim() == 4 else t


class KerasRecorder(Recorder):
    """A :class:`~seethrough.core.hooks.Recorder` on Keras layers: outputs (and inputs) are
    stored as ``(N, C, H, W)``.

    The hook stores ``a = output.permute(0, 3, 1, 2)`` and hands the rest of the network
    ``a.permute(0, 2, 3, 1).clone()``, so ``torch.autograd.grad(score, a)`` is the gradient with
    respect to the stored activation, in its layout.
    """

    def __enter__(self) -> KerasRecorder:
        try:
            for name, module in self.modules.items():
                layer = _keras_layer(module)
                self._handles.append(layer.register_forward_hook(self._output_hook(name)))
                if self.record_inputs:
                    self._handles.append(layer.register_forward_pre_hook(self._input_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def _output_hook(self, name: str):  # noqa: ANN202 - hook signature is torch's
        def hook(module: nn.Module, args: tuple, output: object) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise MethodNotApplicableError(
                    f"layer '{name}' returns {type(output).__name__}, not a tensor: pick a layer "
                    "whose output is one (N, H, W, C) tensor"
                )
            if output.dim() != 4:
                self.outputs[name] = output
                return output.clone()
            stored = output.permute(0, 3, 1, 2)
            self.outputs[name] = stored
            return stored.permute(0, 2, 3, 1).clone()

        return hook

    def _input_hook(self, name: str):  # noqa: ANN202 - hook signature is torch's
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                self.inputs[name] = _to_nchw(args[0])  # type: ignore[assignment]

        return hook


class KerasRunner(TorchRunner):
    """The runner of a Keras model (see :mod:`seethrough.core.runner`): a
    :class:`~seethrough.core.runner.TorchRunner` on the :class:`KerasModule` whose layers are
    the Keras layers, by their Keras names, with outputs handed over as ``(N, C, H, W)``."""

    kind = "a Keras model"

    def __init__(self, module: KerasModule) -> None:
        """Run the adapted Keras model ``module``."""
        super().__init__(module)
        self.adapter = module
        layers = _keras_layers(module.model)
        self._named = {
            name: DenseHead(layer) if _is_linear_dense(layer) else layer
            for name, layer in layers.items()
        }
        walk: dict[int, nn.Module] = {}
        for m in [*module.modules(), *layers.values()]:
            for sub in m.modules():  # a layer and its parameter dictionary
                walk.setdefault(id(sub), sub)
        self._walk = list(walk.values())

    @contextmanager
    def protected(self, *, parameters: bool = True, modules: bool = False) -> Iterator[None]:
        """Eval mode, and with ``parameters`` every Keras variable frozen; training flags,
        ``requires_grad`` and ``.grad`` of every variable, and (with ``modules``) every
        submodule restored afterwards."""
        with preserved_state(self.module, modules=modules, parameters=parameters, walk=self._walk):
            if parameters:
                _freeze(self._walk)
            yield

    def resolve_layer(
        self, layer: LayerRef, example: torch.Tensor | None = None, default: str | None = None
    ) -> tuple[str, nn.Module]:
        """``(name, layer)`` for a Keras layer name (a nested model's as ``outer/inner``, or
        the inner name alone when it is unique), a layer, or ``None`` for the default: the last
        layer with a spatial output."""
        if layer is None:
            layer = default or self.default_layer(example)
        if isinstance(layer, nn.Module):
            for name, module in self._named.items():
                if module is layer or _keras_layer(module) is layer:
                    return name, module
            raise UnknownLayerError("the given layer is not a layer of this Keras model")
        if not isinstance(layer, str):
            raise UnknownLayerError(f"layer must be a name or a layer, not {type(layer).__name__}")
        if layer in self._named:
            return layer, self._named[layer]
        nested = [n for n in self._named if n.endswith(f"/{layer}")]
        if len(nested) == 1:
            return nested[0], self._named[nested[0]]
        raise unknown_layer(layer, list(self._named), model="this Keras model")

    def default_layer(self, example: torch.Tensor | None) -> str:
        """The last layer to finish with a spatial output (found once per model)."""
        if self.adapter.default_layer is None:
            self.adapter.default_layer = last_spatial_layer(
                self.spatial_layers, example, model="this Keras model", layout="(N, H, W, C)"
            )
        return self.adapter.default_layer

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """The layers with a spatial output and their shapes as ``(N, C, H, W)``, in the order
        they finish during one forward of ``example[:1]`` (a nested model after its layers);
        padding, dropout, resampling and preprocessing layers are left out."""

        def spatial(
            name: str, layer: nn.Module, output: object
        ) -> list[tuple[str, tuple[int, ...]]]:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                n, h, w, c = output.shape
                if h * w > 1:
                    return [(name, (n, c, h, w))]
            return []

        def run() -> None:
            with torch.no_grad():
                self.module(example[:1].to(self.device, self.dtype))

        layers = [(name, _keras_layer(m)) for name, m in self._named.items()]
        kept = [
            (n, layer) for n, layer in layers if type(layer).__name__ not in _NOT_A_REPRESENTATION
        ]
        return finishing_order(kept, run, spatial)

    def record(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> Recorder:
        """A :class:`KerasRecorder` on ``modules``: outputs as ``(N, C, H, W)``."""
        return KerasRecorder(modules, inputs=inputs)

    def graph_from(self, layer: nn.Module | None) -> AbstractContextManager[None]:
        """A block in which the autograd graph starts at ``layer``'s output (detached and made
        to require gradients; see :func:`~seethrough.core.runner.graph_from`)."""
        return graph_from(None if layer is None else _keras_layer(layer))


def _is_linear_dense(layer: nn.Module) -> bool:
    """Whether ``layer`` is a Keras ``Dense`` layer with a 2-D kernel and no activation."""
    keras = keras_module(tensorflow=True)
    return (
        isinstance(layer, keras.layers.Dense)
        and len(layer.kernel.shape) == 2
        and layer.activation in (None, keras.activations.linear)
    )


# ------------------------------------------------------------------------- config checking

_SPECIAL = frozenset(
    {"__keras_tensor__", "__tuple__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
_CODE_CLASSES = frozenset({"Lambda", "__lambda__", "function", "TFOpLambda", "SlicingOpLambda"})
_CODE_KEYS = frozenset({"function", "function_type", "output_shape_type"})
_PUBLIC = (
    "layers",
    "models",
    "initializers",
    "regularizers",
    "constraints",
    "dtype_policies",
    "optimizers",
    "losses",
    "metrics",
)
_builtin_cache: list[frozenset[str]] = []


def _builtin_classes() -> frozenset[str]:
    """The class names of Keras' public modelling API (layers, models, initializers, ...)."""
    if not _builtin_cache:
        keras = keras_module(tensorflow=True)
        names = {"Functional", "Sequential", "Model"}
        for part in _PUBLIC:
            module = getattr(keras, part, None)
            names.update(n for n, v in vars(module or {}).items() if isinstance(v, type))
        _builtin_cache.append(frozenset(names))
    return _builtin_cache[0]


def check_config(config: object, source: str) -> None:
    """Refuse a Keras model configuration that could run code when it is deserialised.

    Refused, naming the layer: a ``Lambda`` layer (or TF-op lambda), any object whose class
    is ``"function"`` or a serialised lambda, any ``function`` field (the code of a legacy
    Lambda), a registered custom object (``registered_name`` ``"package>Name"``), an object whose
    ``module`` is not Keras', and a class that is not part of Keras' public modelling API. The
    training configuration is not read (models are loaded without compiling).

    Raises:
        UnsafeModelError: with what was found and where.
    """
    builtin = _builtin_classes()

    def refuse(where: str, why: str) -> UnsafeModelError:
        return UnsafeModelError(
            f"refusing Keras model {source}: {where} {why}; seethrough never runs code from a "
            "model file: rebuild the model from built-in Keras layers and save it again"
        )

    def visit(node: object, where: str) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item, where)
            return
        if not isinstance(node, dict):
            return
        cls = node.get("class_name")
        inner = node.get("config")
        name = node.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
        if isinstance(cls, str) and isinstance(name, str):
            where = f"layer '{name}'"
        code = sorted(_CODE_KEYS & set(node))
        if code:
            raise refuse(where, f"has a '{code[0]}' field (code)")
        if isinstance(cls, str):
            module = node.get("module")
            registered = node.get("registered_name")
            if cls in _CODE_CLASSES:
                what = "a Lambda layer" if "Lambda" in cls else "a function"
                raise refuse(where, f"is {what} (Python code: {cls!r})")
            if isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
                raise refuse(where, f"uses class {cls!r} of module '{module}', which is not Keras")
            if isinstance(registered, str) and registered not in (cls, "") and ">" in registered:
                raise refuse(where, f"is the custom object '{registered}'")
            if cls not in builtin and cls not in _SPECIAL:
                raise refuse(where, f"uses class {cls!r}, which is not a built-in Keras class")
        for key, value in node.items():
            if key not in ("compile_config", "training_config"):
                visit(value, where)

    visit(config, "the model")


_MAX_CONFIG = 64 * 1024 * 1024


def _read_config(path: Path) -> object:
    """The model configuration of a ``.keras`` archive or an ``.h5`` file, unparsed by Keras.

    Raises:
        InvalidParameterError: the file is truncated, corrupt, or holds no model configuration.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > _MAX_CONFIG:
                    raise InvalidParameterError(f"Keras model '{path}': config.json is too large")
                text: str | bytes = archive.read(info)
        else:
            import h5py

            with h5py.File(path, "r") as h5:
                raw = h5.attrs.get("model_config")
                if raw is None:
                    raise InvalidParameterError(
                        f"'{path}' holds no model configuration (a weights-only file?): save the "
                        "whole model (model.save('model.keras'))"
                    )
                text = raw if isinstance(raw, (str, bytes)) else bytes(raw)
        return json.loads(text)
    except InvalidParameterError:
        raise
    except KeyError:
        raise InvalidParameterError(
            f"'{path}' is not a Keras model archive: it has no config.json"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidParameterError(
            f"cannot read Keras model '{path}' (truncated or not a Keras file?): {first_line(exc)}"
        ) from None


# ---------------------------------------------------------------------------------- loading


def _output_layer(model: Any) -> Any:
    """The layer that computes the model's (single) output; a nested model's own."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) == 1 and hasattr(outputs[0], "_keras_history"):
        layer = outputs[0]._keras_history.operation
    else:
        layer = model.layers[-1]
    return _output_layer(layer) if hasattr(layer, "layers") and layer is not model else layer


def _without_softmax(model: Any) -> tuple[Any, bool]:
    """``model`` whose final softmax is removed (scores become logits; the probabilities
    ``softmax(logits)`` are unchanged), and whether there was one.

    A final ``Softmax`` layer is cut off (a functional model ending at its input); a final
    ``Dense``, convolution or ``Activation`` layer with a softmax activation gets the linear one.
    """
    keras = keras_module(tensorflow=True)
    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return keras.Model(model.inputs, layer.input, name=model.name), True
    if getattr(layer, "activation", None) is keras.activations.softmax:
        layer.activation = keras.activations.linear
        return model, True
    return model, False


def _check_classifier(model: Any, source: str) -> tuple[tuple[int | None, int | None], int]:
    """``((height, width), classes)`` of a classifier of one image input and one score output.

    Raises:
        ModelOutputError: another input or output.
    """
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] not in (1, 3):
        shapes = [tuple(t.shape) for t in inputs]
        raise ModelOutputError(
            f"Keras model {source} must take one (N, H, W, 1 or 3) image input, it takes {shapes}"
        )
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        shapes = [tuple(t.shape) for t in outputs]
        raise ModelOutputError(
            f"Keras model {source} must give one (N, classes) output, it gives {shapes}"
        )
    _, height, width, _ = inputs[0].shape
    return (height, width), int(outputs[0].shape[-1])


def _input_size(hw: tuple[int | None, int | None], fallback: int = 224) -> int | tuple[int, int]:
    """The preprocessing size of a model input ``(height, width)`` (``None``: ``fallback``)."""
    height, width = (v if v else fallback for v in hw)
    return height if height == width else (height, width)


def _vision_model(
    model: Any,
    preprocessing: KerasPreprocessing,
    labels: Sequence[str],
    *,
    name: str,
    source: str,
    weights: str,
) -> VisionModel:
    """The :class:`VisionModel` of a loaded Keras ``model``, default layer found once: run by
    Keras on torch, or natively in TensorFlow on that backend
    (:mod:`seethrough.models.tensorflow`)."""
    bgr = preprocessing.mode == "caffe"
    module: nn.Module
    make_runner: Callable[[], KerasRunner | TFRunner]
    if keras_module(tensorflow=True).backend.backend() == "tensorflow":
        from .tensorflow import TFModule, TFRunner

        channels = int(model.input_shape[-1])
        module = TFModule(
            model,
            layers={layer.name: layer for layer in model.layers},
            prepare=partial(channels_last_input, bgr=bgr, channels=channels),
            linear=lambda layer: DenseHead(layer) if _is_linear_dense(layer) else None,
            skip=_NOT_A_REPRESENTATION,
        ).eval()
        make_runner = partial(TFRunner, module)
    else:
        module = KerasModule(model, bgr=bgr).eval()
        make_runner = partial(KerasRunner, module)
    runner = make_runner()
    h, w = preprocessing.output_size
    default = runner.default_layer(torch.zeros(1, 3, h, w))
    return VisionModel(
        module,
        preprocessing,
        labels,
        name=name,
        source=source,
        weights=weights,
        default_layer=default,
        framework="keras",
        runner=make_runner,
    )


@contextmanager
def softmax_removed(model: Any) -> Iterator[tuple[Any, bool]]:
    """A block in which ``model``'s final softmax is removed (:func:`_without_softmax`), so
    that its scores are logits, ``softmax(logits)`` the probabilities it gives: yields
    ``(scoring model, whether a softmax was removed)``. A softmax activation set to linear is
    set back on exit, also after an exception: a model in training is left as it was."""
    layer = _output_layer(model)
    activation = getattr(layer, "activation", None)
    try:
        yield _without_softmax(model)
    finally:
        if activation is not None:
            layer.activation = activation


def vision_model_of(
    model: Any,
    *,
    preprocessing: Preprocessing | Mode | None = None,
    labels: Sequence[str] | None = None,
    name: str | None = None,
    weights: str = "in memory",
) -> VisionModel:
    """The :class:`VisionModel` of a built Keras classifier in memory (one being trained, for
    instance), run as it is: its output is taken as the class scores (remove a final softmax
    first, e.g. within :func:`softmax_removed`).

    Args:
        model: a built Keras model of one ``(N, H, W, 1 or 3)`` image input and one
            ``(N, classes)`` output.
        preprocessing: how raw images become its input: a :class:`Preprocessing`, a Keras mode
            (``"tf"``, ``"caffe"``, ``"torch"``, ``"raw"``; :class:`KerasPreprocessing`), or
            ``None`` for [0, 1] pixels (mean 0, std 1), each at the model's input size (224
            where it takes any size).
        labels: class names in output order (default: ``class 0`` ... ``class K-1``).
        name: the model's name (default: the Keras model's own).
        weights: what the weights are, for the model's description.

    Raises:
        ModelOutputError: not a classifier of one image input to one score output.
        InvalidParameterError: an unknown mode, or labels that do not match the classes.
    """
    keras_module(tensorflow=True)
    source = f"'{model.name}'"
    size, classes = _check_classifier(model, source)
    if preprocessing is None:
        preprocessing = KerasPreprocessing(
            size=_input_size(size), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
        )
    elif isinstance(preprocessing, str):
        if preprocessing not in _MODE_TEXT:
            raise InvalidParameterError(
                f"unknown Keras preprocessing mode {preprocessing!r}: one of "
                f"{', '.join(_MODE_TEXT)}, or a Preprocessing"
            )
        preprocessing = KerasPreprocessing.of_mode(preprocessing, _input_size(size))
    elif not isinstance(preprocessing, Preprocessing):
        raise InvalidParameterError(
            f"preprocessing must be a Preprocessing or a Keras mode name, not "
            f"{type(preprocessing).__name__}"
        )
    if not isinstance(preprocessing, KerasPreprocessing):
        preprocessing = KerasPreprocessing(
            **{f.name: getattr(preprocessing, f.name) for f in fields(Preprocessing)}
        )
    if labels is not None and len(labels) != classes:
        raise InvalidParameterError(
            f"{len(labels)} labels given for the {classes} classes of Keras model {source}"
        )
    return _vision_model(
        model,
        preprocessing,
        list(labels) if labels is not None else generic_labels(classes),
        name=name or model.name,
        source="keras",
        weights=weights,
    )


def load_keras_file(path: str | Path, *, labels: Sequence[str] | None = None) -> VisionModel:
    """Load a Keras classifier from a ``.keras`` archive or an ``.h5`` file, without running
    any code from it.

    Its configuration is checked first (:func:`check_config`), then Keras loads it with
    ``safe_mode=True`` and without compiling. A final softmax is removed so that scores are
    logits (the probabilities are unchanged), and ``weights`` says so. The default
    preprocessing is the Keras ``tf`` mode (pixels to [-1, 1], the most common for saved
    models) at the model's input size (224 where the model takes any size): override it with
    ``load_model(..., size=, mean=, std=)``.

    Args:
        path: the model file.
        labels: class names in output order (default: ``class 0`` ... ``class K-1``).

    Raises:
        UnsafeModelError: a Lambda layer, a function, a custom or non-Keras class in the file.
        InvalidParameterError: a truncated, corrupt or weights-only file, or one Keras cannot
            load.
        ModelOutputError: not a classifier of one image input to one score output.
    """
    path = Path(path)
    keras = keras_module(tensorflow=True)
    source = f"'{path}'"
    check_config(_read_config(path), source)
    try:
        with keras.device("cpu"):
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise InvalidParameterError(f"Keras cannot load '{path}': {first_line(exc)}") from None
    size, classes = _check_classifier(model, source)
    model, stripped = _without_softmax(model)
    if labels is not None and len(labels) != classes:
        raise InvalidParameterError(
            f"{len(labels)} labels given for the {classes} classes of Keras model '{path}'"
        )
    weights = str(path) + (" (final softmax removed: scores are logits)" if stripped else "")
    return _vision_model(
        model,
        KerasPreprocessing.of_mode("tf", _input_size(size)),
        list(labels) if labels is not None else generic_labels(classes),
        name=path.stem,
        source="file",
        weights=weights,
    )


def application_names() -> list[str]:
    """Every ``keras.applications`` architecture, by its Keras name."""
    keras = keras_module(tensorflow=True)
    return sorted(n for n, v in vars(keras.applications).items() if n[:1].isupper() and callable(v))


_CAFFE = ("ResNet50", "ResNet101", "ResNet152", "VGG16", "VGG19")
_RAW_PREFIXES = ("EfficientNet", "ConvNeXt", "MobileNetV3", "RegNet")


def application_mode(name: str) -> Mode:
    """The preprocessing mode of the ``keras.applications`` architecture ``name``: ``"caffe"``
    (ResNet50/101/152, VGG), ``"torch"`` (DenseNet), ``"raw"`` (EfficientNet, EfficientNetV2,
    ConvNeXt, MobileNetV3, RegNet: 0-255 pixels, normalised inside), else ``"tf"`` (MobileNet,
    MobileNetV2, Inception, Xception, NASNet, ResNet V2)."""
    if name in _CAFFE:
        return "caffe"
    if name.startswith("DenseNet"):
        return "torch"
    if name.startswith(_RAW_PREFIXES):
        return "raw"
    return "tf"


def load_keras_application(name: str, *, weights: str = "default") -> VisionModel:
    """A ``keras.applications`` architecture, with logits (``classifier_activation=None``),
    ImageNet labels and its own preprocessing mode (:func:`application_mode`).

    Args:
        name: the Keras name (``MobileNetV2``, ``ResNet50``, ``EfficientNetB0``, ...; case is
            ignored).
        weights: ``"default"`` or ``"imagenet"`` (Keras downloads them, or takes them from its
            cache), ``"none"`` (random), or the path of a ``.weights.h5`` file (data only).

    Raises:
        UnknownModelError: no such architecture (with suggestions).
        WeightsUnavailableError: the ImageNet weights cannot be downloaded.
        WeightsMismatchError: a weights file does not fit the architecture.
        InvalidParameterError: a weights path that does not exist or is not an ``.h5`` file.
    """
    keras = keras_module(tensorflow=True)
    names = application_names()
    if name not in names:
        folded = {n.lower(): n for n in names}
        if name.lower() not in folded:
            raise UnknownModelError(
                f"unknown Keras application '{name}'.{suggest(name, names)} "
                f"Known: {', '.join(names)}"
            )
        name = folded[name.lower()]
    build = getattr(keras.applications, name)
    with keras.device("cpu"):
        if weights in ("default", "imagenet"):
            with download_errors(name):
                model = build(weights="imagenet", classifier_activation=None)
            description = "Keras ImageNet weights"
        else:
            model = build(weights=None, classifier_activation=None)
            description = "none (random)"
            if weights != "none":
                _load_weights(model, Path(weights), name)
                description = str(weights)
    size, classes = _check_classifier(model, f"'{name}'")
    labels = imagenet_labels() if classes == 1000 else generic_labels(classes)
    return _vision_model(
        model,
        KerasPreprocessing.of_mode(application_mode(name), _input_size(size)),
        labels,
        name=name,
        source="keras",
        weights=description,
    )


def _load_weights(model: Any, path: Path, name: str) -> None:
    """Load a ``.weights.h5`` (or legacy ``.h5``) weights file into ``model``: data only."""
    if not path.is_file():
        raise InvalidParameterError(
            f"weights file '{path}' does not exist (weights= takes 'default', 'imagenet', "
            "'none' or a .weights.h5 path)"
        )
    if not path.name.lower().endswith(".h5"):
        raise InvalidParameterError(
            f"weights file '{path}': a Keras application takes a .weights.h5 file"
        )
    try:
        model.load_weights(path)
    except Exception as exc:
        raise WeightsMismatchError(
            f"weights file '{path}' does not fit '{name}': {first_line(exc)}"
        ) from None


def load_saved_model(path: str | Path, *, labels: Sequence[str] | None = None) -> VisionModel:
    """A TensorFlow SavedModel folder's serving signature as a classifier, run by TensorFlow
    (the ``[tensorflow]`` extra).

    A SavedModel is a TensorFlow graph that runs: it can hold any TensorFlow operation (file
    and network access included). Before TensorFlow loads it, every function of the graph is
    read as data and any operation outside a list of pure tensor operations is refused
    (:func:`~seethrough.models.tensorflow.check_saved_model`). It has no Keras layers: gradient
    and perturbation methods run on it, the layer methods (the CAM family) do not. A final
    softmax is removed so that scores are logits. The default preprocessing is the Keras
    ``tf`` mode at the signature's input size (224 where any size): override it with
    ``load_model(..., size=, mean=, std=)``.

    Raises:
        MissingDependencyError: TensorFlow is not installed.
        UnsafeModelError: an operation or a path of the graph refused.
        InvalidParameterError: not a TensorFlow 2 SavedModel TensorFlow can load.
        ModelOutputError: no signature of one image input to one score output.
    """
    import importlib.util

    path = Path(path)
    if importlib.util.find_spec("tensorflow") is None:
        raise MissingDependencyError(
            f"'{path}' is a TensorFlow SavedModel folder: a SavedModel is a TensorFlow graph "
            "that runs, so loading it needs TensorFlow (pip install 'seethrough[tensorflow]'); "
            "or export the model as .keras (model.save('model.keras')) and load that file"
        )
    if "keras" not in sys.modules and importlib.util.find_spec("keras") is not None:
        # importing TensorFlow imports Keras: choose its backend as for a Keras model first
        keras_module(tensorflow=True)
    from .tensorflow import SavedModelRunner, load_saved_model_module

    module, signature = load_saved_model_module(path, partial(channels_last_input, bgr=False))
    if labels is not None and len(labels) != signature.classes:
        raise InvalidParameterError(
            f"{len(labels)} labels given for the {signature.classes} classes of SavedModel '{path}'"
        )
    weights = f"{path} (TensorFlow SavedModel, signature '{signature.name}'" + (
        "; final softmax removed: scores are logits)" if signature.softmax_removed else ")"
    )
    return VisionModel(
        module,
        KerasPreprocessing.of_mode("tf", _input_size(signature.size)),
        list(labels) if labels is not None else generic_labels(signature.classes),
        name=path.resolve().name,
        source="file",
        weights=weights,
        default_layer=None,
        framework="tensorflow",
        runner=partial(SavedModelRunner, module),
    )

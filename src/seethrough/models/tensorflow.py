"""Keras models run natively in TensorFlow, for a process whose Keras runs on the TensorFlow
backend (``KERAS_BACKEND=tensorflow``, the ``[tensorflow]`` extra).

The model stays a TensorFlow computation; the methods see a PyTorch module whose forward is a
:class:`torch.autograd.Function` bridging to TensorFlow:

- forward: the ``(N, H, W, C)`` batch (channels moved last on the torch side) goes to a
  ``tf.function`` of the model, whose logits come back as a torch tensor;
- backward: a ``tf.function`` computes the vector-Jacobian product with ``tf.GradientTape``
  (``tape.gradient(y, x, output_gradients=g)`` = ``g^T dy/dx``), so every gradient and
  perturbation method runs on the existing core unchanged.

For the layer methods, :class:`TFRunner` records a layer by running
``keras.Model(model.inputs, [layer.output, ..., model.output])``. Inside
:meth:`TFRunner.graph_from` the graph starts at the layer: its output ``A`` becomes a torch
leaf, and the logits a bridged function of ``A`` whose backward is TensorFlow's gradient at the
layer, ``tape.gradient(logits, A, output_gradients=g)`` (through the part of the model after
the layer, ``keras.Model(layer.output, model.output)``, where the layer cuts the graph; else by
running the model again from the input). So ``torch.autograd.grad(score, A)`` is TensorFlow's
gradient at the layer, as the CAM family needs.

Every TensorFlow computation is a ``tf.function`` traced once per (layers, gradient) kind with
a batch of any size (eager ``GradientTape`` is several times slower). TensorFlow 2.21 aborts the
process in the backward of a 1x1 stride-2 convolution of an even-sized input when its oneDNN
kernels are on: :func:`tensorflow_module` turns them off (``TF_ENABLE_ONEDNN_OPTS=0``) when it
imports TensorFlow, and warns once when TensorFlow was imported before with them on.

This module never imports :mod:`seethrough.models.keras`; the Keras loader hands it the model,
its layers and how to adapt its input.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.layers import LayerRef
from ..core.runner import ModelRunner
from ..errors import (
    MethodNotApplicableError,
    MissingDependencyError,
    UnknownLayerError,
    suggest,
)

__all__ = ["TFLayer", "TFModule", "TFRecorder", "TFRunner", "tensorflow_module"]

_ONEDNN_WARNING: list[bool] = []


def tensorflow_module() -> ModuleType:
    """The ``tensorflow`` package, imported with its oneDNN kernels off when it is not yet
    imported (``TF_ENABLE_ONEDNN_OPTS=0``, unless the environment sets it).

    Warns once (``RuntimeWarning``) when TensorFlow runs with oneDNN on: TensorFlow 2.21 aborts
    the process in the backward of a 1x1 stride-2 convolution of an even-sized input then.

    Raises:
        MissingDependencyError: TensorFlow is not installed.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError(
            f"Keras on the TensorFlow backend needs TensorFlow (pip install "
            f"'seethrough[tensorflow]'): {exc}"
        ) from None
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0" and not _ONEDNN_WARNING:
        _ONEDNN_WARNING.append(True)
        warnings.warn(
            "TensorFlow runs with its oneDNN kernels on: its backward of a 1x1 stride-2 "
            "convolution of an even-sized input can abort the process (TensorFlow 2.21). Set "
            "TF_ENABLE_ONEDNN_OPTS=0 before TensorFlow is imported to avoid it",
            RuntimeWarning,
            stacklevel=2,
        )
    return tf


# ---------------------------------------------------------------------------------- bridge


def _to_tf(x: torch.Tensor) -> np.ndarray:
    """A torch tensor as the contiguous float32 array TensorFlow takes."""
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


def _to_torch(value: Any) -> torch.Tensor:
    """A TensorFlow tensor as a torch tensor (CPU)."""
    return torch.from_numpy(np.array(value, dtype=np.float32))


@dataclass(frozen=True)
class _Key:
    """What one traced computation returns: the outputs of ``layers``, the inputs of
    ``inputs`` (both by name), then the logits."""

    layers: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()


class TFGraph:
    """The ``tf.function`` computations of one Keras model, traced once each and cached.

    ``run(key, x)`` returns the outputs of ``key``'s layers and layer inputs and the logits;
    ``vjp(key, x, grads)`` the gradient with respect to ``x`` of the sum of those outputs
    weighted by ``grads``; ``layer_vjp(layer, x, a, g)`` the gradient of the logits weighted by
    ``g`` at the layer's output ``a`` (see the module docstring).
    """

    def __init__(self, model: Any, layers: Mapping[str, Any]) -> None:
        """``model``: a built Keras model on the TensorFlow backend, one 4-D input and one
        output; ``layers``: its top-level layers by name."""
        self.tf = tensorflow_module()
        import keras

        self.keras = keras
        self.model = model
        self.layers = dict(layers)
        self._lock = threading.Lock()
        self._functions: dict[object, Callable[..., Any]] = {}
        self._tensors: dict[str, Any] = {}
        self._input_spec = self.tf.TensorSpec([None, *model.inputs[0].shape[1:]], "float32")
        self._output_spec = self.tf.TensorSpec([None, *model.outputs[0].shape[1:]], "float32")

    # -- graph tensors

    def layer_tensor(self, name: str, which: str = "output") -> Any:
        """The symbolic output (``which="output"``) or input of the top-level layer ``name``
        in the model's graph.

        Raises:
            MethodNotApplicableError: the layer is called more than once, or not on the path
                from the input.
        """
        key = f"{which}:{name}"
        if key not in self._tensors:
            layer = self.layers[name]
            found = None
            for node in getattr(layer, "_inbound_nodes", ()):
                tensors = node.output_tensors if which == "output" else node.input_tensors
                if len(tensors) != 1:
                    continue
                try:  # the node of this model's graph (a nested model has its own too)
                    self.keras.Model(self.model.inputs, tensors[0])
                except Exception:  # noqa: BLE001 - Keras says "not connected" in several ways
                    continue
                if found is not None:
                    raise MethodNotApplicableError(
                        f"layer '{name}' is called more than once in the model: pick a layer "
                        "that runs once"
                    )
                found = tensors[0]
            if found is None:
                raise MethodNotApplicableError(
                    f"layer '{name}' has no single {which} on the model's path from its input"
                )
            self._tensors[key] = found
        return self._tensors[key]

    def _cached(self, key: object, make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        with self._lock:
            if key not in self._functions:
                self._functions[key] = make()
            return self._functions[key]

    def _submodel(self, key: _Key) -> Any:
        """The model of ``key``'s outputs (the model itself for none)."""
        if not key.layers and not key.inputs:
            return self.model
        outputs = [self.layer_tensor(n) for n in key.layers]
        outputs += [self.layer_tensor(n, "input") for n in key.inputs]
        return self.keras.Model(self.model.inputs, [*outputs, self.model.outputs[0]])

    # -- computations

    def run(self, key: _Key, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of ``key`` on the ``(N, H, W, C)`` batch ``x``, logits last."""

        def make() -> Callable[..., Any]:
            sub = self._submodel(key)

            def forward(x: Any) -> Any:
                out = sub(x, training=False)
                return list(out) if isinstance(out, (list, tuple)) else [out]

            return self.tf.function(forward, input_signature=[self._input_spec])

        values = self._cached(("run", key), make)(_to_tf(x))
        return [_to_torch(v) for v in values]

    def vjp(self, key: _Key, x: torch.Tensor, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_k g_k^T d out_k / dx`` for the outputs ``out_k`` of ``key`` (logits last)."""
        tf = self.tf

        def make() -> Callable[..., Any]:
            sub = self._submodel(key)

            def backward(x: Any, *grads: Any) -> Any:
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    out = sub(x, training=False)
                    out = list(out) if isinstance(out, (list, tuple)) else [out]
                return tape.gradient(out, x, output_gradients=list(grads))

            return tf.function(backward, reduce_retracing=True)

        fn = self._cached(("vjp", key), make)
        return _to_torch(fn(_to_tf(x), *(_to_tf(g) for g in grads)))

    def layer_vjp(
        self, layer: str, x: torch.Tensor, a: torch.Tensor, g: torch.Tensor
    ) -> torch.Tensor:
        """``g^T d logits / dA`` at the output ``a`` of ``layer`` (``(N, H, W, C)``) for the
        input ``x``: through the rest of the model from ``a`` where the layer cuts the graph,
        else by a forward from ``x``."""
        tf = self.tf

        def make() -> Callable[..., Any]:
            start = self.layer_tensor(layer)
            try:
                tail = self.keras.Model(start, self.model.outputs[0])
            except Exception:  # noqa: BLE001 - another path from the input reaches the output
                tail = None
            if tail is not None:

                def through_tail(x: Any, a: Any, g: Any) -> Any:
                    with tf.GradientTape() as tape:
                        tape.watch(a)
                        logits = tail(a, training=False)
                    return tape.gradient(logits, a, output_gradients=g)

                return tf.function(through_tail, reduce_retracing=True)
            sub = self._submodel(_Key((layer,)))

            def from_input(x: Any, a: Any, g: Any) -> Any:
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    inner, logits = sub(x, training=False)
                return tape.gradient(logits, inner, output_gradients=g)

            return tf.function(from_input, reduce_retracing=True)

        fn = self._cached(("layer", layer), make)
        return _to_torch(fn(_to_tf(x), _to_tf(a), _to_tf(g)))


class _Bridged(torch.autograd.Function):
    """``outputs = graph.run(key, x)`` with TensorFlow's VJP as the backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, graph: TFGraph, key: _Key) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        ctx.graph, ctx.key = graph, key
        ctx.save_for_backward(x)
        return tuple(graph.run(key, x))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return ctx.graph.vjp(ctx.key, x, grads).to(x.dtype), None, None


@dataclass
class _FromLayer:
    """What the backward of :class:`_LayerBridged` needs besides the layer's output."""

    graph: TFGraph
    layer: str
    x: torch.Tensor
    logits: torch.Tensor


class _LayerBridged(torch.autograd.Function):
    """The logits as a function of a layer's output ``a`` (``(N, H, W, C)``): the forward
    returns the logits already computed from the same input, the backward is TensorFlow's
    gradient at the layer."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, saved: _FromLayer) -> torch.Tensor:  # type: ignore[override]
        ctx.saved = saved
        ctx.save_for_backward(a)
        return saved.logits.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        s = ctx.saved
        return s.graph.layer_vjp(s.layer, s.x, a, g).to(a.dtype), None


# ---------------------------------------------------------------------------------- module


class TFLayer(nn.Module):
    """A layer of a Keras model that runs in TensorFlow: it holds nothing and computes
    nothing; :class:`TFRunner` captures its output."""

    def __init__(self, name: str, layer: Any) -> None:
        super().__init__()
        self.layer_name = name
        object.__setattr__(self, "keras_layer", layer)  # not a submodule

    def forward(self, *args: object) -> None:
        """Not callable: the model runs in TensorFlow."""
        raise MethodNotApplicableError(
            f"'{self.layer_name}' is a layer of a Keras model that runs in TensorFlow"
        )

    def extra_repr(self) -> str:
        return f"{self.layer_name!r}, {type(self.keras_layer).__name__}"


class TFModule(nn.Module):
    """A Keras model running in TensorFlow as a PyTorch classifier of ``(N, C, H, W)`` model
    input, differentiable through TensorFlow (see the module docstring).

    It has no parameters: the weights stay TensorFlow variables, which nothing here changes.
    """

    def __init__(
        self,
        model: Any,
        *,
        layers: Mapping[str, Any],
        prepare: Callable[[torch.Tensor], torch.Tensor],
        linear: Callable[[Any], nn.Linear | None],
        skip: frozenset[str] = frozenset(),
    ) -> None:
        """Bridge the Keras ``model``.

        Args:
            model: a built Keras model on the TensorFlow backend (one 4-D channels-last input,
                one ``(N, classes)`` output).
            layers: its top-level layers by Keras name.
            prepare: the ``(N, C, H, W)`` batch to the model's ``(N, H, W, C)`` input (channel
                order, luminance), in torch.
            linear: the ``nn.Linear`` view of a layer that is a linear ``Dense`` layer (CAM
                reads a classifier's weights from it), else ``None``.
            skip: class names of layers that are never a default layer (padding, dropout, ...).
        """
        super().__init__()
        object.__setattr__(self, "graph", TFGraph(model, layers))
        self.prepare = prepare
        self.skip = skip
        self.default_layer: str | None = None
        self.layers: dict[str, nn.Module] = {}
        for name, layer in layers.items():
            head = linear(layer)
            self.layers[name] = head if head is not None else TFLayer(name, layer)
        self._spatial: dict[tuple[int, ...], list[tuple[str, tuple[int, ...]]]] = {}

    @property
    def model(self) -> Any:
        """The Keras model."""
        return self.graph.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the batch ``x`` ``(N, C, H, W)``, computed by TensorFlow."""
        (logits,) = _Bridged.apply(self.prepare(x), self.graph, _Key())
        return logits.to(x.device)


# ----------------------------------------------------------------------------------- runner


def _nchw(t: torch.Tensor) -> torch.Tensor:
    """A channels-last 4-D tensor as ``(N, C, H, W)`` (a view); anything else unchanged."""
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t


class TFRecorder:
    """The outputs (and inputs) of layers of a Keras model running in TensorFlow during the
    forwards of a block, as ``(N, C, H, W)``: the :class:`~seethrough.core.hooks.Recorder` of
    a :class:`TFRunner`."""

    def __init__(self, runner: TFRunner, modules: Mapping[str, nn.Module], *, inputs: bool):
        self.runner = runner
        self.modules = dict(modules)
        self.record_inputs = inputs
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.names = {n: runner.layer_name(m) for n, m in self.modules.items()}

    def __enter__(self) -> TFRecorder:
        self.runner.recorders.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.runner.recorders.remove(self)

    def output(self, name: str) -> torch.Tensor:
        """The recorded output of ``name``; a clear error if no forward ran in the block."""
        if name not in self.outputs:
            raise MethodNotApplicableError(
                f"layer '{name}' was not computed: no forward ran while it was recorded"
            )
        return self.outputs[name]


class TFRunner(ModelRunner):
    """The runner of a Keras model running in TensorFlow (see :mod:`seethrough.core.runner`):
    differentiable through TensorFlow's gradients, with the model's top-level layers by Keras
    name, their outputs handed over as ``(N, C, H, W)``."""

    differentiable = True
    has_layers = True
    kind = "a Keras model on TensorFlow"

    def __init__(self, module: TFModule) -> None:
        """Run the bridged model ``module``."""
        self.module = module
        self.graph = module.graph
        self.recorders: list[TFRecorder] = []
        self._start: str | None = None
        self._names = {id(m): n for n, m in module.layers.items()}

    # -- layers

    @property
    def named_modules(self) -> dict[str, nn.Module]:
        """Every top-level layer by Keras name."""
        return self.module.layers

    def layer_name(self, module: nn.Module) -> str:
        """The Keras name of one of :attr:`named_modules`."""
        name = self._names.get(id(module))
        if name is None:
            raise MethodNotApplicableError("the given layer is not a layer of this Keras model")
        return name

    def layer(self, name: str) -> nn.Module:
        """The layer called ``name``."""
        return self.resolve_layer(name)[1]

    def resolve_layer(
        self, layer: LayerRef, example: torch.Tensor | None = None, default: str | None = None
    ) -> tuple[str, nn.Module]:
        """``(name, layer)`` for a top-level Keras layer name, a layer, or ``None`` for the
        default: the last layer with a spatial output."""
        if layer is None:
            layer = default or self.default_layer(example)
        if isinstance(layer, nn.Module):
            return self.layer_name(layer), layer
        if not isinstance(layer, str):
            raise UnknownLayerError(f"layer must be a name or a layer, not {type(layer).__name__}")
        named = self.module.layers
        if layer in named:
            return layer, named[layer]
        if "/" in layer and layer.split("/", 1)[0] in named:
            raise UnknownLayerError(
                f"'{layer}' is a layer inside the nested model '{layer.split('/', 1)[0]}': on "
                "TensorFlow seethrough reaches the model's top-level layers (the nested model "
                "itself is one); run Keras on its torch backend to explain inner layers"
            )
        hint = (
            suggest(layer, named) or f" Some layers of this model: {', '.join(list(named)[-8:])}."
        )
        raise UnknownLayerError(f"no layer named '{layer}' in this Keras model.{hint}")

    def default_layer(self, example: torch.Tensor | None) -> str:
        """The last layer with a spatial output (found once per model)."""
        if self.module.default_layer is None:
            if example is None:
                raise UnknownLayerError(
                    "no layer given and no example input to find a default layer"
                )
            layers = self.spatial_layers(example)
            if not layers:
                raise UnknownLayerError(
                    "this Keras model has no layer with a spatial (N, H, W, C) output; give "
                    "layer= explicitly"
                )
            self.module.default_layer = layers[-1][0]
        return self.module.default_layer

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """The top-level layers with a spatial output and their shapes as ``(N, C, H, W)``,
        in the model's order, from one forward of ``example[:1]``; padding, dropout,
        resampling and preprocessing layers are left out."""
        shape = tuple(example.shape[1:])
        if shape not in self.module._spatial:
            names = []
            for name, layer in self.graph.layers.items():
                if type(layer).__name__ in self.module.skip:
                    continue
                try:
                    tensor = self.graph.layer_tensor(name)
                except MethodNotApplicableError:
                    continue
                if len(tensor.shape) == 4:
                    names.append(name)
            found: list[tuple[str, tuple[int, ...]]] = []
            if names:
                x = self.module.prepare(example[:1].detach().float())
                values = self.graph.run(_Key(tuple(names)), x)
                for name, value in zip(names, values, strict=False):
                    n, h, w, c = value.shape
                    if h * w > 1:
                        found.append((name, (n, c, h, w)))
            self.module._spatial[shape] = found
        return list(self.module._spatial[shape])

    # -- running

    def record(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> TFRecorder:  # type: ignore[override]
        """A block that captures the outputs (and, with ``inputs``, the inputs) of the layers
        ``modules`` during its forwards, as ``(N, C, H, W)``."""
        return TFRecorder(self, modules, inputs=inputs)

    @contextmanager
    def graph_from(self, layer: nn.Module | None) -> Iterator[None]:
        """A block in which the autograd graph of a forward starts at ``layer``'s output: the
        recorded output is a leaf, and the gradient of the logits at it is TensorFlow's."""
        saved = self._start
        self._start = None if layer is None else self.layer_name(layer)
        try:
            yield
        finally:
            self._start = saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits on ``x`` ``(N, C, H, W)``; inside :meth:`record` the recorded layers'
        outputs too, inside :meth:`graph_from` with the graph starting at the layer."""
        if not self.recorders and self._start is None:
            return self.module(x)
        layers = {name for r in self.recorders for name in r.names.values()}
        inputs = {name for r in self.recorders if r.record_inputs for name in r.names.values()}
        start = self._start if torch.is_grad_enabled() else None
        if start is not None:
            layers.add(start)
        key = _Key(tuple(sorted(layers)), tuple(sorted(inputs)))
        prepared = self.module.prepare(x)
        if start is None:
            *values, logits = _Bridged.apply(prepared, self.graph, key)
            outs = dict(zip(key.layers, map(_nchw, values[: len(key.layers)]), strict=True))
        else:
            with torch.no_grad():
                *values, logits = self.graph.run(key, prepared)
            outs = {
                name: v.permute(0, 3, 1, 2).detach() if v.dim() == 4 else v.detach()
                for name, v in zip(key.layers, values, strict=False)
            }
            leaf = outs[start].requires_grad_()
            a = leaf.permute(0, 2, 3, 1) if leaf.dim() == 4 else leaf
            logits = _LayerBridged.apply(a, _FromLayer(self.graph, start, prepared, logits))
        ins = dict(zip(key.inputs, map(_nchw, values[len(key.layers) :]), strict=True))
        for recorder in self.recorders:
            for name, layer in recorder.names.items():
                recorder.outputs[name] = outs[layer]
                if recorder.record_inputs:
                    recorder.inputs[name] = ins[layer]
        return logits.to(x.device)

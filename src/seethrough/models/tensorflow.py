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

import dataclasses
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.hooks import RunnerRecorder
from ..core.layers import LayerRef, last_spatial_layer, unknown_layer
from ..core.runner import ModelRunner
from ..errors import (
    InvalidParameterError,
    MethodNotApplicableError,
    MissingDependencyError,
    ModelOutputError,
    UnknownLayerError,
    UnsafeModelError,
)

__all__ = [
    "SavedModelModule",
    "SavedModelRunner",
    "SavedModelSignature",
    "TFLayer",
    "TFModule",
    "TFRecorder",
    "TFRunner",
    "check_saved_model",
    "load_saved_model_module",
    "tensorflow_module",
]

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


class TFRecorder(RunnerRecorder):
    """The outputs (and inputs) of layers of a Keras model running in TensorFlow during the
    forwards of a block, as ``(N, C, H, W)``: the :class:`~seethrough.core.hooks.Recorder` of
    a :class:`TFRunner`."""

    runner: TFRunner

    def __init__(self, runner: TFRunner, modules: Mapping[str, nn.Module], *, inputs: bool):
        super().__init__(runner, modules, inputs=inputs)
        self.names = {n: runner.layer_name(m) for n, m in self.modules.items()}


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
        raise unknown_layer(layer, list(named), model="this Keras model")

    def default_layer(self, example: torch.Tensor | None) -> str:
        """The last layer with a spatial output (found once per model)."""
        if self.module.default_layer is None:
            self.module.default_layer = last_spatial_layer(
                self.spatial_layers, example, model="this Keras model", layout="(N, H, W, C)"
            )
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


# ------------------------------------------------------------------------------- SavedModel

# A SavedModel is a TensorFlow graph, and loading and explaining it runs that graph. Before
# TensorFlow sees it, every function of the graph is read as data (the ``saved_model.pb``
# protocol buffer) and each operation must be a pure tensor operation of this list: arithmetic,
# the layers of vision models, shapes, control flow, calls of the graph's own functions and
# reads of its variables. Nothing here reads or writes a file, runs Python, prints, talks to
# the network or assigns a variable.
_PURE_OPS = frozenset(
    """
    Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Assert Atan
    Atan2 Atanh AvgPool AvgPool3D AvgPoolGrad BatchMatMul BatchMatMulV2 BatchMatMulV3
    BatchToSpaceND BiasAdd BiasAddGrad Bitcast BroadcastArgs BroadcastGradientArgs BroadcastTo
    Cast Ceil CheckNumerics ClipByValue Concat ConcatOffset ConcatV2 Const Conv2D
    Conv2DBackpropFilter Conv2DBackpropInput Conv3D Conv3DBackpropInputV2 Cos Cosh Cumprod
    Cumsum DepthToSpace DepthwiseConv2dNative DepthwiseConv2dNativeBackpropFilter
    DepthwiseConv2dNativeBackpropInput Dilation2D Div DivNoNan Einsum Elu EluGrad EnsureShape
    Equal Erf Erfc Erfinv Exp ExpandDims Expm1 ExtractImagePatches Fill Floor FloorDiv FloorMod
    FusedBatchNorm FusedBatchNormGradV3 FusedBatchNormV2 FusedBatchNormV3 Gather GatherNd
    GatherV2 Greater GreaterEqual Identity IdentityN If InvertPermutation IsFinite IsInf IsNan
    L2Loss LRN LeakyRelu LeakyReluGrad Less LessEqual LinSpace Log Log1p LogSoftmax LogicalAnd
    LogicalNot LogicalOr MatMul MatrixBandPart Max MaxPool MaxPool3D MaxPoolGrad MaxPoolV2
    Maximum Mean Min Minimum MirrorPad Mod Mul MulNoNan Neg NoOp NotEqual OneHot OnesLike Pack
    Pad PadV2 PartitionedCall Pow PreventGradient Prod Range Rank ReadVariableOp RealDiv
    Reciprocal ReciprocalGrad Relu Relu6 Relu6Grad ReluGrad Reshape ResizeArea ResizeBicubic
    ResizeBilinear ResizeBilinearGrad ResizeNearestNeighbor ResizeNearestNeighborGrad
    ResourceGather ReverseV2 Rint Round Rsqrt RsqrtGrad ScaleAndTranslate ScatterNd Select
    SelectV2 Selu SeluGrad Shape ShapeN Sigmoid SigmoidGrad Sign Sin Sinh Size Slice Snapshot
    Softmax Softplus SoftplusGrad Softsign SpaceToBatchND SpaceToDepth Split SplitV Sqrt
    SqrtGrad Square SquaredDifference Squeeze StatefulPartitionedCall StatelessIf StatelessWhile
    StopGradient StridedSlice StridedSliceGrad Sub Sum Tan Tanh TanhGrad TensorListElementShape
    TensorListFromTensor TensorListGetItem TensorListLength TensorListPopBack
    TensorListPushBack TensorListReserve TensorListSetItem TensorListStack
    TensorScatterUpdate Tile TopKV2 Transpose TruncateDiv Unpack VariableShape Where While
    Xdivy Xlogy ZerosLike
    """.split()
)

# What the top-level graph holds (its variables and the calls of the signatures and of the
# checkpoint functions): TensorFlow 2 never runs it on loading, its variables are restored by
# TensorFlow's checkpoint reader from the folder's own ``variables/``.
_GRAPH_OPS = _PURE_OPS | {"Placeholder", "VarHandleOp", "VarIsInitializedOp", "AssignVariableOp"}

# The two checkpoint functions the SavedModel's saver names: the restore function reads the
# variables from the path it is given, the save function writes them; neither is run by
# TensorFlow 2's loader or by seethrough, and each may be called from nowhere else.
_RESTORE_OPS = frozenset({"Const", "Identity", "NoOp", "RestoreV2", "AssignVariableOp"})
_SAVE_OPS = frozenset(
    {
        "Const",
        "Identity",
        "NoOp",
        "Pack",
        "ReadVariableOp",
        "DisableCopyOnRead",
        "SaveV2",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "StaticRegexFullMatch",
        "Select",
        "StringJoin",
    }
)

# Why some operations are refused, for the message (anything off the list above is refused).
_DANGER: tuple[tuple[tuple[str, ...], str], ...] = (
    (("PyFunc", "PyFuncStateless", "EagerPyFunc"), "runs Python code"),
    (
        (
            "ReadFile",
            "WriteFile",
            "MatchingFiles",
            "Save",
            "SaveV2",
            "SaveSlices",
            "Restore",
            "RestoreV2",
            "RestoreSlice",
            "MergeV2Checkpoints",
            "ShardedFilename",
            "ShardedFilespec",
            "ImmutableConst",
        ),
        "reads or writes files",
    ),
    (("Print", "PrintV2", "Debug"), "prints or writes debugging output"),
    (("Dataset", "Iterator", "Reader", "Writer", "Queue", "Summary"), "reads or writes data"),
    (("Rpc", "Collective", "_Send", "_Recv", "Send", "Recv"), "communicates with other processes"),
    (("ExecuteTFLiteModel", "Xla", "TPU"), "runs another compiled program"),
    (("Assign", "ScatterAdd", "ScatterUpdate"), "changes the model's variables"),
)


def _why_refused(op: str) -> str:
    """Why the operation ``op`` is refused, in words."""
    for names, why in _DANGER:
        if op in names or any(op.startswith(n) or n in op for n in names if len(n) > 4):
            return why
    from tensorflow.python.framework import op_def_registry

    if op_def_registry.get(op) is None:
        return "is not a TensorFlow operation (a custom operation, code from a library)"
    return "is not on seethrough's list of pure tensor operations"


@dataclass(frozen=True)
class SavedModelSignature:
    """The serving signature of a checked SavedModel: its input and output names, the input's
    ``(height, width)`` (``None`` where any size) and channels, the number of classes and
    whether a final softmax was removed (scores are then logits)."""

    name: str
    input: str
    output: str
    size: tuple[int | None, int | None]
    channels: int
    classes: int
    softmax_removed: bool


def _refuse(path: Path, where: str, why: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"refusing SavedModel '{path}': {where} {why}. A SavedModel is a TensorFlow graph that "
        "runs when it is loaded and explained: seethrough loads only graphs of pure tensor "
        "operations (export the model as .keras to load it without running a graph)"
    )


def _func_names(node: Any) -> Iterator[str]:
    """The functions a node names in its attributes (a call's ``f``, a loop's body, ...)."""
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        if value.HasField("list"):
            yield from (f.name for f in value.list.func)


def _shape(info: Any) -> list[int | None]:
    """The dimensions of a signature tensor (``None`` where unknown)."""
    if info.tensor_shape.unknown_rank:
        return []
    return [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]


def _final_softmax(graph: Any, functions: Mapping[str, Any], tensor: str) -> tuple[Any, Any]:
    """The ``Softmax`` node (a NodeDef) that computes the top-level tensor ``tensor``, through
    identities and function calls, and the function holding it (``None``: the top-level
    graph); ``(None, None)`` where the tensor is not a softmax."""
    nodes = {n.name: n for n in graph.node}
    function = None
    for _ in range(256):  # a bound on the depth of nested calls
        name, *rest = tensor.split(":")
        node = nodes.get(name)
        if node is None:
            break
        if node.op == "Softmax":
            return node, function
        if node.op in ("Identity", "Snapshot"):
            tensor = node.input[0]
            continue
        callee = node.attr["f"].func.name if "f" in node.attr else node.op
        if callee not in functions:
            break
        index = int(rest[-1]) if rest else 0
        function = functions[callee]
        if index >= len(function.signature.output_arg):
            break
        tensor = function.ret[function.signature.output_arg[index].name]
        nodes = {n.name: n for n in function.node_def}
    return None, None


def _as_identity(node: Any, function: Any) -> None:
    """Make the ``Softmax`` node an ``Identity`` of its logits: its output, ``name:softmax:0``
    inside a function, becomes ``name:output:0`` there."""
    node.op = "Identity"
    if function is None:
        return
    old, new = f"{node.name}:softmax:", f"{node.name}:output:"
    for other in function.node_def:
        for i, name in enumerate(other.input):
            if name.startswith(old):
                other.input[i] = new + name[len(old) :]
    for key, value in function.ret.items():
        if value.startswith(old):
            function.ret[key] = new + value[len(old) :]


def check_saved_model(path: Path) -> tuple[bytes, SavedModelSignature]:
    """Read the SavedModel folder ``path`` as data and check that its graph runs only pure
    tensor operations; the graph to load (its final softmax removed) and its signature.

    Checked: every function of every meta graph and the top-level graph use only operations of
    a list of pure tensor operations (file, Python, printing, data, network operations, custom
    operations and variable assignments are refused, naming the function and the operation);
    the save and restore functions of the checkpoint use only the checkpoint operations and are
    called from nowhere else; every function a node names is one of the graph's own; no asset
    files; ``variables/`` and its files stay inside the folder; the serving signature
    (``serving_default``, or the only one) takes one ``(N, H, W, 1 or 3)`` float image and
    gives one ``(N, classes)`` output.

    Raises:
        UnsafeModelError: an operation, a function reference, an asset or a path refused.
        InvalidParameterError: not a readable TensorFlow 2 SavedModel.
        ModelOutputError: no signature of one image input and one score output.
    """
    tensorflow_module()
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
    except (OSError, DecodeError, RuntimeWarning) as exc:
        raise InvalidParameterError(
            f"cannot read SavedModel '{path}' (truncated or not a SavedModel?): {exc}"
        ) from None
    if len(saved.meta_graphs) != 1:
        raise InvalidParameterError(
            f"SavedModel '{path}' holds {len(saved.meta_graphs)} graphs: seethrough loads a "
            "SavedModel with one (as tf.saved_model.save and Keras' model.export write)"
        )
    meta = saved.meta_graphs[0]
    if not meta.object_graph_def.nodes:
        raise InvalidParameterError(
            f"'{path}' is a TensorFlow 1 SavedModel: save it again with TensorFlow 2 "
            "(tf.saved_model.save or Keras' model.export)"
        )
    if meta.asset_file_def or any(
        n.WhichOneof("kind") == "asset" for n in meta.object_graph_def.nodes
    ):
        raise _refuse(path, "the graph", "has asset files, which only file operations read")
    _check_variables(path)
    graph = meta.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    nodes = {n.name: n for n in graph.node}
    saver = meta.saver_def
    checkpoint: dict[str, tuple[frozenset[str], str]] = {}
    for tensor, ops in (
        (saver.save_tensor_name, _SAVE_OPS),
        (saver.restore_op_name, _RESTORE_OPS),
    ):
        node = nodes.get(tensor.split(":")[0]) if tensor else None
        if node is not None and "f" in node.attr and node.attr["f"].func.name in functions:
            checkpoint[node.attr["f"].func.name] = (ops, node.name)

    def check_node(node: Any, where: str, allowed: frozenset[str], in_saver: str = "") -> None:
        for called in [*_func_names(node), *([node.op] if node.op in functions else [])]:
            if called not in functions:
                raise _refuse(path, where, f"calls '{called}', which is not one of its functions")
            if called in checkpoint and checkpoint[called][1] != in_saver:
                raise _refuse(
                    path,
                    where,
                    f"calls the checkpoint function '{called}' (it reads or writes files)",
                )
        if node.op not in allowed and node.op not in functions:
            raise _refuse(
                path, where, f"runs the operation '{node.op}', which {_why_refused(node.op)}"
            )

    for node in graph.node:
        saver_node = next((c[1] for c in checkpoint.values() if c[1] == node.name), "")
        check_node(node, f"the graph's node '{node.name}'", _GRAPH_OPS, saver_node)
    for name, function in functions.items():
        allowed, _ = checkpoint.get(name, (_PURE_OPS, ""))
        for node in function.node_def:
            check_node(node, f"function '{name}'", allowed)
            if node.op == "RestoreV2" and node.input[0].split(":")[0] not in {
                a.name for a in function.signature.input_arg
            }:
                raise _refuse(
                    path, f"function '{name}'", "restores variables from a path of its own"
                )
    for name in meta.object_graph_def.concrete_functions:
        if name in checkpoint or name not in functions:
            raise _refuse(path, "the object graph", f"names the function '{name}'")
    signature = _serving_signature(path, meta)
    softmax, holder = _final_softmax(
        graph, functions, meta.signature_def[signature.name].outputs[signature.output].name
    )
    if softmax is not None:
        _as_identity(softmax, holder)
        signature = dataclasses.replace(signature, softmax_removed=True)
    return saved.SerializeToString(), signature


def _check_variables(path: Path) -> None:
    """``variables/`` and every file in it lie inside ``path`` (no link leaves the folder)."""
    root = path.resolve()
    folder = path / "variables"
    if not folder.exists():
        return
    for item in [folder, *folder.iterdir()]:
        if not item.resolve().is_relative_to(root):
            raise _refuse(path, f"'{item.relative_to(path)}'", "points outside the folder")


def _serving_signature(path: Path, meta: Any) -> SavedModelSignature:
    """The serving signature (``serving_default``, or the only one) of ``meta``, checked to
    take one float image and give one ``(N, classes)`` output."""
    from tensorflow.core.framework import types_pb2

    names = [n for n in meta.signature_def if not n.startswith("__")]
    name = (
        "serving_default" if "serving_default" in names else names[0] if len(names) == 1 else None
    )
    if name is None:
        raise ModelOutputError(
            f"SavedModel '{path}' has no serving_default signature and several others "
            f"({', '.join(sorted(names)) or 'none'}): export it with one serving signature"
        )
    sig = meta.signature_def[name]
    inputs, outputs = dict(sig.inputs), dict(sig.outputs)
    shapes = {k: _shape(v) for k, v in inputs.items()}
    if (
        len(inputs) != 1
        or next(iter(inputs.values())).dtype != types_pb2.DT_FLOAT
        or len(next(iter(shapes.values()))) != 4
        or next(iter(shapes.values()))[-1] not in (1, 3)
    ):
        raise ModelOutputError(
            f"SavedModel '{path}' signature '{name}' must take one float (N, H, W, 1 or 3) "
            f"image, it takes {shapes}"
        )
    out_shapes = {k: _shape(v) for k, v in outputs.items()}
    if (
        len(outputs) != 1
        or len(next(iter(out_shapes.values()))) != 2
        or not next(iter(out_shapes.values()))[-1]
    ):
        raise ModelOutputError(
            f"SavedModel '{path}' signature '{name}' must give one (N, classes) output, it "
            f"gives {out_shapes}"
        )
    (input_name, shape), ((output_name, out_shape),) = (
        next(iter(shapes.items())),
        out_shapes.items(),
    )
    return SavedModelSignature(
        name=name,
        input=input_name,
        output=output_name,
        size=(shape[1], shape[2]),
        channels=int(shape[3] or 3),
        classes=int(out_shape[1] or 0),
        softmax_removed=False,
    )


class SavedModelGraph:
    """The serving signature of a loaded SavedModel as the ``tf.function`` computations
    :class:`_Bridged` calls: ``run`` gives the scores, ``vjp`` TensorFlow's vector-Jacobian
    product ``g^T d scores / dx`` (``tf.GradientTape``), each traced once for any batch size."""

    def __init__(self, function: Any, signature: SavedModelSignature) -> None:
        """``function``: the signature's concrete function; ``signature``: what it takes and
        gives."""
        self.tf = tensorflow_module()
        self.function = function
        self.signature = signature
        h, w = signature.size
        spec = self.tf.TensorSpec([None, h, w, signature.channels], "float32")
        tf = self.tf

        def scores(x: Any) -> Any:
            return function(**{signature.input: x})[signature.output]

        def backward(x: Any, g: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = scores(x)
            return tape.gradient(out, x, output_gradients=g)

        self._run = tf.function(scores, input_signature=[spec])
        self._vjp = tf.function(backward, reduce_retracing=True)

    def run(self, key: _Key, x: torch.Tensor) -> list[torch.Tensor]:
        """The scores on the ``(N, H, W, C)`` batch ``x`` (``key`` has no layers)."""
        return [_to_torch(self._run(_to_tf(x)))]

    def vjp(self, key: _Key, x: torch.Tensor, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        """``g^T d scores / dx`` for the one gradient ``g`` of ``grads``."""
        (g,) = grads
        return _to_torch(self._vjp(_to_tf(x), _to_tf(g)))


class SavedModelModule(nn.Module):
    """A SavedModel's serving signature as a PyTorch classifier of ``(N, C, H, W)`` model
    input, differentiable through TensorFlow; no parameters, no layers."""

    def __init__(
        self, graph: SavedModelGraph, prepare: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        """``graph``: the loaded signature; ``prepare``: the ``(N, C, H, W)`` batch to its
        ``(N, H, W, C)`` input."""
        super().__init__()
        object.__setattr__(self, "graph", graph)
        self.prepare = prepare

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the batch ``x`` ``(N, C, H, W)``, computed by TensorFlow."""
        (scores,) = _Bridged.apply(self.prepare(x), self.graph, _Key())
        return scores.to(x.device)


class SavedModelRunner(ModelRunner):
    """The runner of a SavedModel: differentiable through TensorFlow's gradients, without
    layers (a SavedModel is a graph of TensorFlow operations, it has no Keras layers)."""

    differentiable = True
    has_layers = False
    kind = "a TensorFlow SavedModel"

    def __init__(self, module: SavedModelModule) -> None:
        """Run ``module``."""
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scores on ``x`` ``(N, C, H, W)``."""
        return self.module(x)

    def not_applicable(self, what: str, method: str = "this method") -> MethodNotApplicableError:
        """A layer method on a SavedModel: say what runs instead."""
        return MethodNotApplicableError(
            f"{method} needs {what} of the model: a SavedModel is a TensorFlow graph without "
            "Keras layers, so only gradient methods (saliency, integrated gradients, ...) and "
            "perturbation methods (occlusion, RISE, LIME, ...) run on it; load the model's "
            ".keras file to explain its layers"
        )


def load_saved_model_module(
    path: Path, prepare: Callable[..., torch.Tensor]
) -> tuple[SavedModelModule, SavedModelSignature]:
    """Check the SavedModel folder ``path`` (:func:`check_saved_model`), then load the checked
    graph with TensorFlow, which restores its variables from the folder's ``variables/``.

    ``prepare(x, channels=)`` turns the ``(N, C, H, W)`` batch into the signature's
    ``(N, H, W, channels)`` input. The graph TensorFlow loads is the one checked (written to a
    temporary folder beside links to the variables), so the file cannot change in between.

    Raises:
        UnsafeModelError, InvalidParameterError, ModelOutputError: see
        :func:`check_saved_model`; InvalidParameterError also where TensorFlow cannot load it.
    """
    import shutil
    import tempfile

    tf = tensorflow_module()
    graph, signature = check_saved_model(path)
    with tempfile.TemporaryDirectory(prefix="seethrough-savedmodel-") as tmp:
        copy = Path(tmp)
        (copy / "saved_model.pb").write_bytes(graph)
        variables = path / "variables"
        if variables.is_dir():
            try:
                (copy / "variables").symlink_to(variables.resolve(), target_is_directory=True)
            except OSError:  # no symbolic links here: copy the variables
                shutil.copytree(variables, copy / "variables")
        try:
            loaded = tf.saved_model.load(str(copy))
        except Exception as exc:  # noqa: BLE001 - TensorFlow raises many kinds
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidParameterError(
                f"TensorFlow cannot load SavedModel '{path}': {message}"
            ) from None
    function = loaded.signatures[signature.name]
    module = SavedModelModule(
        SavedModelGraph(function, signature), partial(prepare, channels=signature.channels)
    )
    object.__setattr__(module, "loaded", loaded)  # keeps the variables alive
    return module.eval(), signature

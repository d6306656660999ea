"""An ONNX model on onnxruntime: the forward adapter, the runner and layers by tensor name.

onnxruntime runs the forward of every method that needs no gradient: the perturbation family,
and the layer methods that need only activations (CAM, Score-CAM, Eigen-CAM, feature maps,
deep feature factorization). A layer is a tensor of the graph, named as the graph names it
(a node's output; a node's own name is accepted for its first output). Its activations come
from a second session whose graph lists that tensor as an extra output (one session per set of
tensors, kept). ONNX convolutions compute channels first, so a 4-D tensor inside the graph is
``(N, C, H, W)`` whatever the layout of the model's input.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import ModelProto, NodeProto, TensorProto, numpy_helper
from torch import nn

from ...core.hooks import RunnerRecorder
from ...core.layers import LayerRef
from ...core.runner import ModelRunner
from ...errors import (
    InvalidParameterError,
    MethodNotApplicableError,
    ModelOutputError,
    UnknownLayerError,
    suggest,
)
from .checks import ImageInput

__all__ = ["OnnxGraph", "OnnxLayer", "OnnxLinear", "OnnxModule", "OnnxRunner", "LUMA"]

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights that turn the three channels of the input into the one of a grayscale
model."""

# Operators that only resample or pass a representation on: never a layer to explain.
_PASS_ON = frozenset(
    {
        "AveragePool",
        "Constant",
        "Dropout",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Identity",
        "MaxPool",
        "Resize",
        "Upsample",
    }
)


class OnnxLayer(nn.Module):
    """A tensor of an ONNX graph, as a layer: it holds nothing and computes nothing; the
    runner captures its value (:meth:`OnnxRunner.record`)."""

    def __init__(self, tensor: str, source: str | None, op: str) -> None:
        """``tensor``: its name; ``source``: the first input of the node making it; ``op``:
        that node's operator."""
        super().__init__()
        self.tensor, self.source, self.op = tensor, source, op

    def forward(self, *args: object) -> None:
        """Not callable: the graph runs in onnxruntime."""
        raise MethodNotApplicableError(
            f"'{self.tensor}' is a tensor of an ONNX graph, which runs in onnxruntime"
        )

    def extra_repr(self) -> str:
        return f"{self.tensor!r}, op={self.op}"


class OnnxLinear(nn.Linear):
    """A ``Gemm`` node with constant weights, as the linear layer it is (``y = x W^T + b``):
    CAM and deep feature factorization read a classifier's weights from it."""

    def __init__(self, tensor: str, source: str, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(weight))
            self.bias.copy_(torch.from_numpy(bias))
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.tensor, self.source, self.op = tensor, source, "Gemm"


def _gemm_as_linear(node: NodeProto, constants: Mapping[str, TensorProto]) -> OnnxLinear | None:
    """The :class:`OnnxLinear` of a ``Gemm`` ``y = alpha * x B' + beta * C`` with ``B`` and
    ``C`` constant and ``x`` not transposed, else ``None``."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or len(node.input) < 2 or node.input[1] not in constants:
        return None
    weight = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
    if weight.ndim != 2:
        return None
    weight = (weight if attrs.get("transB", 0) else weight.T) * float(attrs.get("alpha", 1.0))
    bias = np.zeros(weight.shape[0], np.float32)
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in constants:
            return None
        c = numpy_helper.to_array(constants[node.input[2]]).astype(np.float32).reshape(-1)
        if c.size not in (1, weight.shape[0]):
            return None
        bias = np.broadcast_to(c * float(attrs.get("beta", 1.0)), bias.shape).copy()
    return OnnxLinear(node.output[0], node.input[0], np.ascontiguousarray(weight), bias)


class OnnxGraph:
    """A checked ONNX model, its sessions and its layers.

    Sessions are made on the bytes of the model (external data already inside), with
    onnxruntime's CPU provider and as many intra-op threads as torch uses at the time
    (``torch.set_num_threads``); no custom-operator library is ever registered.
    """

    def __init__(self, model: ModelProto, spec: ImageInput, name: str) -> None:
        self.proto = model
        self.spec = spec
        self.name = name
        self.output = model.graph.output[0].name
        self._sessions: dict[tuple[tuple[str, ...], int], ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self._spatial: dict[tuple[int, ...], list[tuple[str, tuple[int, ...]]]] = {}
        inferred = _inferred(model)
        self._types = {v.name: v.type.tensor_type.elem_type for v in inferred}
        self._ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in inferred
            if v.type.tensor_type.HasField("shape")
        }
        constants = {t.name: t for t in model.graph.initializer}
        constants.update(
            {n.output[0]: n.attribute[0].t for n in model.graph.node if _is_constant(n)}
        )
        self.layers: dict[str, nn.Module] = {}
        self.aliases: dict[str, str] = {}
        self.order: list[tuple[str, str]] = []  # (tensor, op) in graph order
        for node in model.graph.node:
            source = node.input[0] if node.input else None
            if node.name and node.output:
                self.aliases.setdefault(node.name, node.output[0])
            head = _gemm_as_linear(node, constants) if node.op_type == "Gemm" else None
            for out in node.output:
                if out:
                    self.layers[out] = head or OnnxLayer(out, source, node.op_type)
                    self.order.append((out, node.op_type))

    def canonical(self, name: str) -> str:
        """The tensor a layer name means: a tensor's name, or a node's for its first output."""
        return name if name in self.layers else self.aliases.get(name, name)

    def session(self, extra: tuple[str, ...] = ()) -> ort.InferenceSession:
        """The session whose outputs are the scores and the tensors ``extra`` (kept per set of
        tensors and thread count)."""
        threads = torch.get_num_threads()
        key = (extra, threads)
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = self._sessions[key] = self._new_session(extra, threads)
            return found

    def _new_session(self, extra: tuple[str, ...], threads: int) -> ort.InferenceSession:
        model = self.proto
        if extra:
            model = ModelProto()
            model.CopyFrom(self.proto)
            present = {o.name for o in model.graph.output}
            for name in extra:
                if name not in present:
                    elem = self._types.get(name, TensorProto.FLOAT)
                    model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            data = model.SerializeToString()
            return ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except ValueError as exc:  # protobuf refuses to serialise beyond 2 GB
            raise InvalidParameterError(f"ONNX model '{self.name}': {exc}") from None
        except Exception as exc:  # onnxruntime raises its own exception types
            text = str(exc).strip().splitlines()
            raise InvalidParameterError(
                f"onnxruntime cannot run the ONNX model '{self.name}': "
                f"{text[0] if text else type(exc).__name__}"
            ) from None

    def to_input(self, x: torch.Tensor) -> np.ndarray:
        """A preprocessed ``(N, C, H, W)`` batch as the graph's input (layout, channels, type)."""
        x = x.detach().to("cpu", torch.float32)
        if self.spec.channels == 1 and x.shape[1] == 3:
            luma = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)
        if self.spec.channels_last:
            x = x.permute(0, 2, 3, 1)
        return np.ascontiguousarray(x.numpy(), dtype=self.spec.dtype)

    def run(
        self, x: torch.Tensor, extra: tuple[str, ...] = ()
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scores on ``x`` and the values of the tensors ``extra``, batch first.

        A graph with a fixed batch size runs in chunks of it (the last one padded)."""
        feed = self.to_input(x)
        session = self.session(extra)
        names = [self.output, *extra]
        size = self.spec.batch or feed.shape[0]
        parts: list[list[np.ndarray]] = []
        for start in range(0, feed.shape[0], max(size, 1)):
            chunk = feed[start : start + size]
            n = chunk.shape[0]
            if n < size:
                pad = np.zeros((size - n, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            try:
                values = session.run(names, {self.spec.name: chunk})
            except Exception as exc:  # onnxruntime's own exception types
                text = str(exc).strip().splitlines()
                raise ModelOutputError(
                    f"the ONNX model '{self.name}' failed on an input of shape "
                    f"{tuple(chunk.shape)}: {text[0] if text else type(exc).__name__}"
                ) from None
            parts.append([np.asarray(v)[:n] for v in values])
        joined = [np.concatenate([p[i] for p in parts]) for i in range(len(names))]
        tensors = [torch.from_numpy(np.ascontiguousarray(v)) for v in joined]
        tensors = [t.float() if t.is_floating_point() else t for t in tensors]
        return tensors[0], dict(zip(extra, tensors[1:], strict=True))

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """The tensors of shape ``(N, C, H, W)`` with ``H * W > 1``, in graph order, each with
        its shape on ``example[:1]``; operators that only pool or pass a representation on
        are left out."""
        key = tuple(example.shape[1:])
        if key not in self._spatial:
            candidates = tuple(
                t
                for t, op in self.order
                if op not in _PASS_ON
                and self._types.get(t, TensorProto.FLOAT) in _FLOAT_TYPES
                and self._ranks.get(t, 4) == 4
            )
            _, values = self.run(example[:1], candidates)
            self._spatial[key] = [
                (t, tuple(values[t].shape))
                for t in candidates
                if values[t].dim() == 4 and values[t].shape[2] * values[t].shape[3] > 1
            ]
        return self._spatial[key]


_FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE})


def _is_constant(node: NodeProto) -> bool:
    return (
        node.op_type == "Constant"
        and node.domain in ("", "ai.onnx")
        and len(node.attribute) == 1
        and node.attribute[0].name == "value"
    )


def _inferred(model: ModelProto) -> list[onnx.ValueInfoProto]:
    """Every value's type as shape inference finds it (nothing where inference fails)."""
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # inference is a hint only: any failure leaves the types unknown
        return []
    return [*graph.value_info, *graph.output, *graph.input]


class OnnxModule(nn.Module):
    """The ONNX model as a PyTorch module: a preprocessed ``(N, C, H, W)`` batch to class
    scores through onnxruntime (channels moved last for a channels-last model). Forward only:
    it has no parameters and its output no gradient."""

    def __init__(self, graph: OnnxGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class scores on ``x``."""
        return self.graph.run(x)[0].to(x.device)

    def extra_repr(self) -> str:
        return repr(self.graph.name)


class OnnxRecorder(RunnerRecorder):
    """The outputs (and inputs) of tensors of the graph during the forwards of a block: the
    :class:`~seethrough.core.hooks.Recorder` of an :class:`OnnxRunner`."""

    runner: OnnxRunner

    def __init__(
        self, runner: OnnxRunner, modules: Mapping[str, nn.Module], *, inputs: bool
    ) -> None:
        super().__init__(runner, modules, inputs=inputs)
        for name, module in self.modules.items():
            if getattr(module, "tensor", None) not in runner.graph.layers:
                raise MethodNotApplicableError(
                    f"layer '{name}' is not a tensor of the ONNX graph '{runner.graph.name}'"
                )

    def tensors(self) -> set[str]:
        """The graph tensors the forward must return."""
        names = {m.tensor for m in self.modules.values()}  # type: ignore[misc]
        if self.record_inputs:
            names |= {m.source for m in self.modules.values() if m.source}  # type: ignore[misc]
        return names

    def take(self, values: Mapping[str, torch.Tensor]) -> None:
        """Keep the values of this recorder's tensors from one forward."""
        for name, module in self.modules.items():
            self.outputs[name] = values[module.tensor]  # type: ignore[index]
            source = getattr(module, "source", None)
            if self.record_inputs and source in values:
                self.inputs[name] = values[source]


class OnnxRunner(ModelRunner):
    """An ONNX model run by onnxruntime: forward only (no gradients), with layers named by the
    graph's tensors (see the module docstring)."""

    has_layers = True
    kind = "an ONNX model on onnxruntime"

    def __init__(self, graph: OnnxGraph, module: OnnxModule) -> None:
        self.graph = graph
        self.module = module
        self.recorders: list[OnnxRecorder] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The scores on ``x``; inside :meth:`record`, the recorded tensors too."""
        extra = tuple(sorted(set().union(*(r.tensors() for r in self.recorders))))
        scores, values = self.graph.run(x, extra)
        for recorder in self.recorders:
            recorder.take(values)
        return scores

    @property
    def named_modules(self) -> dict[str, nn.Module]:
        """Every tensor of the graph by name, as a layer."""
        return self.graph.layers

    def layer(self, name: str) -> nn.Module:
        """The tensor called ``name`` (or made by the node called so)."""
        return self.resolve_layer(name)[1]

    def resolve_layer(
        self, layer: LayerRef, example: torch.Tensor | None = None, default: str | None = None
    ) -> tuple[str, nn.Module]:
        """``(tensor name, layer)`` for a tensor or node name, a layer, or ``None`` for
        ``default``, else the last spatial tensor (see :meth:`spatial_layers`)."""
        if layer is None:
            layer = default
        if layer is None:
            if example is None:
                raise UnknownLayerError("no layer given and no example input to find one")
            found = self.spatial_layers(example)
            if not found:
                raise UnknownLayerError(
                    f"the ONNX model '{self.graph.name}' has no tensor with a spatial "
                    "(N, C, H, W) output; give layer= explicitly"
                )
            layer = found[-1][0]
        if isinstance(layer, nn.Module):
            for name, module in self.graph.layers.items():
                if module is layer:
                    return name, module
            raise UnknownLayerError("the given layer is not a tensor of this ONNX model")
        if not isinstance(layer, str):
            raise UnknownLayerError(f"layer must be a name or a module, not {type(layer).__name__}")
        name = self.graph.canonical(layer)
        if name in self.graph.layers:
            return name, self.graph.layers[name]
        candidates = [*self.graph.layers, *self.graph.aliases]
        hint = suggest(layer, candidates)
        if not hint and example is not None:
            tail = [t for t, _ in self.spatial_layers(example)][-6:]
            hint = f" Some spatial tensors of this model: {', '.join(tail)}."
        raise UnknownLayerError(
            f"no tensor or node named '{layer}' in the ONNX model '{self.graph.name}'.{hint} "
            "`seethrough layers MODEL` lists them."
        )

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """See :meth:`OnnxGraph.spatial_layers`."""
        return self.graph.spatial_layers(example)

    def record(self, modules: Mapping[str, nn.Module], *, inputs: bool = False) -> OnnxRecorder:  # type: ignore[override]
        """A block that captures the values of the tensors ``modules`` (and of their nodes'
        first inputs) during its forwards."""
        return OnnxRecorder(self, modules, inputs=inputs)

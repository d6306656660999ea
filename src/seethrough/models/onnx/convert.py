"""An ONNX model converted to PyTorch, for the methods that need gradients.

onnx2torch builds a ``torch.fx`` module from the graph, one submodule per node. As released
(1.5.15) it stops on what current exporters write (``torch.onnx.export`` writes opset 20):
reductions whose axes are an input (opset 18), ``Reshape`` and ``Identity`` at their opset 19
and 21 numbers, the ``allowzero`` attribute, weights that reach a convolution through an
``Identity`` or a ``Constant`` node rather than as initializers. Two things close the gap:

- :func:`prepare`, a pass over a copy of the graph: ``Constant`` nodes and ``Identity`` nodes
  of a constant become initializers (the node's output name kept), and ``allowzero=1`` is
  dropped from a ``Reshape`` whose constant shape has no zero (where it changes nothing);
- :func:`register_converters`: converters for the reductions of opset 18 (axes read from a
  constant input), and, for the operators whose opset 19 to 21 versions only added tensor
  types (``Reshape``, ``Identity``, ``Cast``, ``Shape``, ...), onnx2torch's own converter of
  the previous version.

:func:`convert` then checks the module against onnxruntime on a random input; an operator it
cannot convert is a :class:`~seethrough.errors.MethodNotApplicableError` naming it. Layers of
the converted model are named by the ONNX tensor their node computes (:class:`ConvertedRunner`),
as on onnxruntime.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import onnx
import torch
from onnx import ModelProto, TensorProto, numpy_helper
from torch import nn

from ...core.layers import LayerRef, named_modules, spatial_layers
from ...core.runner import TorchRunner
from ...errors import MethodNotApplicableError
from .runtime import LUMA, OnnxGraph

__all__ = ["prepare", "register_converters", "convert", "ConvertedRunner", "TorchConversion"]

TOLERANCE = 1e-3
"""Largest difference, relative to the scores' magnitude, between the converted model's
output and onnxruntime's that :func:`convert` accepts."""


# ------------------------------------------------------------------------------- the pass


def prepare(model: ModelProto) -> ModelProto:
    """A copy of ``model`` rewritten into what onnx2torch converts (see the module docstring)."""
    out = ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    outputs = {o.name for o in graph.output}
    constants = {t.name for t in graph.initializer}
    changed = True
    while changed:  # an Identity of an Identity of a constant folds in two rounds
        changed = False
        for node in list(graph.node):
            value: TensorProto | None = None
            if (
                node.op_type == "Constant"
                and node.domain in ("", "ai.onnx")
                and len(node.attribute) == 1
                and node.attribute[0].name == "value"
            ):
                value = node.attribute[0].t
            elif node.op_type == "Identity" and node.input and node.input[0] in constants:
                value = next(t for t in graph.initializer if t.name == node.input[0])
            if value is None or node.output[0] in outputs:
                continue
            tensor = TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            constants.add(tensor.name)
            graph.node.remove(node)
            changed = True
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        shape = numpy_helper.to_array(next(t for t in graph.initializer if t.name == node.input[1]))
        for attr in list(node.attribute):
            if attr.name == "allowzero" and attr.i == 1 and not np.any(shape == 0):
                node.attribute.remove(attr)
    return out


# ------------------------------------------------------------------------- the converters


class ReduceAxes(nn.Module):
    """An ONNX reduction over constant axes (opset 18: the axes are the second input)."""

    def __init__(self, op: str, axes: tuple[int, ...] | None, keepdims: bool) -> None:
        super().__init__()
        self.op, self.axes, self.keepdims = op, axes, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reduction of ``x``; no axes: all of them."""
        dims = self.axes if self.axes is not None else tuple(range(x.dim()))
        keep = self.keepdims
        if self.op == "ReduceMean":
            return x.mean(dims, keepdim=keep)
        if self.op == "ReduceMax":
            return x.amax(dims, keepdim=keep)
        if self.op == "ReduceMin":
            return x.amin(dims, keepdim=keep)
        if self.op == "ReduceSumSquare":
            return (x * x).sum(dims, keepdim=keep)
        if self.op == "ReduceL1":
            return x.abs().sum(dims, keepdim=keep)
        if self.op == "ReduceL2":
            return (x * x).sum(dims, keepdim=keep).sqrt()
        if self.op == "ReduceLogSum":
            return x.sum(dims, keepdim=keep).log()
        if self.op == "ReduceLogSumExp":
            return x.logsumexp(dims, keepdim=keep)
        for d in sorted((d % x.dim() for d in dims), reverse=True):  # ReduceProd
            x = x.prod(d, keepdim=keep)
        return x

    def extra_repr(self) -> str:
        return f"{self.op}, axes={self.axes}, keepdims={self.keepdims}"


_REDUCTIONS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)

# Operators whose versions up to opset 21 only added tensor types (float8, int4, ...): the
# converter of the version before serves them.
_TYPES_ONLY = {
    "Cast": (19, 21),
    "Constant": (19, 21),
    "ConstantOfShape": (20, 21),
    "Equal": (19,),
    "Flatten": (21,),
    "Identity": (19, 21),
    "Reshape": (19, 21),
    "Shape": (19, 21),
    "Size": (19, 21),
    "Squeeze": (21,),
    "Transpose": (21,),
    "Unsqueeze": (21,),
}

_registered = False
_register_lock = threading.Lock()


def _reduce_converter(node, graph):  # noqa: ANN001, ANN202 - onnx2torch's converter signature
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    attrs = node.attributes
    inputs = node.input_values
    axes: tuple[int, ...] | None = None
    if len(inputs) > 1 and inputs[1]:
        if inputs[1] not in graph.initializers:
            raise NotImplementedError(f"{node.operation_type} with axes computed in the graph")
        axes = tuple(int(a) for a in graph.initializers[inputs[1]].to_torch().reshape(-1))
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            raise NotImplementedError(f"{node.operation_type} with noop_with_empty_axes=1")
        axes = None
    module = ReduceAxes(node.operation_type, axes, bool(attrs.get("keepdims", 1)))
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values),
    )


def register_converters() -> None:
    """Add the converters onnx2torch 1.5.15 lacks (see the module docstring) to its registry,
    once; a version it already converts keeps its own converter."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from onnx2torch.node_converters.registry import (
            _CONVERTER_REGISTRY,
            OperationDescription,
            add_converter,
            get_converter,
        )

        def missing(op: str, version: int) -> bool:
            return OperationDescription("", op, version) not in _CONVERTER_REGISTRY

        for op in _REDUCTIONS:
            for version in (18, 20):
                if onnx.defs.get_schema(op, version).since_version == version and missing(
                    op, version
                ):
                    add_converter(operation_type=op, version=version)(_reduce_converter)
        for op, versions in _TYPES_ONLY.items():
            for version in versions:
                if not missing(op, version):
                    continue
                try:
                    previous = get_converter(op, version - 1)
                except NotImplementedError:  # onnx2torch has none for any version of it
                    continue
                add_converter(operation_type=op, version=version)(previous)
        _registered = True


# -------------------------------------------------------------------------- conversion


class TorchFromOnnx(nn.Module):
    """The converted graph behind the adapter of the ONNX model's input: a preprocessed
    ``(N, C, H, W)`` batch made grayscale and channels-last where the graph wants it, in torch
    operations (gradients flow to the input)."""

    def __init__(self, graph_module: nn.Module, channels: int, channels_last: bool) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.channels, self.channels_last = channels, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class scores on ``x``."""
        if self.channels == 1 and x.shape[1] == 3:
            luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        return self.graph_module(x)


_DESCRIPTION = re.compile(r"operation_type='([^']+)', version=(\d+)")


def _failing_operator(model: ModelProto) -> str | None:
    """``'Op' (opset N)``: the first node onnx2torch cannot convert, with why, or ``None``."""
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph as Onnx2TorchGraph

    graph = Onnx2TorchGraph(model.graph)
    opsets = {o.domain: o.version for o in model.opset_import}
    for node in graph.nodes.values():
        version = opsets.get(node.domain, opsets.get("", 0))
        try:
            get_converter(node.operation_type, version, node.domain)(node, graph)
        except Exception as exc:  # any converter failure names this node's operator
            found = _DESCRIPTION.search(str(exc))
            why = "no converter" if found else str(exc).strip().splitlines()[0]
            return f"'{node.operation_type}' (opset {version}, node '{node.name}': {why})"
    return None


def convert(graph: OnnxGraph) -> TorchFromOnnx:
    """The model of ``graph`` as a PyTorch module, in eval mode, checked against onnxruntime.

    Raises:
        MethodNotApplicableError: an operator onnx2torch cannot convert (named), or a module
            whose output differs from onnxruntime's.
    """
    from onnx2torch import convert as onnx2torch_convert

    register_converters()
    prepared = prepare(graph.proto)
    lead = (
        f"the ONNX model '{graph.name}' cannot be converted to PyTorch, which gradient methods need"
    )
    tail = "methods that need no gradient (occlusion, RISE, LIME, CAM, Score-CAM, ...) still run"
    try:
        converted = onnx2torch_convert(prepared, attach_onnx_mapping=True)
    except Exception as exc:  # onnx2torch raises plain exceptions of many types
        op = _failing_operator(prepared)
        if op is not None:
            raise MethodNotApplicableError(f"{lead}: operator {op}; {tail}") from None
        first = str(exc).strip().splitlines()
        raise MethodNotApplicableError(
            f"{lead}: {first[0] if first else type(exc).__name__}; {tail}"
        ) from None
    module = TorchFromOnnx(converted, graph.spec.channels, graph.spec.channels_last).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    height, width = graph.spec.size
    probe = torch.randn(
        graph.spec.batch or 2, 3, height, width, generator=torch.Generator().manual_seed(0)
    )
    expected = graph.run(probe)[0]
    try:
        with torch.no_grad():
            got = module(probe).float()
    except Exception as exc:  # a converted operator that fails at run time
        first = str(exc).strip().splitlines()
        raise MethodNotApplicableError(
            f"{lead}: the converted module fails: {first[0] if first else type(exc).__name__}; "
            f"{tail}"
        ) from None
    scale = max(float(expected.abs().max()), 1.0)
    gap = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not gap <= TOLERANCE * scale:
        raise MethodNotApplicableError(
            f"{lead}: the converted module's scores differ from onnxruntime's by {gap:.3g}; {tail}"
        )
    return module


class TorchConversion:
    """The conversion of one ONNX model, made on first use and kept (its failure too)."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self._module: TorchFromOnnx | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def module(self) -> TorchFromOnnx:
        """The converted module (see :func:`convert`)."""
        with self._lock:
            if self._error is not None:
                raise MethodNotApplicableError(self._error)
            if self._module is None:
                try:
                    self._module = convert(self.graph)
                except MethodNotApplicableError as exc:
                    self._error = str(exc)
                    raise
            return self._module

    def runner(self) -> ConvertedRunner:
        """A runner on the converted module, for one call."""
        return ConvertedRunner(self.module(), self.graph)


class ConvertedRunner(TorchRunner):
    """A :class:`~seethrough.core.runner.TorchRunner` on an ONNX model converted to PyTorch,
    whose layers are named by the ONNX tensors their nodes compute (a node's name is accepted
    for its first output); the default layer is the one onnxruntime's runner picks."""

    kind = "an ONNX model converted to PyTorch"

    def __init__(self, module: TorchFromOnnx, graph: OnnxGraph) -> None:
        super().__init__(module)
        self.graph = graph
        named: dict[str, nn.Module] = {"": module}
        self._renamed: dict[str, str] = {}
        for name, sub in named_modules(module).items():
            if not name:
                continue
            mapping = getattr(sub, "onnx_mapping", None)
            key = mapping.outputs[0] if mapping is not None and mapping.outputs else name
            key = name if key in named else key
            named[key] = sub
            self._renamed[name] = key
        self._named = named

    def resolve_layer(
        self, layer: LayerRef, example: torch.Tensor | None = None, default: str | None = None
    ) -> tuple[str, nn.Module]:
        """``(tensor name, module)`` for a tensor or node name, a module, or ``None`` (the
        default: ``default``, else onnxruntime's last spatial tensor)."""
        if layer is None and default is None and example is not None:
            found = self.graph.spatial_layers(example)
            default = found[-1][0] if found else None
        if isinstance(layer, str):
            layer = self.graph.canonical(layer)
        if default is not None:
            default = self.graph.canonical(default)
        return super().resolve_layer(layer, example, default)

    def spatial_layers(self, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
        """The spatial layers of the converted module, by ONNX tensor name."""
        return [(self._renamed.get(n, n), s) for n, s in spatial_layers(self.module, example)]

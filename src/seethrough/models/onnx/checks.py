"""Read an ONNX file and check it before anything of it runs.

An ONNX file holds a graph of operators and its weights, no code; what could reach outside is
(1) *external data*: a weight stored in another file, named by a ``location`` the file chooses,
and (2) operators of a *custom domain*, which onnxruntime runs only from a shared library
registered with the session. :func:`read_model` therefore

1. reads the file once into memory and parses it: a truncated or corrupt file is an
   :class:`~seethrough.errors.InvalidParameterError`;
2. requires every external-data ``location`` to be a relative path that stays inside the
   model's folder, symbolic links resolved (no ``..``, no absolute path, no link out), else
   :class:`~seethrough.errors.UnsafeModelError`; only then reads that data into the model, so
   the runtime is handed bytes and never opens a file;
3. refuses any operator outside the standard domains (``ai.onnx``, ``ai.onnx.ml`` and
   onnxruntime's built-in ``com.microsoft``) or a function the file defines itself
   (:class:`~seethrough.errors.UnsafeModelError` naming the operator): seethrough never
   registers a custom-operator library;
4. runs ONNX's checker on the result.

:func:`image_input` then says what the model's input is: one 4-D float image batch, channels
first or last, with 1 or 3 channels, else an :class:`~seethrough.errors.InvalidParameterError`
saying what the input is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from google.protobuf.message import DecodeError
from onnx import GraphProto, ModelProto, TensorProto

from ...errors import InvalidParameterError, UnsafeModelError

__all__ = ["STANDARD_DOMAINS", "ImageInput", "read_model", "image_input", "DEFAULT_SIZE"]

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
"""Operator domains onnxruntime implements itself (``com.microsoft``: its built-in contrib
operators); any other needs a custom library, which is never loaded."""

DEFAULT_SIZE = 224
"""The input size taken when the graph leaves height or width dynamic."""

_FLOATS = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.DOUBLE: "float64",
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_model(path: Path) -> ModelProto:
    """The model in ``path``, checked (see the module docstring), external data loaded.

    Raises:
        InvalidParameterError: a file that is not a complete ONNX model, missing external data.
        UnsafeModelError: external data outside the model's folder, a custom-domain operator.
    """
    data = path.read_bytes()
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidParameterError(
            f"'{path}' is not a readable ONNX model (truncated or corrupt): {_first_line(exc)}"
        ) from None
    if not model.HasField("graph") or not model.graph.node or not model.graph.output:
        raise InvalidParameterError(
            f"'{path}' is not a complete ONNX model (truncated or corrupt): it has no graph"
        )
    folder = path.resolve().parent
    external = [t for t in _tensors(model) if t.data_location == TensorProto.EXTERNAL]
    for tensor in external:
        _check_location(path, folder, tensor)
    _check_domains(path, model)
    if external:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(folder))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise InvalidParameterError(
                f"the external data of '{path}' cannot be read: {_first_line(exc)}"
            ) from None
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise InvalidParameterError(
            f"'{path}' is not a valid ONNX model (truncated or corrupt?): {_first_line(exc)}"
        ) from None
    return model


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """``graph`` and every subgraph of its nodes (``If`` branches, ``Loop`` bodies), deep."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor the model stores: initializers and constant attributes, subgraphs too."""
    nodes = [n for f in model.functions for n in f.node]
    for graph in _graphs(model.graph):
        yield from graph.initializer
        yield from (s.values for s in graph.sparse_initializer)
        nodes.extend(graph.node)
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors


def _check_location(path: Path, folder: Path, tensor: TensorProto) -> None:
    """Refuse external data that is not a file inside ``folder``."""
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    unsafe = (
        not location
        or PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or PureWindowsPath(location).drive
        or ".." in PurePosixPath(location.replace("\\", "/")).parts
    )
    target = (folder / location).resolve() if not unsafe else None
    if target is None or not target.is_relative_to(folder):
        raise UnsafeModelError(
            f"'{path}' stores tensor '{tensor.name}' in '{location}', outside the model's "
            "folder: external data must be a file beside the model (no '..', no absolute path, "
            "no link out)"
        )
    if not target.is_file():
        raise InvalidParameterError(
            f"the external data '{location}' of '{path}' (tensor '{tensor.name}') is missing"
        )


def _check_domains(path: Path, model: ModelProto) -> None:
    """Refuse operators of a domain onnxruntime does not implement itself."""
    local = {(f.domain, f.name) for f in model.functions}
    nodes = [n for g in _graphs(model.graph) for n in g.node]
    nodes += [n for f in model.functions for n in f.node]
    for node in nodes:
        if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in local:
            raise UnsafeModelError(
                f"'{path}' uses the operator '{node.op_type}' of the custom domain "
                f"'{node.domain}': it would need a custom-operator library, which seethrough "
                "never loads"
            )


@dataclass(frozen=True)
class ImageInput:
    """The model's image input.

    Attributes:
        name: the graph input's name.
        channels_last: ``(N, H, W, C)`` rather than ``(N, C, H, W)``.
        channels: 1 or 3.
        size: ``(height, width)`` from the graph, :data:`DEFAULT_SIZE` where dynamic.
        batch: the fixed batch size of the graph, or ``None`` when dynamic.
        dtype: the numpy name of its float type.
    """

    name: str
    channels_last: bool
    channels: int
    size: tuple[int, int]
    batch: int | None
    dtype: str


def _dims(value: onnx.ValueInfoProto) -> list[int | str] | None:
    """The shape as ints (static) and names (dynamic), ``None`` without a shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]


def describe_value(value: onnx.ValueInfoProto) -> str:
    """``float32 (N, 10)``: the type and shape of a graph input or output."""
    if not value.type.HasField("tensor_type"):
        return f"a {value.type.WhichOneof('value') or 'value'} that is not a tensor"
    elem = value.type.tensor_type.elem_type
    kind = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "untyped"
    dims = _dims(value)
    shape = "unknown shape" if dims is None else "(" + ", ".join(map(str, dims)) + ")"
    return f"{kind} {shape}"


def image_input(path: Path, model: ModelProto) -> ImageInput:
    """The one image input of ``model`` (see :class:`ImageInput`).

    Raises:
        InvalidParameterError: not exactly one input, or an input that is not a 4-D float batch
            with 1 or 3 channels first or last; the message says what the input is.
    """
    constants = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in constants]
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs) or "none"
        raise InvalidParameterError(
            f"'{path}' has {len(inputs)} inputs ({names}): seethrough explains models with one "
            "image input"
        )
    value = inputs[0]
    need = (
        "seethrough needs a 4-D float image batch (N, C, H, W) or (N, H, W, C) with 1 or 3 channels"
    )
    dims = _dims(value) if value.type.HasField("tensor_type") else None
    elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
    what = f"the input '{value.name}' of '{path}' is {describe_value(value)}: {need}"
    if dims is None or len(dims) != 4 or elem not in _FLOATS:
        raise InvalidParameterError(what)
    if dims[1] in (1, 3):
        channels_last, channels, height, width = False, dims[1], dims[2], dims[3]
    elif dims[3] in (1, 3):
        channels_last, channels, height, width = True, dims[3], dims[1], dims[2]
    else:
        raise InvalidParameterError(what)
    size = (
        (height, width)
        if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0
        else (DEFAULT_SIZE, DEFAULT_SIZE)
    )
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    return ImageInput(value.name, channels_last, int(channels), size, batch, _FLOATS[elem])


def safe_name(path: Path) -> str:
    """The file's stem, for the model's name."""
    return os.path.splitext(path.name)[0]

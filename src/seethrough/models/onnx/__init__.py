"""ONNX models: load a ``.onnx`` file as a :class:`~seethrough.models.VisionModel`, export one.

:func:`load_onnx` checks the file before anything of it runs (:mod:`.checks`: a truncated
file, external data outside the model's folder, custom-domain operators, an input that is not
an image), then gives a model whose methods run two ways:

- on onnxruntime (:class:`~.runtime.OnnxRunner`): every method that needs no gradient, the
  perturbation family and the layer methods that need only activations (CAM, Score-CAM,
  Eigen-CAM, feature maps, deep feature factorization); layers are the graph's tensors;
- through a conversion to PyTorch (:mod:`.convert`): the methods that need gradients or swap
  modules (saliency, Grad-CAM, Integrated Gradients, guided backpropagation, ...), with the
  same layer names. When the graph cannot be converted, those methods raise
  :class:`~seethrough.errors.MethodNotApplicableError` naming the operator; the others run.

:func:`export_onnx` writes a PyTorch model as an ONNX file that :func:`load_onnx` reads back
with its preprocessing, labels and name.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import torch

from ..._io import write_atomically
from ...errors import InvalidParameterError, ModelOutputError
from ..labels import labels_for
from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ..vision_model import VisionModel
from .checks import image_input, read_model
from .convert import ConvertedRunner, TorchConversion
from .runtime import OnnxGraph, OnnxModule, OnnxRunner

__all__ = [
    "load_onnx",
    "export_onnx",
    "OnnxModule",
    "OnnxRunner",
    "ConvertedRunner",
    "METADATA_PREFIX",
]

METADATA_PREFIX = "seethrough."
"""The prefix of the metadata keys :func:`export_onnx` writes: ``name``, ``preprocessing``
(:meth:`~seethrough.models.preprocessing.Preprocessing.to_dict` as JSON) and ``labels`` (a JSON
list)."""

_GRAY_MEAN = sum(IMAGENET_MEAN) / 3
_GRAY_STD = sum(IMAGENET_STD) / 3


def load_onnx(path: str | Path) -> VisionModel:
    """The ONNX classifier in ``path`` as a :class:`~seethrough.models.VisionModel`.

    Preprocessing: the graph's input size (224 where dynamic), ImageNet's mean and std (their
    channel average for a one-channel model), unless the file carries the preprocessing
    :func:`export_onnx` wrote; ``load_model``'s ``size``, ``mean`` and ``std`` override it.
    Labels: the file's, else ImageNet's for 1000 classes, else ``class N``.

    Raises:
        InvalidParameterError: a truncated or corrupt file, missing external data, an input
            that is not one image batch, unreadable seethrough metadata.
        UnsafeModelError: external data outside the model's folder, a custom-domain operator.
        ModelOutputError: an output that is not ``(N, classes)`` scores.
    """
    path = Path(path)
    model = read_model(path)
    spec = image_input(path, model)
    meta = {
        p.key[len(METADATA_PREFIX) :]: p.value
        for p in model.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }
    name = meta.get("name") or path.stem
    graph = OnnxGraph(model, spec, name)
    height, width = spec.size
    scores = graph.run(torch.zeros(spec.batch or 1, 3, height, width))[0]
    if scores.dim() != 2 or scores.shape[0] != (spec.batch or 1):
        raise ModelOutputError(
            f"the ONNX model '{path}' outputs shape {tuple(scores.shape)} on a batch of "
            f"{spec.batch or 1}: seethrough explains classifiers with (N, classes) scores"
        )
    classes = int(scores.shape[1])
    preprocessing, labels = _metadata(path, meta, classes)
    if preprocessing is None:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD)
        if spec.channels == 1:
            mean, std = (_GRAY_MEAN,) * 3, (_GRAY_STD,) * 3
        preprocessing = Preprocessing(size=spec.size, mean=mean, std=std)
    module = OnnxModule(graph)
    conversion = TorchConversion(graph)
    return VisionModel(
        module,
        preprocessing,
        labels or labels_for(classes),
        name=name,
        source="file",
        weights=str(path),
        framework="onnx",
        runner=lambda: OnnxRunner(graph, module),
        gradient_runner=conversion.runner,
    )


def _metadata(
    path: Path, meta: dict[str, str], classes: int
) -> tuple[Preprocessing | None, list[str] | None]:
    """The preprocessing and labels :func:`export_onnx` stored in the file, where present."""
    try:
        pre = meta.get("preprocessing")
        preprocessing = None if pre is None else Preprocessing.from_dict(json.loads(pre))
        labels = None if "labels" not in meta else json.loads(meta["labels"])
    except (ValueError, TypeError) as exc:
        raise InvalidParameterError(
            f"the seethrough metadata of '{path}' cannot be read: {exc}"
        ) from None
    if labels is not None and (
        not isinstance(labels, list)
        or len(labels) != classes
        or not all(isinstance(x, str) for x in labels)
    ):
        raise InvalidParameterError(
            f"the labels stored in '{path}' are not {classes} names, one per output"
        )
    return preprocessing, labels


def export_onnx(model: VisionModel, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the PyTorch ``model`` as the ONNX file ``path``; return the path.

    The graph takes a batch of any size (``torch.onnx.export``'s exporter, weights inside the
    file, no external data); the model's name, preprocessing and labels go into the file's
    metadata, so :func:`load_onnx` restores them. The exporter's stack traces (file names of
    the machine that exported) are left out. Written atomically.

    Raises:
        InvalidParameterError: a model that is not a PyTorch module, an existing ``path``
            without ``overwrite``, a model the exporter cannot trace.
    """
    path = Path(path)
    module = model.module
    if model.framework != "pytorch" or isinstance(module, torch.jit.ScriptModule):
        raise InvalidParameterError(
            f"only a PyTorch model can be exported to ONNX; '{model.name}' is a "
            f"{'TorchScript' if isinstance(module, torch.jit.ScriptModule) else model.framework} "
            "model"
        )
    if path.exists() and not overwrite:
        raise InvalidParameterError(f"'{path}' exists: pass overwrite=True (--force) to replace it")
    if not path.parent.is_dir():
        raise InvalidParameterError(f"the folder of '{path}' does not exist")
    height, width = model.preprocessing.output_size
    example = torch.zeros(1, len(model.preprocessing.mean), height, width, device=model.device)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module.eval(),
                (example,),
                None,
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                input_names=["image"],
                output_names=["scores"],
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types
        first = str(exc).strip().splitlines()
        raise InvalidParameterError(
            f"'{model.name}' cannot be exported to ONNX: {first[0] if first else type(exc).__name__}"
        ) from None
    proto = program.model_proto
    for node in proto.graph.node:
        for prop in list(node.metadata_props):
            if prop.key.endswith("stack_trace"):
                node.metadata_props.remove(prop)
    stored = {
        "name": model.name,
        "preprocessing": json.dumps(model.preprocessing.to_dict()),
        "labels": json.dumps(model.labels),
    }
    for key, value in stored.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    data = proto.SerializeToString()
    return write_atomically(path, lambda p: p.write_bytes(data))

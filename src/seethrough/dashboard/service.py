"""What the dashboard does, without the page: models, images, forms, runs, caches, downloads.

Everything here is plain Python on the public library API, so it is tested without a browser and
imports no streamlit. The page (:mod:`seethrough.dashboard.app`) only lays these out as widgets.

- :class:`ModelSpec` names a model the way the model panel does (registry name, ``keras:NAME``
  or the user's own file, weights, preprocessing overrides, device); :class:`ModelPool` loads
  each spec once and
  hands out a :class:`ModelSlot` whose lock serialises every use of that module, so that two
  sessions never attach hooks to the same model at the same time.
- :data:`FRAMEWORKS` are the panel's first question; :func:`missing_extra` says which pip
  command a framework still needs, :data:`MODEL_FILE_TYPES` which files it takes, and
  :func:`store_upload` checks and keeps an uploaded model file.
- :func:`predict` gives the top-k with its chart (a detector's boxes drawn, a segmenter's class
  mask), kept for the page's reruns; :func:`box_rows`, :func:`box_choices` and
  :func:`mask_choices` are the box table and the box or class pickers.
- :func:`read_upload` checks an uploaded image (extension, bytes, pixels) and decodes it;
  :func:`decoded_upload` keeps the latest few decoded, so page reruns do not decode again.
- :func:`param_fields` turns a method's registry parameters into form fields;
  :func:`clean_params` checks what the user typed (numbers and keywords only: no paths, no code).
- :class:`ResultCache` keeps explanations per (image hash, model, method, target, layer,
  parameters); :func:`run_method` goes through it.
- :func:`render` draws what the page shows for a result (:func:`result_views`) and its
  downloads (:func:`downloads`: PNG, ``.npz``, JSON manifest) once, for every rerun of the page.
- The "Training run" view: :func:`runs_root` is the folder ``seethrough dashboard --runs DIR``
  was started with, :func:`list_runs` the run folders under it, :func:`open_run` reads one by
  its name (never a path outside the folder), :func:`load_epoch` an epoch's map overlays per
  probe, :func:`metric_panels` the metrics vs epoch and :func:`settled_text` the stopping hint.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from .._io import is_temporary, write_atomically
from ..api import explain
from ..errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    MissingDependencyError,
    SeethroughError,
    UnsafeModelError,
)
from ..explanation import Explanation
from ..images import load_image
from ..models import Prediction, VisionModel, load_model
from ..models.torchscript import is_torchscript
from ..models.zoo import require_extra
from ..registry import MethodInfo, Param, families, get_method, list_methods
from ..training.report import epoch_pictures, metric_panels, picture
from ..training.run import DEFAULT_SETTLE, INFO_FILE, Run, maps_path, read_run
from . import RUNS_ENV, TORCHSCRIPT_ENV

__all__ = [
    "FRAMEWORKS",
    "MODEL_FILE_TYPES",
    "missing_extra",
    "keras_applications",
    "UPLOAD_TYPES",
    "WEIGHTS_TYPES",
    "TORCHSCRIPT_ENV",
    "torchscript_allowed",
    "UploadFolder",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "ModelSpec",
    "ModelSlot",
    "ModelPool",
    "ResultCache",
    "Field",
    "param_fields",
    "clean_params",
    "methods_by_family",
    "read_upload",
    "decoded_upload",
    "image_digest",
    "store_upload",
    "run_method",
    "RunProgress",
    "Predicted",
    "predict",
    "box_rows",
    "box_choices",
    "mask_choices",
    "detector_names",
    "LayerDefault",
    "layer_default",
    "concept_rows",
    "ink_on",
    "Rendered",
    "result_views",
    "render",
    "extra_views",
    "downloads",
    "MODELS",
    "RESULTS",
    "RUNS_ENV",
    "MAX_RUN_DEPTH",
    "runs_root",
    "list_runs",
    "open_run",
    "ProbeView",
    "EpochView",
    "load_epoch",
    "metric_panels",
    "method_title",
    "settled_text",
]

FRAMEWORKS: tuple[str, ...] = ("PyTorch", "Keras", "ONNX")
"""Frameworks the model panel offers, its first question."""

UPLOAD_TYPES: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
WEIGHTS_TYPES: tuple[str, ...] = ("safetensors", "pt", "pth", "bin")
"""State-dict files the model panel takes (tensors only: nothing in them runs); with
:func:`torchscript_allowed`, ``.ts`` too."""
MODEL_FILE_TYPES: dict[str, tuple[str, ...]] = {
    "PyTorch": WEIGHTS_TYPES,
    "Keras": ("keras", "h5", "hdf5"),
    "ONNX": ("onnx",),
}
"""The files the model panel takes per framework: a PyTorch state dict; a Keras model file
(its configuration checked for code before Keras reads it, then loaded in safe mode); one
self-contained ONNX file (checked before onnxruntime runs it). Never a SavedModel, which can
carry arbitrary TensorFlow operations, nor a TorchScript program (unless
:func:`torchscript_allowed`)."""
_EXTRAS: dict[str, tuple[str, str]] = {
    "Keras": ("keras", "a Keras model"),
    "ONNX": ("onnx", "an ONNX model"),
}


def _framework(name: str) -> str:
    """``name`` if it is one of :data:`FRAMEWORKS`."""
    if name not in FRAMEWORKS:
        raise InvalidParameterError(
            f"unknown framework '{name}': use one of {', '.join(FRAMEWORKS)}"
        )
    return name


def missing_extra(framework: str) -> str | None:
    """``None`` when the models of ``framework`` can be loaded here, else one line naming the
    pip command that installs what they need. Only looks for the packages: imports nothing."""
    if _framework(framework) not in _EXTRAS:
        return None
    try:
        require_extra(*_EXTRAS[framework])
    except MissingDependencyError as exc:
        return str(exc)
    return None


def keras_applications() -> list[str]:
    """The ``keras.applications`` architectures :func:`seethrough.load_model` loads as
    ``keras:NAME`` (imports Keras, on its torch backend).

    Raises:
        MissingDependencyError: Keras is not installed.
        InvalidParameterError: this process runs Keras on another backend.
    """
    from ..models.keras import application_names

    return application_names()


MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest uploaded image file (bytes)."""
MAX_UPLOAD_PIXELS = 40_000_000
"""Largest uploaded image (width x height), checked from the header before decoding."""


@dataclass(frozen=True)
class ModelSpec:
    """A model as the model panel describes it; hashable, so it is the cache key.

    Attributes:
        name: a registry name (``list_models()``), or the path of a TorchScript file or of a
            state dict (then ``arch`` names its architecture).
        weights: ``"default"`` (pretrained) or ``"none"`` (random) for a registry name.
        arch: the architecture of a state-dict file.
        size: input size override (``None``: the model's own).
        mean: normalisation mean override.
        std: normalisation std override.
        resize: ``"squash"`` or ``"crop"`` override.
        device: ``"cpu"``, ``"cuda"``, ...
        score_threshold: a detector's least box confidence (``None``: the model's default).
        label: the name shown for an uploaded file (the user's file name, not the server path);
            not part of the key.
    """

    name: str = "efficientnet_lite0"
    weights: str = "default"
    arch: str | None = None
    size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: Literal["crop", "squash"] | None = None
    device: str = "cpu"
    score_threshold: float | None = None
    label: str | None = field(default=None, compare=False)

    def load(self) -> VisionModel:
        """Load the model (:func:`seethrough.load_model`); errors name the uploaded file.

        An uploaded TorchScript file is refused unless :func:`torchscript_allowed`, whatever
        its extension; an ONNX file whose external data is missing says that only one file can
        be uploaded.
        """
        try:
            if self.label is not None and self.arch is None and not torchscript_allowed():
                if is_torchscript(self.name):
                    raise UnsafeModelError(_torchscript_refused(self.label))
            return load_model(
                self.name,
                weights=self.weights,
                arch=self.arch,
                size=self.size,
                mean=self.mean,
                std=self.std,
                resize=self.resize,
                device=self.device,
                score_threshold=self.score_threshold,
            )
        except SeethroughError as exc:
            if self.label is None:
                raise
            message = (
                str(exc).replace(self.name, self.label).replace(Path(self.name).name, self.label)
            )
            if "external data" in message and Path(self.name).suffix == ".onnx":
                message = f"{message.rstrip('.')}; {_ONE_ONNX_FILE}"
            raise type(exc)(message) from None

    def title(self) -> str:
        """Short display name: the registry name or the file's name, with random weights noted."""
        name = self.label or (Path(self.name).name if self.arch or "/" in self.name else self.name)
        if self.arch:
            name = f"{self.arch} ({name})"
        return f"{name} (random weights)" if self.weights == "none" else name


@dataclass
class ModelSlot:
    """A loaded model and the lock every predict / explain on it must hold."""

    model: VisionModel
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names this load of the model: results cached for an evicted, reloaded model (new random
    weights, say) are never served for the new one."""


class _LRU:
    """A small thread-safe least-recently-used mapping."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class ModelPool:
    """Loaded models per :class:`ModelSpec`, the least recently used dropped beyond ``size``.

    A spec is loaded once even when several sessions ask for it at the same moment: loading
    holds a lock of its own per spec.
    """

    def __init__(self, size: int = 6) -> None:
        self._slots = _LRU(size)
        self._loading: dict[ModelSpec, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, spec: ModelSpec) -> ModelSlot:
        """The slot of ``spec``, loading the model on first use (errors propagate, typed)."""
        slot = self._slots.get(spec)
        if slot is not None:
            return slot
        with self._guard:
            loading = self._loading.setdefault(spec, threading.Lock())
        with loading:
            slot = self._slots.get(spec)
            if slot is None:
                try:
                    slot = ModelSlot(spec.load())
                    self._slots.put(spec, slot)
                finally:
                    with self._guard:
                        self._loading.pop(spec, None)
        return slot

    def __len__(self) -> int:
        return len(self._slots)


class ResultCache:
    """Explanations per (image hash, loaded model, method, target, layer, parameters)."""

    def __init__(self, size: int = 64) -> None:
        self._items = _LRU(size)
        self.hits = 0

    @staticmethod
    def key(
        digest: str,
        slot: ModelSlot,
        method: str,
        target: Hashable,
        layer: str | None,
        params: Mapping[str, Any],
    ) -> tuple[Hashable, ...]:
        """The cache key of one run."""
        return (digest, slot.token, method, target, layer, tuple(sorted(params.items())))

    def get(self, key: tuple[Hashable, ...]) -> Explanation | None:
        found = self._items.get(key)
        if found is not None:
            self.hits += 1
        return found

    def put(self, key: tuple[Hashable, ...], value: Explanation) -> None:
        self._items.put(key, value)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


MODELS = ModelPool()
"""The process-wide model pool shared by every dashboard session."""
RESULTS = ResultCache()
"""The process-wide result cache shared by every dashboard session."""


# ---------------------------------------------------------------------------------------------
# images


def read_upload(data: bytes, filename: str) -> Image.Image:
    """Check and decode an uploaded image (EXIF orientation applied, RGB).

    Raises:
        InvalidImageError: a file type not in :data:`UPLOAD_TYPES`, an empty or too large file,
            more pixels than :data:`MAX_UPLOAD_PIXELS`, or bytes that are not a readable image.
    """
    suffix = Path(filename).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise InvalidImageError(
            f"{filename}: not an image file type the dashboard reads ({', '.join(UPLOAD_TYPES)})"
        )
    if not data:
        raise InvalidImageError(f"{filename}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidImageError(
            f"{filename}: {len(data) / 2**20:.1f} MiB is larger than the "
            f"{MAX_UPLOAD_BYTES // 2**20} MiB limit"
        )
    fp = io.BytesIO(data)
    fp.name = filename  # errors name the user's file
    try:
        image = load_image(fp, max_pixels=MAX_UPLOAD_PIXELS)
    except ImageTooLargeError as exc:  # the library's hint (max_pixels=, the variable) is not ours
        w, h = exc.size or (0, 0)
        size = f" is {w}x{h} = {w * h:,} pixels," if exc.size else ""
        raise ImageTooLargeError(
            f"{filename}{size} more than the dashboard's limit of {MAX_UPLOAD_PIXELS:,} pixels "
            f"({MAX_UPLOAD_PIXELS / 1e6:g} MP): resize it first",
            size=exc.size,
            limit=MAX_UPLOAD_PIXELS,
        ) from None
    image.info["name"] = filename
    return image


def image_digest(image: Image.Image) -> str:
    """A content hash of a decoded image (pixels and size), the image part of cache keys.

    Remembered for the latest few image objects (not in ``image.info``, which PIL copies into
    every converted or resized image), so the cache keys of a large upload cost one hash, not
    one per method on every page rerun.
    """
    known = _DIGESTS.get(id(image))
    if known is not None and known[0]() is image:
        return known[1]
    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(np.asarray(image).tobytes())
    digest = h.hexdigest()[:32]
    _DIGESTS.put(id(image), (weakref.ref(image), digest))
    return digest


_DIGESTS = _LRU(16)  # id(image) -> (weak reference to it, digest): a reused id is not a hit
_UPLOADS = _LRU(4)


def decoded_upload(data: bytes, filename: str) -> Image.Image:
    """:func:`read_upload`, kept for the few latest uploads by the hash of their bytes.

    Every widget change reruns the page, which hands the same upload back: decoding a 40 MP
    photo and hashing its pixels again each time would cost about a second. A refused upload
    is not kept (the next rerun says why again). Treat the returned image as read-only.
    """
    key = (hashlib.sha256(data).digest(), filename)
    image = _UPLOADS.get(key)
    if image is None:
        image = read_upload(data, filename)
        image_digest(image)
        _UPLOADS.put(key, image)
    return image


def torchscript_allowed() -> bool:
    """Whether this dashboard accepts TorchScript files (:data:`TORCHSCRIPT_ENV` is ``1``).

    A TorchScript file is a program: even with its operators checked, accept one only on a
    dashboard that serves one user on their own machine.
    """
    return os.environ.get(TORCHSCRIPT_ENV, "").strip() == "1"


_ONE_ONNX_FILE = (
    "only one .onnx file can be uploaded, so its external data cannot be: save the model with "
    "its weights inside (torch.onnx.export(..., external_data=False))"
)


def _torchscript_refused(filename: str) -> str:
    return (
        f"{filename} is a TorchScript file, which is a program: this dashboard takes only state "
        "dicts (.safetensors, or .pt / .pth / .bin holding tensors only) for a named "
        "architecture. Save model.state_dict() instead, or, for yourself on your own machine, "
        "start the dashboard with `seethrough dashboard --allow-torchscript`."
    )


class UploadFolder:
    """A private folder for one session's uploaded weights, removed with the session.

    Created by :func:`tempfile.mkdtemp` (mode 0700: other users can neither list nor open its
    files); removed when this object is garbage collected (the page keeps it in the session's
    state, which Streamlit drops when the session ends), when :meth:`remove` is called, or at
    the latest when the process exits.
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="seethrough-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def store(self, data: bytes, filename: str, framework: str = "PyTorch") -> Path:
        """:func:`store_upload` into this folder."""
        return store_upload(data, filename, self.path, framework=framework)

    def remove(self) -> None:
        """Delete the folder and its files now."""
        self._finalizer()


_SHARED_FOLDER: UploadFolder | None = None
_SHARED_FOLDER_LOCK = threading.Lock()


def _shared_folder() -> UploadFolder:
    """The process's own private folder, for :func:`store_upload` calls that name none."""
    global _SHARED_FOLDER
    with _SHARED_FOLDER_LOCK:
        if _SHARED_FOLDER is None or not _SHARED_FOLDER.path.is_dir():
            _SHARED_FOLDER = UploadFolder()
        return _SHARED_FOLDER


def store_upload(
    data: bytes, filename: str, folder: str | Path | None = None, *, framework: str = "PyTorch"
) -> Path:
    """Write an uploaded model file where the loader can read it, named by its content hash.

    ``framework`` (one of :data:`FRAMEWORKS`) says which files are taken
    (:data:`MODEL_FILE_TYPES`). The same bytes always give the same path in a folder, so the
    model pool's cache key follows the content. State dicts are only ever read with
    ``weights_only=True`` or as safetensors; a Keras file's configuration is checked for code
    before Keras reads it in safe mode; an ONNX file is checked before onnxruntime runs it. A
    TorchScript file (a program) is refused unless :func:`torchscript_allowed` (and then taken
    as a PyTorch model only), whatever its extension, and is then loaded only if its code passes
    the operator check. A SavedModel (a folder that can carry arbitrary TensorFlow operations)
    is never taken.
    The file is created with mode 0600 under a temporary name and renamed, so two sessions never
    read half a file; ``folder`` (by default a private one of this process: pass a session's
    :class:`UploadFolder`) keeps the :data:`KEEP_UPLOADED_WEIGHTS` most recently used files (a
    loaded model stays in the pool; the page stores its upload again when it needs the file).

    Raises:
        InvalidParameterError: an extension not accepted for ``framework`` (a SavedModel's
            ``.pb`` says why), an unknown framework, or an empty file.
        UnsafeModelError: a TorchScript file while :func:`torchscript_allowed` is false.
    """
    allowed = torchscript_allowed()
    types = MODEL_FILE_TYPES[_framework(framework)]
    if framework == "PyTorch" and allowed:
        types += ("ts",)
    suffix = Path(filename).suffix.lower()
    if suffix.lstrip(".") not in types:
        if suffix == ".ts" and not allowed:
            raise UnsafeModelError(_torchscript_refused(filename))
        raise InvalidParameterError(_wrong_type(filename, framework, types))
    if not data:
        raise InvalidParameterError(f"{filename}: the file is empty")
    if not allowed and is_torchscript(data):
        raise UnsafeModelError(_torchscript_refused(filename))
    root = Path(folder) if folder is not None else _shared_folder().path
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = root / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if path.exists():
        path.touch()
    else:
        write_atomically(path, lambda p: p.write_bytes(data), mode=0o600)
    _prune(root, keep=path)
    return path


def _wrong_type(filename: str, framework: str, types: tuple[str, ...]) -> str:
    """The one-line error for a file ``framework``'s panel does not take."""
    listed = ", ".join("." + t for t in types)
    if filename.lower().endswith(".pb"):
        return (
            f"{filename}: a TensorFlow SavedModel is not taken here (it can carry arbitrary "
            f"TensorFlow operations, which would run): save the model as .keras and choose "
            f"Keras, or export it to .onnx"
        )
    what = {"PyTorch": "weights", "Keras": "a Keras model file", "ONNX": "an ONNX model file"}
    suffix = Path(filename).suffix.lower()
    others = [f for f, t in MODEL_FILE_TYPES.items() if suffix[1:] in t]
    hint = f" (choose {others[0]} as the framework for a {suffix} file)" if others else ""
    return f"{filename}: {what[framework]} must be one of {listed}{hint}"


KEEP_UPLOADED_WEIGHTS = 8
"""How many uploaded weights files :func:`store_upload` keeps (the most recently used)."""


def _prune(root: Path, keep: Path) -> None:
    """Remove all but the :data:`KEEP_UPLOADED_WEIGHTS` most recently used files of ``root``."""
    stored = []
    for f in root.iterdir():
        try:
            if f.is_file() and f != keep and not is_temporary(f):
                stored.append((f.stat().st_mtime, f))
        except OSError:  # removed by another session meanwhile
            continue
    for _, f in sorted(stored, reverse=True)[KEEP_UPLOADED_WEIGHTS - 1 :]:
        f.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# forms


@dataclass(frozen=True)
class Field:
    """One form field generated from a registry :class:`~seethrough.registry.Param`.

    ``kind`` is ``"checkbox"``, ``"select"``, ``"int"``, ``"float"`` or ``"text"``.
    """

    param: Param
    kind: str

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def default(self) -> Any:
        return "" if self.kind == "text" and self.param.default is None else self.param.default


def param_fields(info: MethodInfo) -> list[Field]:
    """The form fields of a method's parameters, in the registry's order."""
    out = []
    for p in info.params:
        if p.type is bool:
            kind = "checkbox"
        elif p.choices is not None:
            kind = "select"
        elif p.type is int:
            kind = "int"
        elif p.type is float:
            kind = "float"
        else:
            kind = "text"
        out.append(Field(p, kind))
    return out


_SAFE_TEXT = re.compile(r"^[A-Za-z0-9_.,+\- ]{1,64}$")


def _safe_text(value: str) -> bool:
    """Short text of letters, digits and ``_.,+-`` that names no file where the server runs."""
    if not _SAFE_TEXT.match(value):
        return False
    try:
        return not Path(value).exists()
    except OSError:
        return False


def _same_number(text: str, default: Any) -> bool:
    """``"0"`` for a default of ``0.0``: the default, typed differently."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return False
    try:
        return float(text) == float(default)
    except ValueError:
        return False


def clean_params(info: MethodInfo, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check form values against the registry; only changed values are returned.

    Free-text parameters (``segments``, ``hide``, ``baseline``, ``window``, ...) take numbers and
    keywords only: text with a path separator, a colon or naming an existing file is refused, so
    that a page can never make the server read a file of its choosing. Nothing typed is evaluated.

    Raises:
        InvalidParameterError: a value of the wrong type or out of range, or unsafe text.
    """
    out: dict[str, Any] = {}
    for p in info.params:
        if p.name not in values:
            continue
        value = values[p.name]
        if isinstance(value, str):
            value = value.strip()
            if value == "" or value == str(p.default) or _same_number(value, p.default):
                continue
            free_text = p.choices is None and p.type not in (bool, int, float)
            if free_text and not _safe_text(value):
                raise InvalidParameterError(
                    f"{info.name}: {p.name}={value[:40]!r}: use a number or a keyword "
                    "(paths are not accepted here)"
                )
        value = p.validate(value)
        if value != p.default:
            out[p.name] = value
    return out


def methods_by_family(task: str | None = None) -> dict[str, list[MethodInfo]]:
    """Registered methods grouped by family, in the registry's display order; with ``task``
    (a model's ``task``) only the methods that explain such a model, and no empty family."""
    groups = {
        f: [m for m in list_methods(family=f) if task is None or task in m.tasks]
        for f in families()
    }
    return {f: ms for f, ms in groups.items() if ms}


# ---------------------------------------------------------------------------------------------
# runs


def run_method(
    slot: ModelSlot,
    image: Image.Image,
    method: str,
    *,
    target: Hashable = None,
    layer: str | None = None,
    params: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], bool | None] | None = None,
    cache: ResultCache | None = RESULTS,
) -> Explanation:
    """Explain ``image`` with ``method`` on the slot's model, through the result cache.

    ``target``: ``None`` (the model's default), a class index, or a detector's
    :class:`~seethrough.targets.Box` / a segmenter's :class:`~seethrough.targets.Mask` (both
    hashable, so part of the cache key).

    The slot's lock is held for the whole call, so the model's hooks and state belong to this run.
    ``progress(done, total)`` is the library's callback: returning ``False`` cancels (every
    method calls it before its work and between batches). Only a finished run is cached: a
    cancelled one (``CancelledError``, or whatever ``progress`` raises) releases the lock and
    leaves nothing behind.
    """
    params = dict(params or {})
    key = ResultCache.key(image_digest(image), slot, method, target, layer, params)
    found = cache.get(key) if cache is not None else None
    if found is not None:
        return found
    with slot.lock:
        result = explain(
            slot.model, image, method, target=target, layer=layer, progress=progress, **params
        )
    assert isinstance(result, Explanation)
    if cache is not None:
        cache.put(key, result)
    return result


class RunProgress:
    """Where a page's run of several methods is, so that the page's next run can say where a
    cancel stopped it.

    The page records the method it starts (:meth:`start`), each of its progress reports
    (:meth:`report`), each result shown (:meth:`finish`) and the run's end however it ends
    (:meth:`end`). A Cancel, or a closed page, stops the run at the running method's next
    progress report; :meth:`cancelled` waits a little for that end and says what happened.
    """

    def __init__(self, methods: int) -> None:
        self.methods = methods
        self.title: str | None = None
        self.running = False
        self.done = 0
        self.total: int | None = None
        self.finished = 0
        self.ended = threading.Event()

    def start(self, title: str) -> None:
        """Method ``title`` is about to run."""
        self.title, self.running, self.done, self.total = title, True, 0, None

    def report(self, done: int, total: int) -> None:
        """The running method's progress report."""
        self.done, self.total = done, total

    def finish(self) -> None:
        """The running method's result (or its error) is kept."""
        self.finished += 1
        self.running = False

    def end(self) -> None:
        """The run is over: finished, failed, or stopped."""
        self.ended.set()

    def cancelled(self, wait: float = 30.0) -> str:
        """The page's message after a cancel, once the run has ended (or after ``wait`` s)."""
        ended = self.ended.wait(wait)
        n = self.finished
        kept = (
            f"the {n} method{'s' if n != 1 else ''} that had finished "
            f"{'are' if n != 1 else 'is'} shown below"
            if n
            else "no method had finished"
        )
        if not self.running:
            when = "before the first method started" if self.title is None else "between methods"
            if n == self.methods:
                when = "after every method had finished"
            return f"Cancelled {when}: {kept}."
        where = f"at {self.done}/{self.total}" if self.total is not None else "before it started"
        if not ended:
            return (
                f"Cancelled: {self.title} is still running ({where}) and stops at its next "
                f"progress report; {kept}."
            )
        return f"Cancelled: {self.title} stopped {where}; {kept}."


@dataclass(frozen=True)
class Predicted:
    """The top-k of one image under one loaded model, with what the page shows for it.

    For a classifier, :attr:`predictions` are its top-k classes and :attr:`chart` their bar
    chart; for a detector its top-k boxes (``BoxPrediction``) and the image with the boxes
    drawn; for a segmenter the classes present (``(label, fraction of the pixels)``, most
    first) and the class mask over the image with its legend.
    """

    predictions: list[Any]
    chart: np.ndarray
    """The bar chart of :attr:`predictions`, the boxes or the mask (uint8 RGB)."""
    seen: np.ndarray
    """The image as the model sees it, after resizing and cropping (uint8 RGB)."""
    task: str = "classification"
    """The model's task: ``"classification"``, ``"detection"`` or ``"segmentation"``."""


_PREDICTED = _LRU(32)


def predict(
    slot: ModelSlot, image: Image.Image, k: int = 5, *, name: str | None = None
) -> Predicted:
    """Top-``k`` of ``image`` (under the slot's lock), its chart and the model's view of it.

    ``name`` titles the chart (default: the model's own name; the page passes the name its
    sidebar shows, the user's file name for an upload rather than the stored file's).
    Kept per (loaded model, image hash, k, name): the page reruns on every widget change, and
    the prediction and its pictures are the same each time.
    """
    from ..viz import figure_to_array, prediction_bar_chart

    key = (slot.token, image_digest(image), k, name)
    found = _PREDICTED.get(key)
    if found is not None:
        return found
    vm = slot.model
    if vm.task in ("detection", "segmentation"):
        result = _predict_regions(slot, image, k, name)
        _PREDICTED.put(key, result)
        return result
    with slot.lock:
        top = vm.predict(image, k=k)
    assert isinstance(top, list) and all(isinstance(p, Prediction) for p in top)
    result = Predicted(
        predictions=top,  # type: ignore[arg-type]
        chart=figure_to_array(
            prediction_bar_chart(top, title=f"top-{len(top)}: {name or vm.name}")
        ),
        seen=vm.preprocessing.display_image(image),
    )
    _PREDICTED.put(key, result)
    return result


def _predict_regions(slot: ModelSlot, image: Image.Image, k: int, name: str | None) -> Predicted:
    """A detector's top-``k`` boxes drawn on the image, or a segmenter's class mask over it."""
    from ..viz import Panel, draw_boxes, figure_to_array, grid_figure, mask_legend, mask_overlay

    vm = slot.model
    seen = vm.preprocessing.display_image(image)
    with slot.lock:
        found = vm.predict(image)
    if vm.task == "detection":
        boxes = list(found)[:k]
        chart = draw_boxes(
            seen,
            [b.box for b in boxes],
            [f"{i} {b.label}" for i, b in enumerate(boxes)],
            [b.score for b in boxes],
        )
        return Predicted(boxes, chart, seen, "detection")
    present = list(found.present)
    panel = Panel(
        mask_overlay(seen, found.classes),
        title=f"classes: {name or vm.name}",
        legend=mask_legend(present[:k], vm.labels),
    )
    chart = figure_to_array(grid_figure([panel], ncols=1, tile_size=4.0))
    return Predicted(present, chart, seen, "segmentation")


def box_rows(boxes: list[Any]) -> list[dict[str, Any]]:
    """A detector's boxes as table rows: ``box`` (its index, 0 = the top box), ``class``,
    ``score`` and the corners ``x0, y0, x1, y1`` in image pixels."""
    return [
        {
            "box": i,
            "class": b.label,
            "score": round(float(b.score), 4),
            **{c: round(float(v), 1) for c, v in zip(("x0", "y0", "x1", "y1"), b.box, strict=True)},
        }
        for i, b in enumerate(boxes)
    ]


def box_choices(boxes: list[Any]) -> list[tuple[str, Any]]:
    """``(text, Box target)`` per box, the top box first (the default choice)."""
    from ..targets import Box

    return [(f"box {i}: {b.label} {b.score:.2f}", Box(index=i)) for i, b in enumerate(boxes)]


def mask_choices(
    vm: VisionModel, present: list[tuple[str, float]], background: int | None = 0
) -> list[tuple[str, Any]]:
    """``(text, Mask target)`` per class present, the most frequent class other than the
    background first (the default choice; the background last)."""
    from ..targets import Mask

    back = vm.labels[background] if background is not None and vm.labels else None
    ordered = [p for p in present if p[0] != back] + [p for p in present if p[0] == back]
    return [
        (f"{label} ({100 * fraction:.1f}% of the pixels)", Mask(vm.class_index(label)))
        for label, fraction in ordered
    ]


def detector_names() -> set[str]:
    """The registry's detectors (torchvision's), whose model panel offers a score threshold."""
    from ..models.detection import detector_names as names

    return set(names())


# ---------------------------------------------------------------------------------------------
# pictures and downloads


@dataclass(frozen=True)
class LayerDefault:
    """The layer that layer-based methods (the CAM family, DFF, ...) use when none is typed.

    Attributes:
        name: the layer's name as the model's framework names it (a PyTorch module's dotted
            name, a Keras layer's name, an ONNX tensor's name), or ``None`` when it has none.
        note: what the model panel says: ``"default layer bn2"``, or why there is none.
    """

    name: str | None
    note: str


_LAYER_DEFAULTS = _LRU(16)


def layer_default(slot: ModelSlot) -> LayerDefault:
    """The slot's default layer and how to describe it, found once per loaded model.

    A model without a preferred layer gets the last layer with a spatial output, asked of the
    model's own runner as the methods ask it (so a Keras model's layer has its Keras name, an
    ONNX model's its tensor name), with one forward pass of a blank image under the slot's
    lock. A TorchScript model has none: it allows no hooks on its layers.
    """
    import torch

    found = _LAYER_DEFAULTS.get(slot.token)
    if found is not None:
        return found
    vm = slot.model
    if isinstance(vm.module, torch.jit.ScriptModule):
        result = LayerDefault(
            None,
            "no default layer: a TorchScript file allows no hooks on its layers, so the CAM "
            "family and DFF do not apply (gradient and perturbation methods do)",
        )
    elif vm.default_layer:
        result = LayerDefault(vm.default_layer, f"default layer {vm.default_layer}")
    else:
        try:
            runner = vm.make_runner()
            if runner.has_layers:
                height, width = vm.preprocessing.output_size
                blank = torch.zeros(1, 3, height, width, device=runner.device, dtype=runner.dtype)
                with slot.lock, runner.protected(parameters=False), torch.no_grad():
                    name, _ = runner.resolve_layer(None, blank)
                result = LayerDefault(name, f"default layer {name} (the last spatial one)")
            else:
                result = LayerDefault(
                    None,
                    f"no default layer: {runner.kind} offers no layers, so the CAM family and "
                    "DFF do not apply (perturbation methods do)",
                )
        except Exception as exc:  # noqa: BLE001 - a note in the sidebar, never a traceback
            reason = " ".join(str(exc).split()) or type(exc).__name__
            result = LayerDefault(None, f"no default layer ({reason}): type one under Explain")
    _LAYER_DEFAULTS.put(slot.token, result)
    return result


@dataclass(frozen=True)
class Rendered:
    """What the page shows for one result, drawn once.

    Attributes:
        views: ``(picture, caption)`` pairs: the map over the image with its colour legend first,
            then every other view of the method (LIME's and SHAP's top and signed superpixels,
            DFF's concepts and legend, the feature-map grid, feature inversion's loss curve).
        files: the downloads (:func:`downloads`).
    """

    views: list[tuple[np.ndarray, str]]
    files: dict[str, bytes]


def result_views(e: Explanation) -> list[tuple[np.ndarray, str]]:
    """Every view of an explanation as its own picture, with a short caption.

    The first is the map over the image with a colour legend (diverging and centred at 0 for a
    signed map); the explanation's caption says what it is, so that picture has no title.
    """
    from ..viz import explanation_panels, figure_to_array, grid_figure

    views = []
    for i, panel in enumerate(explanation_panels(e)):
        lines = panel.title.splitlines()
        caption = "map" if i == 0 else " · ".join(lines[1:]) or lines[0]
        panel.title = ""
        panel.colorbar = panel.heatmap is not None
        panel.legend = None  # the page lists DFF's concepts as a table of text
        views.append((figure_to_array(grid_figure([panel], ncols=1, tile_size=4.0)), caption))
    return views + extra_views(e)


_RENDERED = _LRU(64)


def render(e: Explanation) -> Rendered:
    """The views and downloads of ``e``, drawn on first use and kept for the page's reruns."""
    found = _RENDERED.get(id(e))
    if found is not None and found[0] is e:  # the same object, not a new one at a reused id
        return found[1]
    rendered = Rendered(result_views(e), downloads(e, e.method))
    _RENDERED.put(id(e), (e, rendered))
    return rendered


def concept_rows(e: Explanation) -> list[dict[str, Any]]:
    """DFF's concepts as table rows: ``colour`` (``#rrggbb``, as in the concepts picture),
    ``concept`` (its number) and ``top classes`` (with their probabilities); ``[]`` for other
    methods."""
    from ..viz import concept_entries

    if "concepts" not in e.extras:
        return []
    k = len(e.extras["concepts"])
    entries = concept_entries(e.extras.get("concept_labels"), e.extras.get("concept_scores"), k=k)
    return [
        {"colour": colour, "concept": i + 1, "top classes": text.split(": ", 1)[1]}
        for i, (colour, text) in enumerate(entries)
    ]


def ink_on(colour: str) -> str:
    """``"black"`` or ``"white"``, whichever reads better on the ``#rrggbb`` ``colour``."""
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def extra_views(e: Explanation) -> list[tuple[np.ndarray, str]]:
    """Pictures beside the main one, with captions: the most activated channels of
    ``feature_maps``, feature inversion's loss curve. (DFF's concepts are text: see
    :func:`concept_rows`.)
    """
    from ..viz import curve_figure, feature_grid, figure_to_array

    views = []
    x = e.extras
    if "channels" in x and "channel_indices" in x:
        fig = feature_grid(x["channels"], x["channel_indices"], e.image)
        views.append((figure_to_array(fig), "the most activated channels"))
    if "loss" in x:
        fig = curve_figure(x["loss"], title="feature inversion loss")
        views.append((figure_to_array(fig), "loss per optimisation step"))
    return views


def downloads(e: Explanation, stem: str | None = None) -> dict[str, bytes]:
    """The files :meth:`Explanation.save` writes, as bytes by kind (``png``, ``npz``, ``json``)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = e.save(tmp, stem)
        order = [k for k in ("png", "npz", "json") if k in paths]
        return {kind: paths[kind].read_bytes() for kind in order}


# ---------------------------------------------------------------------------------------------
# training runs (the "Training run" view)

MAX_RUN_DEPTH = 3
"""How deep under the runs folder run folders are looked for (``team/exp1/seed0`` is 3)."""
MAX_RUNS = 500
"""At most this many run folders are listed."""


def runs_root() -> Path | None:
    """The folder of training runs this dashboard shows (``seethrough dashboard --runs DIR``,
    passed to the server as :data:`RUNS_ENV`), or ``None`` when it was started without one."""
    value = os.environ.get(RUNS_ENV, "").strip()
    return Path(value).resolve() if value else None


def list_runs(root: str | os.PathLike[str]) -> list[str]:
    """The run folders under ``root``: their names relative to it (``/``-separated, ``"."`` for
    ``root`` itself), sorted.

    A run folder holds the ``run.json`` an :class:`~seethrough.ExplanationRecorder` writes;
    folders are looked for at most :data:`MAX_RUN_DEPTH` deep, hidden folders and links to
    folders are not entered, nor the inside of a run, and at most :data:`MAX_RUNS` are listed.
    """
    base = Path(root).resolve()
    if not base.is_dir():
        return []
    found: list[str] = []
    for folder, dirs, files in os.walk(base):  # does not follow links to folders
        here = Path(folder)
        depth = len(here.relative_to(base).parts)
        if (
            INFO_FILE in files
            and (here / INFO_FILE).is_file()
            and not (here / INFO_FILE).is_symlink()
        ):
            found.append(here.relative_to(base).as_posix())
            dirs.clear()  # a run's own folders (maps) are not runs
        elif depth >= MAX_RUN_DEPTH:
            dirs.clear()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if len(found) >= MAX_RUNS:
            break
    return sorted(found)


def _run_folder(root: str | os.PathLike[str], name: str) -> Path:
    """The folder of the run called ``name`` under ``root``, refusing any other path."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise InvalidParameterError(f"run {name!r}: not a run name")
    if name.startswith("/") or Path(name).is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise InvalidParameterError(f"run {name!r}: a path, not the name of a run in the list")
    if ".." in name.split("/"):
        raise InvalidParameterError(f"run {name!r}: '..' leads out of the runs folder")
    base = Path(root).resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise InvalidParameterError(f"run {name!r}: outside the runs folder")
    if name not in list_runs(base):
        raise InvalidParameterError(f"run {name!r}: no such run in the runs folder")
    return path


def open_run(root: str | os.PathLike[str], name: str) -> Run:
    """Read the run called ``name`` (one of :func:`list_runs`) under the runs folder ``root``.

    Only a name from the list is read: an absolute path, a name with ``..``, or one that leads
    outside ``root`` (through a link, say) is refused before anything is read.

    Raises:
        InvalidParameterError: ``name`` is not a run under ``root``, or its files are not a
            training run this version reads.
    """
    return read_run(_run_folder(root, name))


@dataclass(frozen=True)
class ProbeView:
    """One probe at one epoch, as the view shows it.

    Attributes:
        name: the probe's name (``run.json``).
        image: the probe as the model sees it, at display size.
        overlays: ``(method, picture)`` per method: its map laid over the probe
            (:func:`seethrough.training.report.picture`, the map's recorded values in [0, 1]).
        caption: the probe's label and what the model predicted at this epoch.
    """

    name: str
    image: np.ndarray
    overlays: list[tuple[str, np.ndarray]]
    caption: str


@dataclass(frozen=True)
class EpochView:
    """An epoch of a run: every probe's :class:`ProbeView`."""

    epoch: int
    probes: list[ProbeView]


_EPOCHS = _LRU(32)


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def load_epoch(run: Run, epoch: int) -> EpochView:
    """The overlays of ``epoch``'s maps on every probe, per method, with each probe's label,
    prediction and confidence at that epoch; kept for the page's reruns until the epoch's file
    changes (a resumed run may record it again).

    Raises:
        InvalidParameterError: ``epoch`` has no maps, or its file lacks a method's maps.
    """
    files = (maps_path(run.path, epoch), run.path / "probes.npz")
    key = (str(run.path), int(epoch), *(_stamp(f) for f in files))
    cached = _EPOCHS.get(key)
    if cached is not None:
        return cached
    images = run.probe_images()
    pictures = epoch_pictures(run, images, int(epoch))
    arrays = run.maps(int(epoch))
    probes = []
    for i, (name, label) in enumerate(zip(run.probes, run.labels, strict=True)):
        parts = [name]
        if label is not None:
            parts.append(f"label {label}")
        if "predicted" in arrays and "confidence" in arrays:
            parts.append(
                f"predicted {int(arrays['predicted'][i])} ({float(arrays['confidence'][i]):.2f})"
            )
        overlays = list(zip(run.methods, pictures[i], strict=True))
        probes.append(ProbeView(name, picture(images[i]), overlays, " · ".join(parts)))
    view = EpochView(int(epoch), probes)
    _EPOCHS.put(key, view)
    return view


def method_title(name: str) -> str:
    """A method's title (``gradcam``: Grad-CAM), its name when this server does not know it."""
    try:
        return get_method(name).title
    except SeethroughError:  # a method this server does not know: its name
        return name


def settled_text(run: Run) -> str:
    """One line: the epoch from which the maps stopped moving (:meth:`Run.settled_epoch`:
    consecutive maps of the first method correlate above the run's threshold), or that they
    have not yet."""
    settle = float(run.info.get("settle", DEFAULT_SETTLE))
    method = method_title(run.methods[0]) if run.methods else "the first method"
    settled = run.settled_epoch()
    if settled is None:
        return (
            f"Attention has not settled yet: consecutive {method} maps do not correlate above "
            f"{settle:g} up to the last recorded epoch."
        )
    return (
        f"Attention settled at epoch {settled}: from there on, consecutive {method} maps "
        f"correlate above {settle:g} (Pearson, mean over the probes)."
    )

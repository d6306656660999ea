"""Tabular model files, loaded only when nothing in them can run code before it is checked.

A model file is either data (a graph of operators, an estimator's parameters) or a program.
:func:`load_tabular_model` reads three kinds and refuses the rest:

- ``.onnx``: a graph run by onnxruntime after the checks image ONNX models get
  (:func:`seethrough.models.onnx.checks.read_model`: external data only inside the model's
  folder, no custom-domain operator, a complete and valid graph). Its one input takes rows
  ``(n, features)`` of floats; the explained output is the first, or the probabilities output
  when there are several (scikit-learn exports via skl2onnx have a label and a probabilities
  output; a ``ZipMap`` of probabilities per class is read as columns, its classes as labels).
- ``.skops``: a scikit-learn estimator saved with ``skops.io.dump``. skops reads it without
  unpickling and lists the types it would have to trust; each must be a class of scikit-learn,
  numpy or scipy (or a numpy ufunc) outside :data:`REFUSED_TYPES`, else the file is refused
  (:class:`~seethrough.errors.UnsafeModelError` naming the type). A function is never trusted:
  an estimator would call it on the rows (``FunctionTransformer(os.system)``).
- TorchScript (``.pt`` and others, recognised by content): a program, loaded only after
  :func:`seethrough.models.torchscript.load_torchscript` has checked that its code does
  nothing but tensor operations.

A pickle (``.pkl``, ``.joblib``, a ``torch.save`` archive, ...) is refused without being read
further: unpickling runs whatever code the file names.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    InvalidInputError,
    InvalidParameterError,
    MissingDependencyError,
    UnsafeModelError,
)
from .model import ScoreFunction, as_score_function

__all__ = [
    "TabularModel",
    "load_tabular_model",
    "PICKLE_SUFFIXES",
    "TRUSTED_PACKAGES",
    "REFUSED_TYPES",
]

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".jbl", ".sav", ".dill", ".cloudpickle")
"""File name endings of pickles (joblib's included), refused whatever their content."""

TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy")
"""The packages whose classes a ``.skops`` file may ask to trust."""

REFUSED_TYPES = frozenset({"numpy.memmap", "numpy.DataSource", "numpy.lib.npyio.NpzFile"})
"""Classes of the trusted packages that still are not trusted: they open files."""

_REFUSED_MODULES = ("sklearn.datasets", "sklearn.utils._testing", "numpy.testing", "scipy.io")
_SAFE_FORMATS = "save a scikit-learn model with skops.io.dump (.skops) or export it to ONNX (.onnx)"
# first bytes of a pickle (protocol 2 to 5) and of joblib's compressed pickles
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_COMPRESSED_MAGIC = (
    b"\x1f\x8b",  # gzip
    b"BZh",  # bz2
    b"\xfd7zXZ\x00",  # xz
    b"\x04\x22\x4d\x18",  # lz4
    b"x\x01",  # zlib, at each compression level
    b"x^",
    b"x\x9c",
    b"x\xda",
)


@dataclass
class TabularModel(ScoreFunction):
    """A model read from a file, as a :class:`~seethrough.tabular.ScoreFunction`.

    Attributes:
        kind: ``"onnx"``, ``"skops"`` or ``"torchscript"``.
        path: the file.
        n_features: the number of columns the model takes, when the file says.
        columns: the column names the model was fitted on (a scikit-learn estimator fitted on
            a DataFrame), in order.
        numeric_only: whether the model takes numbers only (ONNX, TorchScript): a table with a
            non-numeric column cannot be given to it.
        model: the loaded estimator or module (``None`` for ONNX).
    """

    kind: str = ""
    path: str = ""
    n_features: int | None = None
    columns: list[str] | None = None
    numeric_only: bool = True
    model: Any = field(default=None, repr=False)

    def describe(self) -> str:
        """One line: the file, its kind and the output explained."""
        kinds = {"onnx": "ONNX", "skops": "scikit-learn (skops)", "torchscript": "TorchScript"}
        what = type(self.model).__name__ if self.model is not None else ""
        inner = f"{kinds.get(self.kind, self.kind)} {what}".strip()
        return f"{Path(self.path).name}: {inner}, explaining its {self.output}"


def load_tabular_model(path: str | Path) -> TabularModel:
    """The model in ``path`` as a score function of rows, checked before any of it runs.

    Args:
        path: a ``.onnx`` file, a ``.skops`` file or a TorchScript archive (see the module
            docstring for what each is checked for).

    Returns:
        A :class:`TabularModel`: ``model(rows) -> (n, outputs)`` float64 scores.

    Raises:
        InvalidParameterError: a missing, unreadable or unknown file; a graph whose input is not
            rows of numbers; a ``.skops`` file that is not an estimator.
        UnsafeModelError: a pickle or joblib file; a ``.skops`` file holding a type outside
            the allow-list; an ONNX graph with external data outside its folder or a custom
            operator; TorchScript code that does more than tensor operations.
        MissingDependencyError: onnx / onnxruntime or skops is not installed.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a model file" if path.is_dir() else "no such file"
        raise InvalidParameterError(f"'{path}': {what}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx(path)
    if suffix == ".skops":
        return _skops(path)
    from ..models.torchscript import is_torchscript

    if is_torchscript(path):
        return _torchscript(path)
    if suffix in PICKLE_SUFFIXES or _looks_pickled(path):
        raise UnsafeModelError(
            f"refusing '{path}': it is a pickle (or joblib) file, and unpickling runs whatever "
            f"code the file names, so seethrough never opens one; {_SAFE_FORMATS}"
        )
    raise InvalidParameterError(
        f"'{path}' is not a tabular model file seethrough reads: expected .onnx, .skops or a "
        "TorchScript archive"
    )


def _looks_pickled(path: Path) -> bool:
    """Whether the file starts like a pickle, a compressed joblib pickle or a torch.save zip."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return False
    if head.startswith(_PICKLE_MAGIC + _COMPRESSED_MAGIC):
        return True
    if head.startswith(b"PK\x03\x04"):  # a zip that is not TorchScript: torch.save's pickle
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                return any(n.endswith("data.pkl") for n in archive.namelist())
        except (OSError, zipfile.BadZipFile):
            return False
    return False


# ------------------------------------------------------------------------------------- ONNX


def _onnx(path: Path) -> TabularModel:
    from ..models.zoo import require_extra

    require_extra("onnx", "an ONNX model")
    import onnxruntime as ort
    import torch

    from ..models.onnx.checks import describe_value, read_model

    model = read_model(path)
    constants = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise InvalidParameterError(
            f"'{path}' has {len(inputs)} inputs: a tabular model takes one, the rows"
        )
    value = inputs[0]
    tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
    dtype = _onnx_float(tensor.elem_type) if tensor is not None else None
    dims = (
        [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if tensor is not None and tensor.HasField("shape")
        else None
    )
    if dtype is None or (dims is not None and len(dims) != 2):
        raise InvalidParameterError(
            f"the input '{value.name}' of '{path}' is {describe_value(value)}: a tabular model "
            "takes rows (N, features) of floats"
        )
    n_features = dims[1] if dims and dims[1] else None
    outputs = [o.name for o in model.graph.output]
    chosen = outputs[0]
    if len(outputs) > 1:
        chosen = next((o for o in outputs if "prob" in o.lower()), chosen)
    labels = _zipmap_labels(model, chosen)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:  # the checked bytes (external data inside): the runtime never opens a file
        session = ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise InvalidParameterError(
            f"onnxruntime cannot run '{path}': {_first_line(exc)}"
        ) from None

    def fn(rows: Any) -> np.ndarray:
        x = _numbers(rows, "an ONNX model").astype(dtype, copy=False)
        try:
            out = session.run([chosen], {value.name: x})[0]
        except Exception as exc:  # onnxruntime's own types: a wrong width, a wrong type
            raise InvalidInputError(
                f"the ONNX model '{path.name}' cannot run on rows of shape {x.shape}: "
                f"{_first_line(exc)}"
            ) from None
        if isinstance(out, list):  # a ZipMap: one {class: probability} per row
            keys = list(out[0]) if out else []
            return np.array([[row[k] for k in keys] for row in out], dtype=np.float64)
        return np.asarray(out)

    return TabularModel(
        fn,
        f"output '{chosen}'",
        labels,
        kind="onnx",
        path=str(path),
        n_features=n_features,
    )


def _onnx_float(elem: int) -> Any:
    from onnx import TensorProto

    return {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}.get(elem)


def _zipmap_labels(model: Any, output: str) -> list[str] | None:
    """The classes of the ``ZipMap`` node that makes ``output``, if one does."""
    for node in model.graph.node:
        if node.op_type == "ZipMap" and output in node.output:
            for attr in node.attribute:
                if attr.name == "classlabels_strings":
                    return [s.decode() for s in attr.strings]
                if attr.name == "classlabels_int64s":
                    return [str(i) for i in attr.ints]
    return None


# ------------------------------------------------------------------------------------- skops


def _skops(path: Path) -> TabularModel:
    try:
        import skops.io as sio
    except ImportError:
        raise MissingDependencyError(
            "a .skops model needs skops: pip install 'seethrough[tabular]'"
        ) from None
    try:
        data = path.read_bytes()  # read once: what is checked is what is loaded
    except OSError as exc:
        raise InvalidParameterError(f"cannot read '{path}': {exc.strerror or exc}") from None
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises zip, json and key errors for a file not its own
        raise InvalidParameterError(
            f"'{path}' is not a readable skops file: {_first_line(exc)}"
        ) from None
    for name in untrusted:
        why = _refusal(name)
        if why:
            raise UnsafeModelError(
                f"refusing '{path}': it holds {name}, {why}; only classes of "
                f"{', '.join(TRUSTED_PACKAGES)} are trusted"
            )
    try:
        estimator = sio.loads(data, trusted=untrusted)
    except Exception as exc:
        raise InvalidParameterError(f"cannot load '{path}': {_first_line(exc)}") from None
    score = as_score_function(estimator)
    if score.output == "function":
        raise InvalidParameterError(
            f"'{path}' holds a {type(estimator).__name__}, not an estimator with predict_proba "
            "/ decision_function / predict"
        )
    names = getattr(estimator, "feature_names_in_", None)
    columns = [str(c) for c in names] if names is not None else None
    n_features = getattr(estimator, "n_features_in_", None)
    fn = score.fn if columns is None else _with_columns(score.fn, columns)
    return TabularModel(
        fn,
        score.output,
        score.labels,
        kind="skops",
        path=str(path),
        n_features=int(n_features) if n_features is not None else None,
        columns=columns,
        numeric_only=False,
        model=estimator,
    )


def _refusal(name: str) -> str | None:
    """Why the type ``module.Name`` is not trusted, or ``None`` when it is."""
    package = name.split(".", 1)[0]
    if package not in TRUSTED_PACKAGES:
        return f"a type from '{package}'"
    if name in REFUSED_TYPES or name.startswith(tuple(m + "." for m in _REFUSED_MODULES)):
        return "a type that reads or writes files"
    found = _resolve(name)
    if found is None:
        return "which cannot be found"
    if isinstance(found, np.ufunc):
        return None
    if not isinstance(found, type):
        kind = "a function" if isinstance(found, types.FunctionType) else "not a class"
        return f"{kind} (a model would call it)"
    if not str(getattr(found, "__module__", "")).startswith(TRUSTED_PACKAGES):
        return "a class defined outside them"
    return None


def _resolve(name: str) -> Any:
    """The object ``a.b.C`` names, importing only modules of :data:`TRUSTED_PACKAGES`."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _with_columns(fn: Callable[[Any], np.ndarray], columns: list[str]) -> Callable:
    """``fn`` on a DataFrame with the fitted column names (an estimator fitted on a DataFrame
    wants one; pandas is there, since it was fitted on one)."""

    def framed(rows: Any) -> np.ndarray:
        if hasattr(rows, "columns"):
            return fn(rows)
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - fitted on a DataFrame, so pandas exists
            return fn(rows)
        return fn(pd.DataFrame(np.asarray(rows), columns=columns).infer_objects())

    return framed


# ------------------------------------------------------------------------------- TorchScript


def _torchscript(path: Path) -> TabularModel:
    from ..models.torchscript import load_torchscript

    module = load_torchscript(path)
    score = as_score_function(module)

    def fn(rows: Any) -> np.ndarray:
        return score.fn(_numbers(rows, "a TorchScript model"))

    return TabularModel(fn, score.output, kind="torchscript", path=str(path), model=module)


def _numbers(rows: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{what} takes numbers, and the rows hold text (a categorical column): encode it "
            "as numbers, or use a .skops pipeline that encodes it"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

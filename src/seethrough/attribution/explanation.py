"""The result of explaining one row of a table or one text: a value per feature (column, group
of columns or word), with save/load and a versioned manifest like image explanations."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

import numpy as np

from .._io import write_atomically, write_text_atomically
from ..errors import InvalidParameterError
from ..explanation import _jsonable, _safe_stem, library_versions, read_saved

__all__ = [
    "FeatureExplanation",
    "FeatureExplanations",
    "FEATURE_MANIFEST_FORMAT",
    "FEATURE_MANIFEST_VERSION",
]

FEATURE_MANIFEST_FORMAT = "seethrough.feature_explanation"
FEATURE_MANIFEST_VERSION = 1
_FIELDS = (
    "kind",
    "method",
    "title",
    "features",
    "shown",
    "target",
    "label",
    "prediction",
    "base_value",
    "output",
    "params",
    "stats",
    "evaluations",
    "seconds",
    "created",
)


@dataclass
class FeatureExplanation:
    """How much each feature of one input moved the model's output for one target.

    For the Shapley methods ``base_value + values.sum() == prediction`` (efficiency): the
    values share out the difference between the model's output on this input and its mean
    output over the background (a table) or on the empty input (a text). For LIME
    ``base_value`` is the local linear model's intercept and ``values`` its slopes.

    Attributes:
        kind: ``"tabular"`` or ``"text"``.
        method: the method's name (``"kernelshap"``, ``"lime"``, ...).
        title: its display name.
        features: the features' names (columns or groups of a table, the words of a text).
        shown: each feature's value in this input, as text (``"39"``, ``"Married"``, a word).
        values: ``(F,)`` attributions for the target.
        target: the explained output's index.
        label: its name, if the model's outputs have names.
        prediction: the model's output for the target on this input.
        base_value: see above.
        output: which output of the model is explained (``"predict_proba"``, ``"function"``...).
        all_values: ``(T, F)`` attributions for every output, when the method computed them.
        params: the method's parameters.
        stats: what the method measured (``efficiency_gap``, ``r2``, ...).
        evaluations: the model evaluations the method used (rows given to the model).
        seconds: wall time of the call.
    """

    kind: str
    method: str
    title: str
    features: list[str]
    shown: list[str]
    values: np.ndarray
    target: int
    label: str | None
    prediction: float
    base_value: float
    output: str
    all_values: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.shape != (len(self.features),) or len(self.shown) != len(self.features):
            raise InvalidParameterError(
                f"{len(self.features)} features need {len(self.features)} values and shown "
                f"values, got {self.values.shape} and {len(self.shown)}"
            )

    def ranked(self, top: int | None = None) -> list[tuple[str, str, float]]:
        """``(feature, shown value, attribution)`` by decreasing ``|attribution|``."""
        order = np.argsort(-np.abs(self.values), kind="stable")[:top]
        return [(self.features[i], self.shown[i], float(self.values[i])) for i in order]

    def table(self, top: int | None = None) -> str:
        """A plain-text table of the ranked features, with the prediction and base value."""
        rows = [  # a word is its own value: "superb", not "superb = superb"
            (f if self.kind == "text" else f"{f} = {v}", a) for f, v, a in self.ranked(top)
        ]
        width = max([len(name) for name, _ in rows] + [7])
        what = self.label if self.label is not None else f"output {self.target}"
        lines = [
            f"{self.title} of {what} ({self.output}): prediction {self.prediction:.4g}, "
            f"base {self.base_value:.4g}"
        ]
        lines += [f"  {name:<{width}}  {a:+.4g}" for name, a in rows]
        return "\n".join(lines)

    def manifest(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready, with format version and library versions."""
        data = {k: getattr(self, k) for k in _FIELDS}
        return {
            "format": FEATURE_MANIFEST_FORMAT,
            "version": FEATURE_MANIFEST_VERSION,
            **_jsonable(data),
            "libraries": library_versions(),
        }

    def save(self, directory: str | Path, stem: str | None = None) -> dict[str, Path]:
        """Write ``STEM.npz`` (the values) and ``STEM.json`` (the manifest, last), each
        atomically; ``stem`` defaults to the method name. Returns the paths by kind."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        stem = _safe_stem(stem or self.method)
        paths = {"npz": out / f"{stem}.npz", "json": out / f"{stem}.json"}
        arrays = {"values": self.values}
        if self.all_values is not None:
            arrays["all_values"] = np.asarray(self.all_values, dtype=np.float64)
        write_atomically(paths["npz"], lambda p: np.savez_compressed(p, **arrays))
        manifest = self.manifest()
        manifest["files"] = {"arrays": paths["npz"].name}
        write_text_atomically(paths["json"], json.dumps(manifest, indent=2))
        return paths

    @classmethod
    def load(cls, path: str | Path) -> FeatureExplanation:
        """Read what :meth:`save` wrote, from its ``.json`` or ``.npz`` path."""
        manifest, arrays = read_saved(
            path, FEATURE_MANIFEST_FORMAT, FEATURE_MANIFEST_VERSION, "feature explanation"
        )
        return cls(
            **{k: manifest[k] for k in _FIELDS if k in manifest},
            values=arrays["values"],
            all_values=arrays.get("all_values"),
        )


class FeatureExplanations(Sequence[FeatureExplanation]):
    """The explanations of many rows of one table (same features, method and target rule), and
    their global summary."""

    def __init__(self, items: Sequence[FeatureExplanation]) -> None:
        self.items = list(items)
        if not self.items:
            raise InvalidParameterError("no explanation given")

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, i: int) -> FeatureExplanation: ...
    @overload
    def __getitem__(self, i: slice) -> list[FeatureExplanation]: ...
    def __getitem__(self, i: int | slice) -> FeatureExplanation | list[FeatureExplanation]:
        return self.items[i]

    def __iter__(self) -> Iterator[FeatureExplanation]:
        return iter(self.items)

    @property
    def features(self) -> list[str]:
        """The features' names."""
        return self.items[0].features

    @property
    def values(self) -> np.ndarray:
        """``(rows, F)``: each row's attributions for its target."""
        return np.stack([e.values for e in self.items])

    def importance(self) -> dict[str, float]:
        """Global importance: the mean ``|attribution|`` of each feature over the rows, largest
        first."""
        mean = np.abs(self.values).mean(0)
        order = np.argsort(-mean, kind="stable")
        return {self.features[i]: float(mean[i]) for i in order}

"""A recorded training run on disk: its layout, its table, and :func:`read_run`.

An :class:`~seethrough.training.ExplanationRecorder` writes, and the report and the dashboard
read, one run directory::

    OUT/run.json                 what was recorded (format "seethrough.training_run", version 1)
    OUT/probes.npz               images (N, H, W, 3) uint8 as the model sees them; masks (N, H, W)
    OUT/maps/epoch-0003.npz      one (N, H, W) float32 array per method (maps in [0, 1]),
                                 plus predicted (N,) int64 and confidence (N,) float32
    OUT/table.csv                epoch,image,method,metric,value (long format)
    OUT/table.parquet            the same table, when pyarrow is installed
                                 (pip install 'seethrough[parquet]')

Rows of the table: per probe and method ``pointing_game``, ``iou`` and ``energy`` (with masks);
per probe ``predicted``, ``confidence`` and ``correct`` (with labels) under method ``""``;
the user's metrics (``loss``, ``accuracy``...) and the recorder's own cost
``recorder_seconds`` with image ``""`` and method ``""``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._io import write_atomically, write_text_atomically
from ..errors import InvalidParameterError
from ..metrics import map_correlation

__all__ = [
    "RUN_FORMAT",
    "RUN_VERSION",
    "TABLE_COLUMNS",
    "Row",
    "Run",
    "read_run",
    "read_info",
    "read_table",
    "write_table",
    "maps_path",
    "MASK_METRICS",
    "PROBE_METRICS",
    "COST_METRIC",
    "DEFAULT_SETTLE",
    "settled_epoch",
    "mean_correlation",
]

RUN_FORMAT = "seethrough.training_run"
RUN_VERSION = 1
TABLE_COLUMNS = ("epoch", "image", "method", "metric", "value")
MASK_METRICS = ("pointing_game", "iou", "energy")
"""Per probe and method, when masks are given."""
PROBE_METRICS = ("predicted", "confidence", "correct")
"""Per probe, under method ``""`` (``correct`` only with labels)."""
COST_METRIC = "recorder_seconds"
"""The recorder's own seconds for an epoch (image ``""``, method ``""``)."""

DEFAULT_SETTLE = 0.9
"""Consecutive maps correlating above this (Pearson, mean over probes) count as settled."""

INFO_FILE = "run.json"
PROBES_FILE = "probes.npz"
MAPS_DIR = "maps"
TABLE_CSV = "table.csv"
TABLE_PARQUET = "table.parquet"
_PREDICTIONS = ("predicted", "confidence")


class Row(NamedTuple):
    """One value of the long table."""

    epoch: int
    image: str
    method: str
    metric: str
    value: float


def maps_path(out: str | os.PathLike[str], epoch: int) -> Path:
    """``OUT/maps/epoch-0003.npz``: where an epoch's maps are."""
    return Path(out) / MAPS_DIR / f"epoch-{int(epoch):04d}.npz"


def _format(value: float) -> str:
    """The shortest text that reads back as the same float (``repr``), ``nan`` for a gap."""
    return "nan" if math.isnan(value) else repr(float(value))


def write_table(out: str | os.PathLike[str], rows: Iterable[Row]) -> Path:
    """Write ``OUT/table.csv`` atomically, and ``table.parquet`` when pyarrow is installed (the
    ``[parquet]`` extra; without it a stale ``table.parquet`` is removed).

    Rows are sorted by epoch, image, method and metric, so a table does not depend on the
    order epochs were recorded in. Returns the CSV's path.
    """
    out = Path(out)
    ordered = sorted(rows, key=lambda r: (r.epoch, r.image, r.method, r.metric))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for r in ordered:
        writer.writerow([r.epoch, r.image, r.method, r.metric, _format(r.value)])
    path = write_text_atomically(out / TABLE_CSV, buffer.getvalue(), newline="")
    _write_parquet(out / TABLE_PARQUET, ordered)
    return path


def _write_parquet(path: Path, rows: Sequence[Row]) -> None:
    """The table as Parquet (the ``[parquet]`` extra: pyarrow). Without pyarrow the CSV is the
    table, and a Parquet file a run got earlier (where pyarrow was installed) is removed, so
    that the run never holds a table older than its CSV."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.unlink(missing_ok=True)
        return
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in TABLE_COLUMNS]
    types = [pa.int64(), pa.string(), pa.string(), pa.string(), pa.float64()]
    table = pa.table(
        {
            name: pa.array(list(col), type=t)
            for name, col, t in zip(TABLE_COLUMNS, columns, types, strict=True)
        }
    )
    write_atomically(path, lambda p: pq.write_table(table, str(p)))


def read_table(out: str | os.PathLike[str]) -> list[Row]:
    """The rows of ``OUT/table.csv`` (empty when there is no table yet)."""
    path = Path(out) / TABLE_CSV
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != TABLE_COLUMNS:
            raise InvalidParameterError(
                f"{path}: the header is {','.join(header)}, not {','.join(TABLE_COLUMNS)}"
            )
        rows = []
        for number, fields in enumerate(reader, start=2):
            if not fields:
                continue
            try:
                epoch, image, method, metric, value = fields
                rows.append(Row(int(epoch), image, method, metric, float(value)))
            except ValueError:
                raise InvalidParameterError(
                    f"{path}, line {number}: not epoch,image,method,metric,value: {fields}"
                ) from None
    return rows


def read_info(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``OUT/run.json``, checked to be a training run of a version this library reads."""
    path = Path(out) / INFO_FILE
    if not path.is_file():
        raise InvalidParameterError(f"{out}: not a training run (no {INFO_FILE})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameterError(f"{path}: not JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise InvalidParameterError(f"{path}: not a {RUN_FORMAT} file")
    if info.get("version") != RUN_VERSION:
        raise InvalidParameterError(
            f"{path}: version {info.get('version')!r}; this seethrough reads version {RUN_VERSION}"
        )
    return info


def write_info(out: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Write ``OUT/run.json`` atomically."""
    return write_text_atomically(Path(out) / INFO_FILE, json.dumps(info, indent=2) + "\n")


@dataclass
class Run:
    """A recorded run: ``run.json``, the table's rows, and the epochs' maps on demand.

    Attributes:
        path: the run directory.
        info: the content of ``run.json``.
        rows: every row of the table, sorted by epoch, image, method, metric.
    """

    path: Path
    info: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    @property
    def probes(self) -> list[str]:
        """The probe images' names, in order."""
        return list(self.info["probes"])

    @property
    def methods(self) -> list[str]:
        """The methods recorded, in order (the first one is the settling reference)."""
        return list(self.info["methods"])

    @property
    def labels(self) -> list[int | None]:
        """The class index of each probe, ``None`` where it was not given."""
        return list(self.info.get("labels") or [None] * len(self.probes))

    @property
    def has_masks(self) -> bool:
        """Whether ground-truth masks were given (so the mask metrics are in the table)."""
        return bool(self.info.get("has_masks"))

    @property
    def epochs(self) -> list[int]:
        """Every epoch with a row in the table, ascending."""
        return sorted({r.epoch for r in self.rows})

    @property
    def map_epochs(self) -> list[int]:
        """Every epoch whose maps are on disk, ascending."""
        folder = self.path / MAPS_DIR
        found = []
        for p in folder.glob("epoch-*.npz") if folder.is_dir() else []:
            try:
                found.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(found)

    def maps(self, epoch: int) -> dict[str, np.ndarray]:
        """An epoch's arrays: one ``(N, H, W)`` map per method, ``predicted``, ``confidence``."""
        path = maps_path(self.path, epoch)
        if not path.is_file():
            raise InvalidParameterError(
                f"epoch {epoch} has no maps in {self.path} (recorded: {self.map_epochs})"
            )
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def probe_images(self) -> np.ndarray:
        """The probes as the model sees them: ``(N, H, W, 3)`` uint8."""
        with np.load(self.path / PROBES_FILE, allow_pickle=False) as data:
            return data["images"]

    def probe_masks(self) -> np.ndarray | None:
        """The ground-truth masks ``(N, H, W)`` bool, or ``None`` when none were given."""
        with np.load(self.path / PROBES_FILE, allow_pickle=False) as data:
            return data["masks"] if "masks" in data.files else None

    def metrics(self) -> list[str]:
        """Every metric name in the table, in first-seen order."""
        return list(dict.fromkeys(r.metric for r in self.rows))

    def series(self, metric: str, method: str = "", image: str = "") -> dict[int, float]:
        """``{epoch: value}`` of one metric for one image and method (``""`` for run-wide)."""
        return {
            r.epoch: r.value
            for r in self.rows
            if r.metric == metric and r.method == method and r.image == image
        }

    def mean_series(self, metric: str, method: str = "") -> dict[int, float]:
        """``{epoch: mean over the probes}`` of a per-probe metric (NaN values skipped)."""
        values: dict[int, list[float]] = {}
        for r in self.rows:
            if r.metric == metric and r.method == method and r.image and not math.isnan(r.value):
                values.setdefault(r.epoch, []).append(r.value)
        return {epoch: float(np.mean(v)) for epoch, v in sorted(values.items())}

    def correlations(self, method: str | None = None) -> dict[int, float]:
        """``{epoch: Pearson correlation of its maps with the previous recorded epoch's}``.

        Mean over the probes, for ``method`` (default: the first method). The first recorded
        epoch has no entry.
        """
        method = self.methods[0] if method is None else method
        result: dict[int, float] = {}
        previous = None
        for epoch in self.map_epochs:
            maps = self.maps(epoch).get(method)
            if maps is None:
                previous = None
                continue
            if previous is not None:
                result[epoch] = mean_correlation(previous, maps)
            previous = maps
        return result

    def settled_epoch(self, settle: float | None = None, method: str | None = None) -> int | None:
        """The first epoch after which consecutive maps correlate above ``settle`` to the
        end (default: the threshold the run was recorded with); see :func:`settled_epoch`."""
        settle = float(self.info.get("settle", DEFAULT_SETTLE)) if settle is None else settle
        return settled_epoch(self.map_epochs, self.correlations(method), settle)


def mean_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the probes of the Pearson correlation of two ``(N, H, W)`` stacks of maps
    (:func:`seethrough.metrics.map_correlation`: two constant maps 1, one constant 0)."""
    return float(np.mean([map_correlation(x, y)[0] for x, y in zip(a, b, strict=True)]))


def settled_epoch(
    epochs: Sequence[int], correlations: Mapping[int, float], settle: float = DEFAULT_SETTLE
) -> int | None:
    """The epoch after which attention settled, from consecutive maps' correlations.

    ``epochs`` are the recorded epochs and ``correlations[e]`` the correlation (Pearson, mean
    over the probes) of epoch ``e``'s maps with those of the recorded epoch before it. The
    result is the first recorded epoch ``s`` such that every later pair correlates above
    ``settle``: from ``s`` on, the maps no longer move. ``None`` when the last pair does not
    (or there is no pair yet). A stopping hint, not a proof.

    Example:
        >>> settled_epoch([0, 1, 2, 3], {1: 0.2, 2: 0.95, 3: 0.97}, settle=0.9)
        1
    """
    ordered = sorted(epochs)
    settled = None
    for previous, epoch in zip(ordered[:-1], ordered[1:], strict=True):
        if correlations.get(epoch, -math.inf) > settle:
            if settled is None:
                settled = previous
        else:
            settled = None
    return settled


def read_run(out: str | os.PathLike[str]) -> Run:
    """Read the run directory ``out`` that an ``ExplanationRecorder`` wrote.

    Raises:
        InvalidParameterError: ``out`` holds no training run, or one of another version.
    """
    path = Path(out)
    return Run(path=path, info=read_info(path), rows=read_table(path))

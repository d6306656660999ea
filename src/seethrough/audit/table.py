"""The audit's table on disk: parts written one batch at a time, merged at the end.

Each batch of rows is one JSON-lines file ``RUN/parts/part-TIME-RANDOM.jsonl``, written under
a temporary name and renamed (:func:`~seethrough._io.write_atomically`): a part is whole or
absent, never half written, so a run killed at any moment loses at most the batch in flight.
:func:`finished` reads the parts back to say which (item, method) pairs are done (a rerun skips
them); :func:`merge` writes all rows, sorted by item and method and without duplicates, to
``RUN/table.csv`` and, where pyarrow is installed (the ``parquet`` extra), ``RUN/table.parquet``.
"""

from __future__ import annotations

import csv
import json
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._io import is_temporary, write_atomically, write_text_atomically

__all__ = ["write_part", "read_parts", "finished", "merge", "read_table", "PARTS", "MANIFEST"]

PARTS = "parts"
"""The folder of the run that holds the parts."""
MANIFEST = "audit.json"
"""The run folder's manifest: the spec, the data source and the state."""


def write_part(run: str | Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """Write ``rows`` as one new part of ``run`` (atomically); ``None`` for no rows."""
    if not rows:
        return None
    folder = Path(run) / PARTS
    folder.mkdir(parents=True, exist_ok=True)
    # named by the clock, so that the names sort in writing order without listing the folder
    path = folder / f"part-{time.time_ns():020d}-{secrets.token_hex(3)}.jsonl"
    text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows)
    return write_text_atomically(path, text)


def read_parts(run: str | Path) -> list[dict[str, Any]]:
    """Every row of ``run``'s parts, first written first; a duplicate (item, method) keeps
    its first row."""
    folder = Path(run) / PARTS
    if not folder.is_dir():
        return []
    rows, seen = [], set()
    for path in sorted(p for p in folder.glob("part-*.jsonl") if not is_temporary(p)):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = (row["id"], row["method"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def finished(run: str | Path) -> set[tuple[str, str]]:
    """The (item id, method) pairs ``run`` has rows for."""
    return {(r["id"], r["method"]) for r in read_parts(run)}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _arrow_table(rows: Sequence[dict[str, Any]], schema: Sequence[tuple[str, str]]) -> Any:
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    arrays = {}
    for name, kind in schema:
        values = [r.get(name) for r in rows]
        if kind == "float64":
            values = [math.nan if v is None else float(v) for v in values]
        arrays[name] = pa.array(values, type=types[kind])
    return pa.table(arrays)


def merge(run: str | Path, schema: Sequence[tuple[str, str]]) -> dict[str, Path]:
    """Write every row of ``run`` to ``table.csv`` (and ``table.parquet`` with pyarrow).

    Args:
        run: the run folder.
        schema: the ``(column, type)`` pairs (types: ``string``, ``int64``, ``float64``).

    Returns:
        The paths written, by format (``csv``, ``parquet``).
    """
    run = Path(run)
    rows = sorted(read_parts(run), key=lambda r: (r["id"], r["method"]))
    names = [n for n, _ in schema]

    def write_csv(p: Path) -> None:
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            w.writerows([_cell(r.get(n)) for n in names] for r in rows)

    paths = {"csv": write_atomically(run / "table.csv", write_csv)}
    try:
        import pyarrow.parquet as pq
    except ImportError:  # the parquet extra is not installed: CSV alone
        return paths
    table = _arrow_table(rows, schema)
    paths["parquet"] = write_atomically(run / "table.parquet", lambda p: pq.write_table(table, p))
    return paths


def read_table(run: str | Path, schema: Iterable[tuple[str, str]] | None = None) -> list[dict]:
    """The merged table of ``run`` as typed rows: from ``table.parquet`` when there is one,
    else from ``table.csv`` (typed by ``schema``; empty cells as ``None``, NaN for numbers).
    """
    run = Path(run)
    parquet = run / "table.parquet"
    if parquet.is_file():
        import pyarrow.parquet as pq

        return pq.read_table(parquet).to_pylist()
    kinds = dict(schema or {})
    with (run / "table.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: _typed(v, kinds.get(k, "string")) for k, v in r.items()} for r in rows]


def _typed(text: str, kind: str) -> Any:
    if kind == "float64":
        return float(text) if text else math.nan
    if text == "":
        return None
    return int(text) if kind == "int64" else text

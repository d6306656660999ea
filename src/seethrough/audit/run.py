"""Run an audit into a folder: resumable, safe to interrupt, one table at the end.

The run folder holds ``audit.json`` (the spec and the state: running, finished, interrupted),
``parts/`` (one file per finished batch, see :mod:`~seethrough.audit.table`), ``maps/`` (one
``.npz`` per map), and at the end ``table.csv``, ``table.parquet`` and ``summary.html``.
Rerunning into the same folder skips the (item, method) pairs already there; a different model,
metric set or parameters is refused (their rows would not compare).

SIGINT (Ctrl-C) and SIGTERM stop the run between two writes: the batch in flight is dropped
whole (its part is never half written), the table is merged from the finished parts, and
:class:`~seethrough.errors.CancelledError` says how far the run got.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._io import is_temporary, write_text_atomically
from ..errors import CancelledError, InvalidParameterError
from ..models import VisionModel
from .engine import Engine, LocalEngine
from .items import Item, load_items
from .table import MANIFEST, finished, merge, write_part
from .worker import AuditSpec, columns

__all__ = ["audit", "AuditResult"]


@dataclass
class AuditResult:
    """What :func:`audit` did.

    Attributes:
        out: the run folder.
        items: the items of the data source (after limit and shuffle).
        skipped: the (item, method) pairs found finished and not recomputed.
        rows: the rows written by this call.
        errors: how many of them carry an error.
        seconds: the call's wall time.
        paths: the files written (``csv``, ``parquet``, ``html``).
    """

    out: Path
    items: list[Item]
    skipped: int
    rows: int
    errors: int
    seconds: float
    paths: dict[str, Path]


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Within: SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Within: SIGINT and SIGTERM are ignored (the table is being written after a stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _sweep_temporary(out: Path) -> None:
    """Remove the temporary files of writes a stop cut short: an interrupt that lands between a
    temporary file's creation and its write's own cleanup would leave one behind."""
    for path in out.rglob(".*"):
        if path.is_file() and is_temporary(path):
            path.unlink(missing_ok=True)


def _manifest(out: Path, spec: AuditSpec, source: str, status: str) -> None:
    data = {"status": status, "source": source, "spec": spec.as_dict()}
    write_text_atomically(out / MANIFEST, json.dumps(data, indent=2, default=str) + "\n")


def _check_resume(out: Path, spec: AuditSpec) -> None:
    path = out / MANIFEST
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))["spec"]
        before = AuditSpec(**{k: v for k, v in old.items() if k in AuditSpec.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidParameterError(f"{path} is not an audit manifest: {exc}") from None
    was, now = before.identity(), spec.identity()
    changed = [k for k in now if was.get(k) != now[k]]
    if changed:
        raise InvalidParameterError(
            f"{out} holds an audit with another {', '.join(changed)}; its rows would not "
            "compare: choose another --out"
        )


def audit(
    data: str | Path | Sequence[Item],
    spec: AuditSpec,
    out: str | Path,
    *,
    engine: Engine | None = None,
    model: VisionModel | None = None,
    limit: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    report: bool = True,
    progress: Callable[[int, int], object] | None = None,
) -> AuditResult:
    """Audit a data set: every item with every method of ``spec``, into the folder ``out``.

    Args:
        data: a data source (see :func:`~seethrough.audit.load_items`) or a list of items.
        spec: what to compute (its ``out`` is set to ``out``).
        out: the run folder (created; an existing run there is resumed).
        engine: how to run the work (default: :class:`~seethrough.audit.LocalEngine`).
        model: an already loaded model for the default engine.
        limit: audit the first ``limit`` items (after shuffling).
        shuffle: shuffle the items with ``seed`` first.
        seed: the shuffle's seed.
        report: write ``summary.html`` at the end.
        progress: ``progress(done, total)`` in items of this call, after each batch.

    Returns:
        What was done (:class:`AuditResult`).

    Raises:
        InvalidParameterError: a bad source, an ``out`` that is a file or holds another audit.
        CancelledError: SIGINT or SIGTERM stopped the run; the table holds every finished
            batch, and rerunning the same call goes on where it stopped.
    """
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"--out {out} is a file, not a folder")
    spec = replace(spec, out=str(out))
    _check_resume(out, spec)
    if isinstance(data, (str, Path)):
        items, source = load_items(data, limit=limit, shuffle=shuffle, seed=seed), str(data)
    else:
        items, source = list(data)[:limit], "items"
    out.mkdir(parents=True, exist_ok=True)
    done = finished(out)
    groups: dict[tuple[str, ...], list[Item]] = {}
    for item in items:
        todo = tuple(m for m in spec.methods if (item.id, m) not in done)
        if todo:
            groups.setdefault(todo, []).append(item)
    skipped = sum((i.id, m) in done for i in items for m in spec.methods)
    engine = engine or LocalEngine(model)
    total = sum(len(g) for g in groups.values())
    counts = {"items": 0, "rows": 0, "errors": 0}
    schema = columns(spec.metrics)

    def on_rows(rows: list[dict[str, Any]]) -> None:
        write_part(out, rows)
        counts["items"] += len({r["id"] for r in rows})
        counts["rows"] += len(rows)
        counts["errors"] += sum(1 for r in rows if r.get("error"))
        if progress is not None:
            progress(counts["items"], total)

    _manifest(out, spec, source, "running")
    if progress is not None:
        progress(0, total)
    try:
        with _signals_raise():
            for methods, group in groups.items():
                engine.run(replace(spec, methods=methods), group, on_rows)
    except KeyboardInterrupt:
        with _signals_held():
            _sweep_temporary(out)
            merge(out, schema)
            _manifest(out, spec, source, "interrupted")
        left = total - counts["items"]
        raise CancelledError(
            f"audit interrupted: {counts['items']} of {total} items done this run, {left} left; "
            f"{out / 'table.csv'} holds every finished row: run the same command again to go on"
        ) from None
    except BaseException:
        with _signals_held():
            _sweep_temporary(out)
            merge(out, schema)
            _manifest(out, spec, source, "failed")
        raise
    with _signals_held():
        paths = merge(out, schema)
        _manifest(out, spec, source, "finished")
    if report:
        from .report import write_summary

        paths["html"] = write_summary(out)
    return AuditResult(
        out, items, skipped, counts["rows"], counts["errors"], time.perf_counter() - start, paths
    )

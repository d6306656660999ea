"""Data-set audits: every image of a data set explained by each method, scored, in one table.

- :func:`load_items`: a folder (recursive), the images + masks or Pascal VOC layout, or a CSV of
  paths (optional ``label`` and ``mask`` columns) as a list of :class:`Item`;
- :class:`AuditSpec` and :class:`Worker`: what to compute, and the worker that computes the rows
  of a batch of items (the model loaded once);
- :class:`Engine`, :class:`LocalEngine`, :func:`get_engine`: where the work runs;
- :func:`audit`: the whole run into a folder, resumable and safe to interrupt, with
  ``table.csv``, ``table.parquet`` and ``summary.html`` (:func:`write_summary`).
- :func:`spurious`: the spurious-correlation finder, the classes decided from the background.

Example:
    >>> from seethrough.audit import AuditSpec, audit
    >>> spec = AuditSpec("synthetic_digits", ("gradcam",), ("pointing_game",))
    >>> result = audit("data/", spec, "runs/audit1")  # doctest: +SKIP
"""

from .engine import ENGINES, Engine, LocalEngine, get_engine
from .items import Item, load_items, read_image, read_mask, register_frames
from .report import AuditRun, load_run, write_summary
from .run import AuditResult, audit
from .spurious import SpuriousResult, spurious
from .table import MANIFEST, merge, read_table
from .worker import COLUMNS, MASK_METRICS, TARGETS, AuditSpec, Worker, columns

__all__ = [
    "Item",
    "load_items",
    "read_image",
    "read_mask",
    "register_frames",
    "AuditSpec",
    "Worker",
    "COLUMNS",
    "MASK_METRICS",
    "TARGETS",
    "columns",
    "Engine",
    "LocalEngine",
    "ENGINES",
    "get_engine",
    "audit",
    "AuditResult",
    "MANIFEST",
    "merge",
    "read_table",
    "AuditRun",
    "load_run",
    "write_summary",
    "spurious",
    "SpuriousResult",
]

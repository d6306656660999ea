"""Evaluate explanations on data with ground truth, compare models, and table each method's cost.

- :func:`load_folder` reads images with object masks (a simple images/ + masks/ layout, or
  Pascal VOC);
- :func:`evaluate` explains every image with every method on every model and scores the maps
  (IoU, pointing game, energy pointing game, deletion and insertion AUC) next to two baselines;
- :func:`write_report` writes the summary as CSV, Markdown and a self-contained HTML page;
- :func:`cost_table` times every method on one image, in seconds and in model evaluations.
"""

from .cost import Cost, cost_table, forward_seconds
from .data import FolderDataset, Sample, load_folder
from .report import to_csv, to_html, to_markdown, write_report
from .runner import BASELINES, DEFAULT_METRICS, METRICS, Evaluation, Record, Summary, evaluate

__all__ = [
    "Sample",
    "FolderDataset",
    "load_folder",
    "evaluate",
    "Evaluation",
    "Record",
    "Summary",
    "METRICS",
    "DEFAULT_METRICS",
    "BASELINES",
    "to_csv",
    "to_markdown",
    "to_html",
    "write_report",
    "Cost",
    "cost_table",
    "forward_seconds",
]

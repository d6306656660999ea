"""``seethrough tabular``: explain one row of a CSV file with a model file (ONNX, skops or
TorchScript; never a pickle).

The CSV file's header names the columns; a column is numeric when every value parses as a
number, else categorical. The background is a seeded sample of the file's rows.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from .. import errors
from ..attribution import FeatureExplanation
from ..tabular import MAX_BACKGROUND, explain_tabular, load_tabular_model
from ..tabular.files import TabularModel
from ._shared import app, check_output_folder, console, err_console, parse_params

__all__ = ["tabular_cmd", "read_csv", "CsvTable"]


@dataclass
class CsvTable:
    """A CSV file's rows: ``values`` ``(n, d)`` (float64 when every column is numeric, else
    ``object`` with floats in the numeric columns and text in the others)."""

    columns: list[str]
    values: np.ndarray
    categorical: list[str]


def read_csv(path: Path, label_column: str | None = None) -> CsvTable:
    """The table in ``path`` (header = column names), without ``label_column`` if present.

    Raises:
        InvalidInputError: an unreadable or empty file, a row with another number of values,
            an empty value (naming the column and line).
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise errors.InvalidInputError(f"cannot read '{path}': {exc}") from None
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if len(lines) < 2:
        raise errors.InvalidInputError(f"'{path}' has no header and rows of values")
    header = [name.strip() for name in lines[0]]
    if len(set(header)) != len(header) or not all(header):
        raise errors.InvalidInputError(f"'{path}': the header needs distinct, non-empty names")
    cells = []
    for number, line in enumerate(lines[1:], 2):
        if len(line) != len(header):
            raise errors.InvalidInputError(
                f"'{path}' line {number}: {len(line)} values for {len(header)} columns"
            )
        for name, cell in zip(header, line, strict=True):
            if not cell.strip():
                raise errors.InvalidInputError(f"'{path}' line {number}: column '{name}' is empty")
        cells.append([cell.strip() for cell in line])
    keep = [j for j, name in enumerate(header) if name != label_column]
    columns = [header[j] for j in keep]
    text = np.array(cells, dtype=object)[:, keep]
    values = np.empty(text.shape, dtype=object)
    categorical = []
    for j, name in enumerate(columns):
        numbers = [_number(v) for v in text[:, j]]
        if all(v is not None for v in numbers):
            values[:, j] = numbers
        else:
            values[:, j] = text[:, j]
            categorical.append(name)
    if not categorical:
        values = values.astype(np.float64)
    return CsvTable(columns, values, categorical)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _check_fit(model: TabularModel, table: CsvTable, data: Path) -> None:
    """The table's columns against what the model file says it takes."""
    if model.columns is not None and model.columns != table.columns:
        missing = [c for c in model.columns if c not in table.columns]
        extra = [c for c in table.columns if c not in model.columns]
        if missing:
            why = f"has no column '{missing[0]}'"
        elif extra:
            why = f"has the column '{extra[0]}', which the model was not fitted on"
        else:
            why = "has the model's columns in another order"
        raise errors.InvalidInputError(
            f"'{data}' {why} (the model takes {', '.join(model.columns)}); "
            "--label-column drops the target column"
        )
    if model.n_features is not None and model.n_features != len(table.columns):
        raise errors.InvalidInputError(
            f"'{data}' has {len(table.columns)} columns and the model takes "
            f"{model.n_features}; --label-column drops the target column"
        )
    if model.numeric_only and table.categorical:
        name = table.categorical[0]
        j = table.columns.index(name)
        sample = next(v for v in table.values[:, j] if _number(str(v)) is None)
        raise errors.InvalidInputError(
            f"'{data}': column '{name}' holds '{sample}', not a number, and a {model.kind} "
            "model takes numbers only"
        )


@app.command("tabular")
def tabular_cmd(
    model: Annotated[
        Path, typer.Argument(help="The model file: .onnx, .skops or TorchScript (no pickles).")
    ],
    data: Annotated[Path, typer.Argument(help="CSV file with a header of column names.")],
    row: Annotated[int, typer.Option("--row", help="The row to explain (0 = the first).")],
    target: Annotated[
        str | None,
        typer.Option(help="Output index or class label (default: the row's top output)."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="kernelshap, exact_shapley, permutation_shap, lime or tree_shap "
            "(tree_shap: a .skops tree ensemble)."
        ),
    ] = "kernelshap",
    background: Annotated[
        int, typer.Option(help="Background rows, a seeded sample of the file's rows.")
    ] = MAX_BACKGROUND,
    label_column: Annotated[
        str | None, typer.Option(help="A column to drop when present (the target).")
    ] = None,
    top: Annotated[int, typer.Option(help="Features shown in the table.")] = 10,
    seed: Annotated[int, typer.Option(help="Seeds the background sample and the method.")] = 0,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Method parameter NAME=VALUE (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the explanation (JSON + NPZ) and a bar plot in this folder."),
    ] = None,
) -> None:
    """Explain one row of a CSV file: each column's share of the model's output, ranked.

    MODEL is an ONNX file, a scikit-learn model saved with skops.io (.skops) or a TorchScript
    file, each checked before it runs; pickle and joblib files are refused unread."""
    params = parse_params(param or [])
    for name, value, least in (("--background", background, 1), ("--top", top, 1)):
        if value < least:
            raise errors.InvalidParameterError(f"{name} must be >= {least}, got {value}")
    if out is not None:
        check_output_folder(out)
    table = read_csv(data, label_column)
    if not 0 <= row < len(table.values):
        raise errors.InvalidParameterError(
            f"--row {row}: '{data}' has {len(table.values)} rows (0 to {len(table.values) - 1})"
        )
    loaded = load_tabular_model(model)
    _check_fit(loaded, table, data)
    explained = explain_tabular(
        loaded.model if method == "tree_shap" and loaded.model is not None else loaded,
        table.values,
        table.values[row],
        method,
        target=int(target) if target is not None and target.lstrip("-").isdigit() else target,
        feature_names=table.columns,
        categorical=table.categorical,
        seed=seed,
        max_background=background,
        **params,
    )
    assert isinstance(explained, FeatureExplanation)  # one row: one explanation
    console.print(f"model: {loaded.describe()}", markup=False, soft_wrap=True)
    console.print(f"row {row} of {data}", markup=False, soft_wrap=True)
    console.print(explained.table(top), markup=False, soft_wrap=True)
    if out is None:
        return
    stem = f"row{row}-{explained.method}"
    paths = explained.save(out, stem)
    written = [paths["json"].name, paths["npz"].name]
    figure = _bar_plot(explained, top, out / f"{stem}.png")
    if figure is not None:
        written.append(figure.name)
    console.print(f"wrote {out}/ ({', '.join(written)})", markup=False, soft_wrap=True)


def _bar_plot(explained: FeatureExplanation, top: int, path: Path) -> Path | None:
    """The bar plot of the explanation, when the installed seethrough has one."""
    try:
        from ..viz import features as views
        from ..viz import save_figure
    except ImportError:
        err_console.print("no bar plot: this seethrough has no feature views", markup=False)
        return None
    return save_figure(views.bar_plot(explained, top=top), path)

"""The columns of a table: their names, which are categorical, how they group into features, and
every row checked against them before the model sees it.

Rows are kept as a 2-D numpy array (float64 when every column is numeric, else ``object``) and
handed to the model the way the user's data came: a pandas DataFrame with the same columns and
dtypes, or an array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError, InvalidParameterError, suggest

__all__ = ["Table", "ColumnRef"]

ColumnRef = int | str
"""A column by position or by name."""


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "dtypes") and hasattr(data, "iloc")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


@dataclass
class Table:
    """How a table's columns become features.

    Attributes:
        columns: the column names.
        categorical: positions of the categorical columns (values compared for equality only;
            any hashable value).
        features: the features' names: a column's name, or a group's.
        groups: each feature's columns (one column, or a group such as a one-hot encoding).
        categories: each categorical column's values seen in the background.
        frame_dtypes: the DataFrame dtypes rows go to the model with (``None``: an array).
    """

    columns: list[str]
    categorical: set[int]
    features: list[str]
    groups: list[list[int]]
    categories: dict[int, list[Any]] = field(default_factory=dict)
    frame_dtypes: Any = None

    # ---------------------------------------------------------------------------- building

    @classmethod
    def from_background(
        cls,
        background: Any,
        *,
        feature_names: Sequence[str] | None = None,
        categorical: Sequence[ColumnRef] | None = None,
        groups: Mapping[str, Sequence[ColumnRef]] | None = None,
    ) -> tuple[Table, np.ndarray]:
        """The table of ``background`` (an ``(n, d)`` array or DataFrame) and its rows checked.

        Args:
            background: the rows that stand for "a feature unknown".
            feature_names: the column names (default: a DataFrame's, else ``x0, x1, ...``).
            categorical: categorical columns by position or name (default: a DataFrame's
                non-numeric columns, or for an array of objects the columns holding a string).
            groups: named groups of columns that are one feature each (a one-hot encoding);
                columns in no group are a feature each, in table order.
        """
        frame = _is_frame(background)
        array = _as_2d(background.to_numpy(dtype=object) if frame else background, "background")
        d = array.shape[1]
        if frame:
            names = [str(c) for c in background.columns]
            if feature_names is not None:
                raise InvalidParameterError("feature_names: a DataFrame's columns name them")
        else:
            names = (
                [f"x{i}" for i in range(d)]
                if feature_names is None
                else [str(n) for n in feature_names]
            )
        if len(names) != d or len(set(names)) != d:
            raise InvalidParameterError(
                f"feature_names: {len(names)} names ({len(set(names))} distinct) for {d} columns"
            )
        table = cls(names, set(), [], [])
        if categorical is None:
            cats = {
                j
                for j in range(d)
                if (frame and not _numeric_dtype(background.dtypes.iloc[j]))
                or (
                    not frame
                    and array.dtype.kind not in "biuf"
                    and any(not _is_number(v) for v in array[:, j])
                )
            }
        else:
            cats = {table.position(c) for c in categorical}
        table.categorical = cats
        grouped: dict[int, str] = {}
        named: dict[str, list[int]] = {}
        for name, members in (groups or {}).items():
            cols = [table.position(c) for c in members]
            if not cols:
                raise InvalidParameterError(f"groups: group {name!r} has no column")
            for c in cols:
                if c in grouped:
                    raise InvalidParameterError(
                        f"groups: column {names[c]!r} is in {grouped[c]!r} and {name!r}"
                    )
                grouped[c] = str(name)
            named[str(name)] = cols
        seen: set[str] = set()
        for j in range(d):
            if j not in grouped:
                table.features.append(names[j])
                table.groups.append([j])
            elif grouped[j] not in seen:
                seen.add(grouped[j])
                table.features.append(grouped[j])
                table.groups.append(named[grouped[j]])
        if len(set(table.features)) != len(table.features):
            raise InvalidParameterError("groups: a group has the name of a column outside it")
        if frame:
            table.frame_dtypes = background.dtypes
        rows = table.check(array, "background", known=False)
        table.categories = {j: list(dict.fromkeys(rows[:, j].tolist())) for j in sorted(cats)}
        return table, rows

    def position(self, column: ColumnRef) -> int:
        """A column's position from its position or name."""
        if isinstance(column, (int, np.integer)) and not isinstance(column, bool):
            if not 0 <= column < len(self.columns):
                raise InvalidParameterError(
                    f"column {column} is out of range: the table has {len(self.columns)} columns"
                )
            return int(column)
        if column in self.columns:
            return self.columns.index(str(column))
        raise InvalidParameterError(
            f"unknown column {column!r}.{suggest(str(column), self.columns)}"
        )

    # ---------------------------------------------------------------------------- checking

    @property
    def numeric(self) -> bool:
        """Whether every column is numeric (rows are then float64)."""
        return not self.categorical

    def check(self, data: Any, what: str = "row", *, known: bool = True) -> np.ndarray:
        """``data`` (one row or ``(n, d)`` rows; an array, a list, a DataFrame or Series, or a
        mapping of column names to values) as checked 2-D rows.

        Raises:
            InvalidInputError: another number of columns, a missing or NaN value, a value that
                is not a number in a numeric column, or (with ``known``) a category the
                background does not have, each naming the column.
        """
        if isinstance(data, Mapping):
            missing = [c for c in self.columns if c not in data]
            if missing:
                raise InvalidInputError(f"{what}: no value for column {missing[0]!r}")
            data = [data[c] for c in self.columns]
        elif _is_frame(data):
            given = [str(c) for c in data.columns]
            if given != self.columns:
                raise InvalidInputError(
                    f"{what}: its columns {given} are not the table's {self.columns}"
                )
            data = data.to_numpy(dtype=object)
        elif hasattr(data, "index") and hasattr(data, "to_numpy"):  # a pandas Series: one row
            data = data.to_numpy(dtype=object)
        rows = _as_2d(data, what)
        if rows.shape[1] != len(self.columns):
            raise InvalidInputError(
                f"{what}: {rows.shape[1]} columns, but the table has {len(self.columns)} "
                f"({', '.join(self.columns[:6])}{', ...' if len(self.columns) > 6 else ''})"
            )
        out = np.empty(rows.shape, dtype=np.float64 if self.numeric else object)
        for j, name in enumerate(self.columns):
            column = rows[:, j]
            if j in self.categorical:
                for i, v in enumerate(column):
                    if v is None or (isinstance(v, float) and math.isnan(v)):
                        raise InvalidInputError(f"{what}: column {name!r} is missing in row {i}")
                    if known and v not in self.categories[j]:
                        values = ", ".join(map(str, self.categories[j][:8]))
                        raise InvalidInputError(
                            f"{what}: column {name!r} has the category {v!r}, which the "
                            f"background does not have ({values})"
                        )
                out[:, j] = column
                continue
            if column.dtype.kind not in "biuf":  # objects: each must be a number
                for i, v in enumerate(column):
                    if not _is_number(v) and not isinstance(v, (bool, np.bool_)):
                        raise InvalidInputError(
                            f"{what}: column {name!r} holds {v!r} in row {i}, not a number"
                        )
            numbers = column.astype(np.float64)
            bad = ~np.isfinite(numbers)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InvalidInputError(f"{what}: column {name!r} is {numbers[i]} in row {i}")
            out[:, j] = numbers
        return out

    def shown(self, row: np.ndarray) -> list[str]:
        """Each feature's value in ``row`` as text (a group: its columns that are set, or all)."""
        texts = []
        for cols in self.groups:
            if len(cols) == 1:
                texts.append(_text(row[cols[0]]))
                continue
            on = [self.columns[c] for c in cols if _is_number(row[c]) and row[c] == 1]
            texts.append(
                ", ".join(on)
                if on
                else ", ".join(f"{self.columns[c]}={_text(row[c])}" for c in cols)
            )
        return texts

    def to_model(self, rows: np.ndarray) -> Any:
        """Rows as the model takes them: a DataFrame like the background's, or the array."""
        if self.frame_dtypes is None:
            return rows
        import pandas as pd

        frame = pd.DataFrame(rows, columns=self.columns)
        return frame.astype(dict(zip(self.columns, self.frame_dtypes, strict=True)))


def _numeric_dtype(dtype: Any) -> bool:
    kind = getattr(dtype, "kind", "O")
    return kind in "biuf"


def _text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _as_2d(data: Any, what: str) -> np.ndarray:
    """``data`` as a 2-D array: numeric arrays keep their dtype, anything else is ``object``."""
    if isinstance(data, np.ndarray) and data.dtype.kind in "biuf":
        array = data
    else:
        try:
            array = np.asarray(data, dtype=object)
        except Exception as exc:  # ragged lists
            raise InvalidInputError(f"{what}: not a table of rows ({exc})") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"{what}: expected rows of values, got shape {array.shape}")
    return array

"""CSV tables with a header row, read into float columns."""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from ..errors import InvalidInputError


def read_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a CSV file with a header row into float columns (blank cells become NaN).

    Raises InvalidInputError for a missing or empty file, a file without data rows, or a
    cell that is neither blank nor a number (the message names row and column).
    """
    path = os.fspath(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [r for r in reader if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"{path}: cannot read CSV: {exc}") from None
    if not header:
        raise InvalidInputError(f"{path}: empty file (no header row)")
    if not rows:
        raise InvalidInputError(f"{path}: no data rows")
    names = [h.strip() for h in header]
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        values = np.empty(len(rows))
        for i, row in enumerate(rows):
            cell = row[j].strip() if j < len(row) else ""
            if not cell:
                values[i] = math.nan
                continue
            try:
                values[i] = float(cell)
            except ValueError:
                raise InvalidInputError(
                    f"{path}: row {i + 2}, column {name!r}: {cell!r} is not a number"
                ) from None
        columns[name] = values
    return columns

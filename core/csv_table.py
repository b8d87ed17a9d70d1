"""An uploaded CSV parsed in bounded memory: rows are read a chunk at a time into arrays allocated
once (from a count of the file's lines). The target column is parsed as numbers while it can be,
keeping the first text of each distinct value (at most `max_classes`) to name classes by; a
target that is not numeric is kept as interned text (a class label repeats). Reading the whole
file into Python lists first cost 13x the file here (22x in RSS); this stays under 4x
(`bench/csv_memory.py`).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

CHUNK_ROWS = 2048


class CsvError(ValueError):
    """What is wrong with the file; core.datasets turns it into a DatasetError."""


@dataclass
class Target:
    """The target column: `numbers` while every value so far parsed as a number, else `texts`.
    `names` maps each distinct number to its first text, or is None past `limit` distinct values."""

    numbers: np.ndarray | None
    limit: int
    texts: list[str] | None = None
    names: dict[float, str] | None = field(default_factory=dict)

    def add(self, start: int, values: list[str]) -> None:
        if self.numbers is not None:
            try:
                chunk = np.array(values, dtype=np.float64)
            except ValueError:
                self._to_text(start)
            else:
                self.numbers[start : start + len(values)] = chunk
                self._name(chunk, values)
                return
        self.texts = self.texts if self.texts is not None else []
        self.texts.extend(sys.intern(v) for v in values)

    def _name(self, chunk: np.ndarray, values: list[str]) -> None:
        if self.names is None:
            return
        distinct, first = np.unique(chunk, return_index=True)
        for value, i in zip(distinct.tolist(), first.tolist(), strict=True):
            self.names.setdefault(value, values[i])
        if len(self.names) > self.limit:
            self.names = None  # a regression target, or too many classes either way

    def _to_text(self, rows: int) -> None:
        """A value that is not a number: the rows so far become text again, through `names`."""
        if self.numbers is None or self.names is None:
            raise CsvError(
                f"the target column is not numeric and has over {self.limit} distinct values"
            )
        names = self.names
        self.texts = [
            names.get(v, str(v)) for v in self.numbers[:rows].tolist()
        ]  # str(): NaN is not its own key
        self.numbers = None


def _rows(data: bytes) -> Iterator[list[str]]:
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    try:
        for row in csv.reader(stream):
            if row:
                yield row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CsvError(f"not a UTF-8 CSV file: {exc}") from exc


def read_table(
    data: bytes,
    target: str | None,
    max_columns: int,
    max_classes: int,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[list[str], str, np.ndarray, Target]:
    """(feature names, target column, features (N, F) float32, the target column's values)."""
    rows = _rows(data)
    header = [h.strip() for h in next(rows, [])]
    if len(header) < 2 or len(header) > max_columns:
        raise CsvError(f"a CSV needs 2 to {max_columns} columns, this one has {len(header)}")
    column = target if target is not None else header[-1]
    if column not in header:
        raise CsvError(f"target column {column!r} is not in the header {header[:20]}")
    t = header.index(column)
    keep = [i for i in range(len(header)) if i != t]
    most = data.count(b"\n") + 1  # at least the rows there are
    x = np.empty((most, len(keep)), dtype=np.float32)
    y = Target(np.empty(most, dtype=np.float64), max_classes)
    n, chunk = 0, []
    for row in rows:
        chunk.append(row)
        if len(chunk) == chunk_rows:
            n = _fill(x, y, chunk, n, len(header), keep, t)
            chunk = []
    n = _fill(x, y, chunk, n, len(header), keep, t)
    if n < 2:
        raise CsvError("a CSV needs a header row and at least two data rows")
    if y.numbers is not None:
        y.numbers = y.numbers[:n]
    return [header[i] for i in keep], column, x[:n], y


def _fill(
    x: np.ndarray, y: Target, chunk: list[list[str]], n: int, width: int, keep: list[int], t: int
) -> int:
    """Parse a chunk of rows into x[n:] and y; returns the rows so far. Line n + 2 is row n."""
    for offset, row in enumerate(chunk):
        if len(row) != width:
            raise CsvError(f"line {n + 2 + offset}: {len(row)} fields, the header has {width}")
    if not chunk:
        return n
    if n + len(chunk) > len(
        x
    ):  # more rows than newlines: quoted newlines cannot make that, but be safe
        raise CsvError("the file has more rows than lines")
    try:
        x[n : n + len(chunk)] = np.array(
            [[row[i] for i in keep] for row in chunk], dtype=np.float32
        )
    except ValueError:
        for offset, row in enumerate(chunk):  # the slow path, only to name the line
            try:
                [float(row[i]) for i in keep]
            except ValueError as exc:
                raise CsvError(
                    f"line {n + 2 + offset}: feature values must be numbers ({exc})"
                ) from exc
        raise
    y.add(n, [row[t].strip() for row in chunk])
    return n + len(chunk)

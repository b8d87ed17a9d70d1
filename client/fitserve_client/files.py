"""What the CLI reads and writes: predict's instances from a file, tables and CSV on stdout."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from fitserve_client.types import MetricPoint


def _numbers(row: list[str]) -> list[float] | None:
    try:
        return [float(cell) for cell in row]
    except ValueError:
        return None


def read_csv_rows(path: Path) -> list[list[float]]:
    """Rows of numbers; a first row that is not numbers is a header, and skipped."""
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    out = []
    for index, row in enumerate(rows):
        numbers = _numbers(row)
        if numbers is None:
            if index == 0:
                continue
            raise ValueError(f"{path}: row {index + 1} holds a value that is not a number")
        out.append(numbers)
    return out


def read_instances(path: Path) -> Any:
    """Predict's instances from a .json (a list, or {"instances": [...]}), .csv (one instance per
    row) or .npy (an array, one instance per first-axis entry) file."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        loaded = json.loads(path.read_text())
        instances = loaded.get("instances") if isinstance(loaded, dict) else loaded
        if not isinstance(instances, list):
            raise ValueError(f'{path}: expected a list of instances or {{"instances": [...]}}')
        return instances
    if suffix == ".csv":
        return read_csv_rows(path)
    if suffix == ".npy":
        try:
            import numpy as np
        except ImportError as exc:
            raise ValueError("reading .npy needs numpy: pip install numpy") from exc
        return np.load(path, allow_pickle=False)  # an .npy never runs code when read
    raise ValueError(f"{path}: use a .json, .csv or .npy file")


def jsonable(value: Any) -> Any:
    """Arrays back to lists, for printing as JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def write_table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; empty cells for None."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def write_metrics_csv(out: TextIO, points: Sequence[MetricPoint]) -> None:
    columns = list(MetricPoint.model_fields)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for point in points:
        row = point.model_dump()
        writer.writerow([row["time"].isoformat() if c == "time" else row[c] for c in columns])


def epoch_table(points: Sequence[MetricPoint]) -> tuple[list[str], list[list[Any]]]:
    """One row per (attempt, epoch), one column per epoch metric (step losses left out)."""
    names = list(dict.fromkeys(p.name for p in points if p.name != "step_loss"))
    rows: dict[tuple[int, int], dict[str, float]] = {}
    for p in points:
        if p.name != "step_loss":
            rows.setdefault((p.attempt, p.epoch), {})[p.name] = p.value
    header = ["epoch", "attempt", *names]
    body = [
        [epoch, attempt, *(f"{values[n]:.6g}" if n in values else None for n in names)]
        for (attempt, epoch), values in sorted(rows.items())
    ]
    return header, body

"""Peak memory of parsing an uploaded CSV, against the file's size (target: under 4x), measured
with tracemalloc (numpy's buffers included) in this process, for a classification table (an
integer label) and a regression one (a float target).

    PYTHONPATH=. .venv/bin/python bench/csv_memory.py [--mib 20]
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from core.datasets import parse_csv


def table(mib: float, regression: bool, columns: int = 10, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rows = int(mib * 2**20 / (columns * 9))
    x = rng.normal(size=(rows, columns - 1)).round(5)
    y = x[:, 0] * 2.5 + 1 if regression else (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    lines = [",".join([f"f{i}" for i in range(columns - 1)] + ["target"])]
    fmt = ",".join(["%.5f"] * (columns - 1)) + (",%.5f" if regression else ",%d")
    lines += [fmt % (*r, t) for r, t in zip(x, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def whole_file_baseline(data: bytes) -> None:
    """The parser this replaced: every row as Python lists of str, then float objects."""
    rows = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if r]
    body = rows[1:]
    x = np.empty((len(body), len(rows[0]) - 1), dtype=np.float32)
    for i, row in enumerate(body):
        x[i] = [float(v) for v in row[:-1]]
    np.array([float(row[-1]) for row in body])


def peak_of(parse: Callable[[], object]) -> tuple[int, float]:
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    parse()
    took = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=float, default=20.0)
    args = p.parse_args()
    for regression in (False, True):
        data = table(args.mib, regression)
        task = "regression" if regression else None
        peak, took = peak_of(lambda: parse_csv(data, target=None, task=task, name="t"))  # noqa: B023
        old, old_took = peak_of(lambda: whole_file_baseline(data))  # noqa: B023
        rows = data.count(b"\n") - 1
        kind = "regression (float target)" if regression else "classification (integer label)"
        with_file = (peak + len(data)) / len(data)
        print(
            f"{kind:32s} {len(data) / 2**20:5.1f} MiB, {rows:,} rows: parsing allocates {peak / 2**20:6.1f} "
            f"MiB at its peak = {peak / len(data):4.1f}x the file, {with_file:4.1f}x with the file's own bytes "
            f"(target < 4x), {took:.1f} s; the whole-file parser it replaced: {old / len(data):4.1f}x, "
            f"{old_took:.1f} s"
        )


if __name__ == "__main__":
    main()

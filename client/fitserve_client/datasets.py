"""/v1/datasets: upload (a .csv or .npz file, or (x, y) arrays), list, get, delete.

Arrays go up as an NPZ made in memory when numpy is installed and both are numeric (shapes
kept: images stay images), otherwise as a CSV with columns x0..xN and a last column `y`.
numpy is never required: lists of rows and labels make a CSV without it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

from fitserve_client.transport import AsyncTransport, Call, Transport, no_content, parse
from fitserve_client.types import Dataset, DatasetList

Source = str | os.PathLike[str] | tuple[Any, Any]
Task = Literal["classification", "regression"]


def _csv(rows: Sequence[Sequence[Any]], targets: Sequence[Any]) -> bytes:
    if len(rows) != len(targets):
        raise ValueError(f"{len(rows)} rows of x but {len(targets)} values of y")
    width = len(rows[0]) if rows else 0
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(f"x{i}" for i in range(width)), "y"])
    for row, target in zip(rows, targets, strict=True):
        writer.writerow([*row, target])
    return out.getvalue().encode()


def encode_arrays(x: Any, y: Any) -> tuple[str, bytes]:
    """(file name, bytes) of an upload holding the arrays x and y."""
    try:
        import numpy as np
    except ImportError:
        return "arrays.csv", _csv([list(r) for r in x], list(y))
    xs, ys = np.asarray(x), np.asarray(y)
    if xs.dtype.kind in "biuf" and ys.dtype.kind in "biuf":
        buffer = io.BytesIO()
        np.savez(buffer, x=xs, y=ys)
        return "arrays.npz", buffer.getvalue()
    return "arrays.csv", _csv(xs.reshape(len(xs), -1).tolist(), ys.tolist())  # text labels


@contextlib.contextmanager
def opened(source: Source) -> Iterator[tuple[str, IO[bytes]]]:
    """The upload's file name and body, open for as long as the request."""
    if isinstance(source, tuple):
        name, data = encode_arrays(*source)
        yield name, io.BytesIO(data)
        return
    path = Path(source)
    with path.open("rb") as body:
        yield path.name, body


def upload_call(
    filename: str, body: IO[bytes], name: str | None, target: str | None, task: Task | None
) -> Call[Dataset]:
    form = {k: v for k, v in (("name", name), ("target", target), ("task", task)) if v is not None}
    # Not idempotent: a repeat after a lost answer would store the dataset twice.
    return Call(
        "POST",
        "/v1/datasets",
        parse(Dataset),
        files={"file": (filename, body)},
        data=form,
        idempotent=False,
    )


def dataset_path(dataset_id: str) -> str:
    return f"/v1/datasets/{quote(dataset_id, safe='')}"


def delete_call(dataset_id: str) -> Call[None]:
    # A repeat of a delete that worked would answer 404: only retried when nothing was done.
    return Call("DELETE", dataset_path(dataset_id), no_content, idempotent=False)


class Datasets:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def upload(
        self,
        source: Source,
        *,
        name: str | None = None,
        target: str | None = None,
        task: Task | None = None,
    ) -> Dataset:
        """Upload a .csv/.npz file, or `(x, y)` arrays."""
        with opened(source) as (filename, body):
            return self._t.send(upload_call(filename, body, name, target, task))

    def list(self) -> DatasetList:
        return self._t.send(Call("GET", "/v1/datasets", parse(DatasetList)))

    def get(self, dataset_id: str) -> Dataset:
        return self._t.send(Call("GET", dataset_path(dataset_id), parse(Dataset)))

    def delete(self, dataset_id: str) -> None:
        self._t.send(delete_call(dataset_id))


class AsyncDatasets:
    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def upload(
        self,
        source: Source,
        *,
        name: str | None = None,
        target: str | None = None,
        task: Task | None = None,
    ) -> Dataset:
        with opened(source) as (filename, body):
            return await self._t.send(upload_call(filename, body, name, target, task))

    async def list(self) -> DatasetList:
        return await self._t.send(Call("GET", "/v1/datasets", parse(DatasetList)))

    async def get(self, dataset_id: str) -> Dataset:
        return await self._t.send(Call("GET", dataset_path(dataset_id), parse(Dataset)))

    async def delete(self, dataset_id: str) -> None:
        await self._t.send(delete_call(dataset_id))

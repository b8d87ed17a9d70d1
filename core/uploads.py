"""An uploaded file's way to storage: copied in chunks (hashed and counted on the way, refused
past its limit), then parsed in a process of its own (see api/uploads.py), never in the API's."""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.datasets import DatasetError, Task, parse_csv, parse_npz

CHUNK = 1 << 20


class TooLarge(Exception):
    """The file passed the limit it was copied under."""


def save(source: IO[bytes], target: Path, limit: int) -> tuple[int, str]:
    """Copy `source` to `target` a chunk at a time; (size, sha256). Past `limit` bytes the partial
    copy is removed and TooLarge raised."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with target.open("wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(size)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


PARSE_NICENESS = 5


def lower_priority() -> None:
    """A parse process's initializer: parsing yields the CPU to the API's requests."""
    os.nice(PARSE_NICENESS)


class TooLargeInflated(DatasetError):
    """An NPZ member that would inflate past the limit: refused (413) before a byte of it is read."""


def check_npz(data: bytes, limit: int) -> None:
    """Each member's size in the zip directory, and its .npy header's shape x itemsize, against
    `limit` (all members together too): a 542 KB upload inflating to 512 MiB, or a 393-byte one
    whose header claims 1 TiB, is refused from its metadata."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = 0
            for info in archive.infolist():
                total += info.file_size
                if info.file_size > limit or total > limit:
                    raise TooLargeInflated(
                        f"{info.filename!r} inflates to {info.file_size:,} bytes ({total:,} with "
                        f"the members before it); the limit is {limit:,}"
                    )
                with archive.open(info) as member:
                    shape, dtype = _npy_header(member)
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > limit:
                    raise TooLargeInflated(
                        f"{info.filename!r} claims a {dtype} array of shape {shape}: {claimed:,} "
                        f"bytes; the limit is {limit:,}"
                    )
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"not a readable NPZ file of plain arrays: {exc}") from exc


def _npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, dtype


def describe_file(
    path: str, fmt: str, target: str | None, task: Task | None, name: str, inflated_limit: int
) -> dict[str, Any]:
    """Parse a stored upload (in a parse process) into what its dataset row keeps: its
    description, the target column used and the task. A DatasetError says what is wrong."""
    data = Path(path).read_bytes()
    try:
        if fmt == "npz":
            check_npz(data, inflated_limit)
            ds = parse_npz(data, task=task, name=name)
        else:
            ds = parse_csv(data, target=target, task=task, name=name)
    except (
        MemoryError
    ) as exc:  # never a 500: what the checks above let through still cannot take the process
        raise TooLargeInflated(
            "the file is too large to parse in the memory a parse process has"
        ) from exc
    description = {**ds.describe(), "info": ds.info().model_dump(mode="json")}
    return {"description": description, "target": ds.target_name, "task": ds.task}

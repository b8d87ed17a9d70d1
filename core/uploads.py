"""An uploaded file's way to storage: copied in chunks (hashed and counted on the way, refused
past its limit), then parsed in a process of its own (see api/uploads.py), never in the API's."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

from core.datasets import Task, parse_csv, parse_npz

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


def describe_file(path: str, fmt: str, target: str | None, task: Task | None, name: str) -> dict[str, Any]:
    """Parse a stored upload (in a parse process) into what its dataset row keeps: its
    description, the target column used and the task. A DatasetError says what is wrong."""
    data = Path(path).read_bytes()
    ds = parse_csv(data, target=target, task=task, name=name) if fmt == "csv" else parse_npz(data, task=task, name=name)
    description = {**ds.describe(), "info": ds.info().model_dump(mode="json")}
    return {"description": description, "target": ds.target_name, "task": ds.task}

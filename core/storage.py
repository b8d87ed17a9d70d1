"""Artifact paths, always built by the server from ids, never from a user's strings."""

from __future__ import annotations

import re
from pathlib import Path

_ID = re.compile(r"^[a-z]{2,4}_[0-9a-f]{32}$")


def _checked(identifier: str) -> str:
    if not _ID.match(identifier):
        raise ValueError(f"not a server-made id: {identifier!r}")
    return identifier


def job_dir(artifacts: Path, job_id: str) -> Path:
    return artifacts / "jobs" / _checked(job_id)


def upload_path(artifacts: Path, dataset_id: str, fmt: str) -> Path:
    if fmt not in ("csv", "npz"):
        raise ValueError(f"unknown upload format {fmt!r}")
    return artifacts / "datasets" / f"{_checked(dataset_id)}.{fmt}"

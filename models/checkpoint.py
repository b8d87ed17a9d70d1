"""Checkpoints that describe themselves: safetensors for tensors, JSON for everything else.

`epoch-0003.safetensors` holds the model's state (`model.*`) and, for resuming, the
optimizer's tensors (`optim.<param>.<name>`); `epoch-0003.json` holds the spec, the
epoch, the metrics, the preprocessing and the sha256 of the tensor file. Both are
written to a temporary file, fsynced and renamed, JSON last, so a checkpoint whose JSON
exists is complete. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from models.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "epoch_checkpoints",
    "latest_checkpoint",
    "load_latest",
    "prune_checkpoints",
    "read_checkpoint",
    "split_prefix",
    "write_checkpoint",
]

log = logging.getLogger("fitserve.training")

FORMAT = "fitserve.checkpoint/1"
_EPOCH_FILE = re.compile(r"^epoch-(\d{4,})\.json$")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_checkpoint(directory: Path, stem: str, tensors: dict[str, torch.Tensor],
                     meta: dict[str, Any]) -> tuple[Path, str]:  # fmt: skip
    """Write `<stem>.safetensors` then `<stem>.json`; returns the JSON path and the tensors' sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{stem}.safetensors"
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = save(contiguous, metadata={"format": FORMAT})  # serialised once, hashed in memory, written once
    digest = hashlib.sha256(data).hexdigest()
    _atomic_write(weights, data)
    meta = {**meta, "format": FORMAT, "weights": weights.name, "sha256": digest}
    meta_path = directory / f"{stem}.json"
    _atomic_write(meta_path, json.dumps(meta, indent=1, allow_nan=False).encode())
    _fsync_dir(directory)
    return meta_path, digest


def _why(exc: Exception) -> str:
    """What went wrong, without the path an OSError carries: errors reach users, paths stay here."""
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else str(exc)


def read_checkpoint(meta_path: Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path.name}: unreadable ({_why(exc)})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path.name}: not a {FORMAT} checkpoint")
    weights = meta_path.with_name(str(meta["weights"]))
    if weights.name != Path(str(meta["weights"])).name:
        raise CheckpointError(f"{meta_path.name}: weights must sit beside it")
    try:
        data = weights.read_bytes()  # read once: hashed and parsed from the same bytes
    except OSError as exc:
        raise CheckpointError(f"{weights.name}: missing ({_why(exc)})") from exc
    if verify and hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"{weights.name}: does not match its sha256")
    try:
        return load(data), meta
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise CheckpointError(f"{weights.name}: unreadable ({exc})") from exc


def epoch_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, json path) of every epoch checkpoint, newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH_FILE.match(p.name))]
    return sorted(found, reverse=True)


Loaded = tuple[Path, dict[str, torch.Tensor], dict[str, Any]]


def load_latest(directory: Path) -> Loaded | None:
    """The newest epoch checkpoint whose weights match their sha256, loaded; a corrupt one falls back."""
    for _, path in epoch_checkpoints(directory):
        try:
            tensors, meta = read_checkpoint(path)
        except CheckpointError as exc:
            log.warning("checkpoint %s skipped, resuming from an older one: %s", path.name, exc)
            continue
        return path, tensors, meta
    return None


def latest_checkpoint(directory: Path) -> Path | None:
    found = load_latest(directory)
    return None if found is None else found[0]


def prune_checkpoints(directory: Path, keep: int) -> list[int]:
    """Delete all but the newest `keep` epoch checkpoints; returns the epochs deleted."""
    pruned = []
    for epoch, path in epoch_checkpoints(directory)[keep:]:
        path.with_suffix(".safetensors").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        pruned.append(epoch)
    return pruned


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

"""Checkpoints that describe themselves: safetensors for tensors, JSON for everything else.

`epoch-0003.safetensors` holds the model's state (`model.*`) and, for resuming, the
optimizers' tensors (`optim.<param>.<name>`, then `optim1.` ... for a second optimizer);
`epoch-0003.json` holds the rest (models.checkpoint_meta: the spec, the epoch, the metrics,
the preprocessing, the optimizers' other state) and the sha256 of the tensor file. Both are
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

import torch
from safetensors.torch import load, save

from models.checkpoint_meta import (
    FORMAT,
    FORMAT_VERSION,
    AnyMeta,
    CheckpointMeta,
    EpochMeta,
    dump_meta,
    parse_meta,
)
from models.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "epoch_checkpoints",
    "latest_checkpoint",
    "load_latest",
    "prune_checkpoints",
    "read_checkpoint",
    "read_epoch_checkpoint",
    "split_prefix",
    "write_checkpoint",
]

log = logging.getLogger("fitserve.training")

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


def write_checkpoint(
    directory: Path, stem: str, tensors: dict[str, torch.Tensor], meta: CheckpointMeta
) -> tuple[Path, str]:
    """Write `<stem>.safetensors` then `<stem>.json`; returns the JSON path and the tensors' sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{stem}.safetensors"
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # serialised once, hashed in memory, written once
    data = save(contiguous, metadata={"format": f"{FORMAT}/{FORMAT_VERSION}"})
    digest = hashlib.sha256(data).hexdigest()
    _atomic_write(weights, data)
    meta_path = directory / f"{stem}.json"
    _atomic_write(
        meta_path, dump_meta(meta.model_copy(update={"weights": weights.name, "sha256": digest}))
    )
    _fsync_dir(directory)
    return meta_path, digest


def _why(exc: Exception) -> str:
    """What went wrong, without the path an OSError carries: errors reach users, paths stay here."""
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else str(exc)


def read_checkpoint(
    meta_path: Path, verify: bool = True
) -> tuple[dict[str, torch.Tensor], AnyMeta]:
    """The tensors and the typed meta of any checkpoint (a version-1 one is upgraded as it is read)."""
    try:
        meta = parse_meta(json.loads(meta_path.read_text()), meta_path.name)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path.name}: unreadable ({_why(exc)})") from exc
    if not meta.weights or Path(meta.weights).name != meta.weights:
        raise CheckpointError(f"{meta_path.name}: weights must sit beside it")
    weights = meta_path.with_name(meta.weights)
    try:
        data = weights.read_bytes()  # read once: hashed and parsed from the same bytes
    except OSError as exc:
        raise CheckpointError(f"{weights.name}: missing ({_why(exc)})") from exc
    if verify and hashlib.sha256(data).hexdigest() != meta.sha256:
        raise CheckpointError(f"{weights.name}: does not match its sha256")
    try:
        return load(data), meta
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise CheckpointError(f"{weights.name}: unreadable ({exc})") from exc


def read_epoch_checkpoint(meta_path: Path) -> tuple[dict[str, torch.Tensor], EpochMeta]:
    """An epoch checkpoint, the only kind a run resumes from."""
    tensors, meta = read_checkpoint(meta_path)
    if not isinstance(meta, EpochMeta):
        raise CheckpointError(
            f"{meta_path.name}: a {meta.kind} checkpoint, not an epoch's; a run resumes from an epoch's"
        )
    return tensors, meta


def epoch_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, json path) of every epoch checkpoint, newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH_FILE.match(p.name))]
    return sorted(found, reverse=True)


Loaded = tuple[Path, dict[str, torch.Tensor], EpochMeta]


def load_latest(directory: Path) -> Loaded | None:
    """The newest epoch checkpoint whose weights match their sha256, loaded; a corrupt one falls back."""
    for _, path in epoch_checkpoints(directory):
        try:
            tensors, meta = read_epoch_checkpoint(path)
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

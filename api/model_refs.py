"""Which job's model a serving request names: a job id, a registered name, a name and version,
or a name and alias. Every serving route (/v1 predict, /v1 export, /v2) resolves through here, so
the key check, tenant scoping and the 401/404/409 answers are the same on all of them."""

from __future__ import annotations

from dataclasses import dataclass

from api.deps import UNAUTHORIZED
from api.errors import ApiError
from api.predict_gate import PredictGate
from core.db import hot_read
from core.repository import jobs as jobs_repo
from core.repository.tenants import hash_key
from core.tables import JobStatus


@dataclass(frozen=True)
class BatchSettings:
    """How requests to one model are batched (a registered model may set its own)."""

    max_batch_size: int
    max_delay_ms: float
    exact: bool  # every pass padded to a block of rows: answers bit-identical whatever the batch


@dataclass(frozen=True)
class ServedModel:
    """A resolved reference: the job whose checkpoint answers, and how it was named."""

    job_id: str
    name: str | None = None  # the registered name, when the request used one
    version: int | None = None
    batching: BatchSettings | None = None  # None: the service's defaults


def resolve(gate: PredictGate, key: str | None, ref: str, version: str | None) -> ServedModel:
    """`ref` is a job id or a registered name; `version` a version number or an alias (names only).

    A job id's check is remembered by the predict gate (a succeeded job never changes); a name is
    read each time, since an alias may move at any moment."""
    if key is None:
        raise UNAUTHORIZED
    key_hash = hash_key(key)
    if version is not None:
        raise ApiError(404, f"model {ref!r} not found")  # versions belong to registered names
    if not gate.admits(key_hash, ref):
        generation = gate.generation
        valid, job_status = hot_read(
            lambda connection: jobs_repo.status_for_key(
                connection=connection, key_hash=key_hash, job_id=ref
            )
        )
        if not valid:
            raise UNAUTHORIZED
        if job_status is None:
            raise ApiError(404, f"job {ref} not found")
        if job_status != JobStatus.SUCCEEDED:
            raise ApiError(409, f"job {ref} is {job_status}; predict needs a succeeded job")
        gate.remember(
            key_hash, ref, generation
        )  # succeeded is terminal: only a revocation undoes it
    return ServedModel(job_id=ref)

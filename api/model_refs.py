"""Which job's model a serving request names: a job id, a registered name, a name and version,
or a name and alias. Every serving route (/v1 predict, /v1 export, /v2) resolves through here, so
the key check, tenant scoping and the 401/404/409 answers are the same on all of them."""

from __future__ import annotations

from dataclasses import dataclass

from api.deps import UNAUTHORIZED
from api.errors import ApiError
from api.name_cache import NameCache
from api.predict_gate import PredictGate
from core.db import hot_read
from core.repository import jobs as jobs_repo
from core.repository import registry as registry_repo
from core.repository.tenants import hash_key
from core.settings import get_settings
from core.tables import JobStatus

MAX_VERSION = 2**31 - 1  # versions are stored as 32-bit integers


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


def resolve(
    gate: PredictGate,
    key: str | None,
    ref: str,
    version: str | None,
    names: NameCache | None = None,
) -> ServedModel:
    """`ref` is a job id or a registered name; `version` a version number or an alias (names
    only); a name alone serves its latest version."""
    if key is None:
        raise UNAUTHORIZED
    if ref.startswith("job_"):
        if version is not None:
            raise ApiError(404, f"{ref} is a job; versions and aliases belong to registered models")
        return _by_job(gate, hash_key(key), ref)
    if names is None:
        return _by_name(hash_key(key), ref, version)
    return _by_name_cached(gate, names, hash_key(key), ref, version)


def _by_name_cached(
    gate: PredictGate, names: NameCache, key_hash: str, name: str, version: str | None
) -> ServedModel:
    """A name's answer (a model to serve; refusals are never kept) remembered by the name cache,
    for as long as neither the registry nor the keys' revocations move (api/name_cache.py)."""
    entry = (key_hash, name, version)
    generations = (gate.fresh_generation(), names.fresh_generation())
    hit = names.get((entry, generations[0]))
    if isinstance(hit, ServedModel):
        return hit
    served = _by_name(key_hash, name, version)
    if gate.generation == generations[0]:
        names.put((entry, generations[0]), served, generations[1])
    return served


def _by_job(gate: PredictGate, key_hash: str, job_id: str) -> ServedModel:
    """A job id's check is remembered by the predict gate: a succeeded job never changes."""
    if not gate.admits(key_hash, job_id):
        generation = gate.generation
        valid, job_status = hot_read(
            lambda connection: jobs_repo.status_for_key(
                connection=connection, key_hash=key_hash, job_id=job_id
            )
        )
        if not valid:
            raise UNAUTHORIZED
        if job_status is None:
            raise ApiError(404, f"job {job_id} not found")
        if job_status != JobStatus.SUCCEEDED:
            raise ApiError(409, f"job {job_id} is {job_status}; predict needs a succeeded job")
        gate.remember(key_hash, job_id, generation)  # only a revocation undoes a succeeded job
    return ServedModel(job_id=job_id)


def _by_name(key_hash: str, name: str, version: str | None) -> ServedModel:
    """Read every time (one autocommit round): an alias may move at any moment, and a move must
    be served by the next request in every API process."""
    number = _version_number(version)
    alias = version if version is not None and number is None else None
    if number == -1:
        raise ApiError(404, f"model {name} has no version {version}")
    found = hot_read(
        lambda connection: registry_repo.resolve_name(
            connection=connection, key_hash=key_hash, name=name, version=number, alias=alias
        )
    )
    if not found.key_valid:
        raise UNAUTHORIZED
    if found.model is None:
        raise ApiError(404, f"model {name} not found")
    if found.version is None:
        if alias is not None:
            raise ApiError(404, f"model {name!r} has no alias {alias!r}")
        if number is not None:
            raise ApiError(404, f"model {name!r} has no version {number}")
        raise ApiError(404, f"model {name!r} has no versions")
    what = f"version {found.version} of model {name!r}"
    if found.job_id is None or found.job_status is None:
        raise ApiError(409, f"{what} cannot be served: its job was deleted")
    if found.job_status != JobStatus.SUCCEEDED:
        raise ApiError(409, f"{what} cannot be served: its job is {found.job_status}")
    return ServedModel(
        job_id=found.job_id, name=name, version=found.version, batching=_batching(found.model)
    )


def _version_number(version: str | None) -> int | None:
    """ASCII digits are a version number (a stored integer: ten digits at most, so "²" or a
    30-digit number is an alias that does not exist, not an overflow); anything else an alias."""
    if version is None or not (version.isascii() and version.isdigit()) or len(version) > 10:
        return None
    number = int(version)
    return number if number <= MAX_VERSION else -1  # -1: no such version


def _batching(model: registry_repo.ServingOptions) -> BatchSettings | None:
    """The model's overrides over the service's defaults; None when it sets none."""
    if model.max_batch_size is None and model.max_delay_ms is None and model.exact_batches is None:
        return None
    settings = get_settings()
    return BatchSettings(
        max_batch_size=(
            settings.batch_max_size if model.max_batch_size is None else model.max_batch_size
        ),
        max_delay_ms=(
            settings.batch_max_delay_ms if model.max_delay_ms is None else model.max_delay_ms
        ),
        exact=settings.batch_exact if model.exact_batches is None else model.exact_batches,
    )

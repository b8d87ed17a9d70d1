"""Server-side maxima on a job spec (422 naming the field) and per-tenant quotas: active jobs
(429 with `Retry-After`) and upload storage (413)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import torch
from fastapi import HTTPException
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.errors import unprocessable
from core.datasets import _builtin_info
from core.settings import Settings
from core.spec import DataInfo, JobSpec, LayerSpec
from core.spec.families import REGISTRY
from core.tables import ACTIVE, Dataset, Job, Tenant
from models.validation import FLOAT_BYTES, DryRun, dry_run

DRY_RUN_SAMPLES = 2  # models.validation.sample_batch's batch
DRY_RUN_COPIES = 3  # each activation, its gradient and what autograd keeps for backward, roughly
JOBS_RETRY_AFTER_SECONDS = 10


def networks(spec: JobSpec) -> Iterator[tuple[tuple[str, ...], list[LayerSpec]]]:
    """Each layer list of the spec (the registry's `networks` of its family) with its location in the body."""
    record = REGISTRY[spec.family]
    for path in record.networks:
        layers = functools.reduce(getattr, path, getattr(spec, record.section))
        if layers is not None:  # a supervised model given as a preset has no layer list
            yield ("body", record.section, *path), layers


def dataset_samples(spec: JobSpec, uploaded: dict[str, Any] | None) -> int:
    """Samples in the dataset before splitting: the upload's description, or the built-in's."""
    if uploaded is not None:
        return int(uploaded["samples"])
    ds = spec.dataset
    if ds.n_samples is not None:
        return ds.n_samples
    assert ds.name is not None  # noqa: S101 - DatasetSpec guarantees a source
    return int(_builtin_info(ds.name, ds.classes)[1]["samples"])


def training_samples(spec: JobSpec, samples: int) -> int:
    """What one epoch trains on: the samples less the test and validation splits."""
    return max(1, int(samples * (1 - spec.dataset.test_split) * (1 - spec.validation_split)))


def check_spec(spec: JobSpec, settings: Settings, samples: int) -> None:
    """The maxima that need no model built: batch size, layers, epochs x training samples."""
    if spec.fit.batch_size > settings.max_batch_size:
        raise unprocessable(
            f"batch_size {spec.fit.batch_size} exceeds the server's limit of {settings.max_batch_size}",
            ("body", "fit", "batch_size"),
        )
    for loc, layers in networks(spec):
        if len(layers) > settings.max_layers:
            raise unprocessable(
                f"{len(layers)} layers exceed the server's limit of {settings.max_layers} layers per network",
                loc,
            )
    train = training_samples(spec, samples)
    work = spec.fit.epochs * train
    if work > settings.max_epoch_samples:
        raise unprocessable(
            f"epochs x training samples = {spec.fit.epochs} x {train} = {work} exceeds the "
            f"server's limit of {settings.max_epoch_samples}",
            ("body", "fit", "epochs"),
        )


def meta_dry_run(spec: JobSpec, info: DataInfo) -> DryRun | None:
    """The dry run on torch's meta device: shapes only, no memory, so a model of billions of
    parameters or of huge activations is refused before the real dry run would allocate it. None
    when the meta run fails; the real dry run then names the fault."""
    try:
        with torch.device("meta"):  # a thread-local mode: other requests' tensors are not affected
            return dry_run(spec, info)
    except Exception:
        return None


def _floats(layer: dict[str, Any]) -> int:
    return math.prod(layer.get("output_shape") or [0])


def _largest(spec: JobSpec, report: DryRun) -> tuple[str, tuple[Any, ...]]:
    """The layer with the largest output per sample, named as the 422 names layers, and its location."""
    if not report.layers:
        return "", ("body", spec.family)
    layer = max(report.layers, key=_floats)
    network, index = layer.get("network"), layer.get("index", 0)
    record = REGISTRY[spec.family]
    # the layer list it belongs to: the family's only one, or the one its dry run names
    paths = [
        p
        for p in record.networks
        if (network is None and len(record.networks) == 1) or p[0] == network
    ]
    # else one network that is no layer list (rbm, dbn, seq2seq), or a part the spec does not list (a VAE's mean)
    loc: tuple[Any, ...] = (
        ("body", record.section, *paths[0], index) if paths else ("body", spec.family)
    )
    where = f"{network} " if network else ""
    return (
        f"; the largest is {where}layer {index} ({layer.get('type')}), {_floats(layer):,} values per sample "
        f"{tuple(layer.get('output_shape') or ())}"
    ), loc


def check_memory(spec: JobSpec, settings: Settings, report: DryRun) -> None:
    """The job's memory estimate against MAX_JOB_MEMORY_BYTES, and what the real dry run would
    allocate against MAX_DRY_RUN_BYTES; both from the meta run's shapes, before any memory is spent."""
    largest, loc = _largest(spec, report)
    if report.estimated_memory_bytes > settings.max_job_memory_bytes:
        raise unprocessable(
            f"the job's training memory is estimated at {_size(report.estimated_memory_bytes)} "
            f"(weights, gradients, optimizer state and the activations of a batch of "
            f"{spec.fit.batch_size}), over the server's limit of "
            f"{_size(settings.max_job_memory_bytes)}{largest}",
            loc,
        )
    per_sample = sum(_floats(layer) for layer in report.layers)
    needs = FLOAT_BYTES * (2 * report.parameters + DRY_RUN_SAMPLES * DRY_RUN_COPIES * per_sample)
    if needs > settings.max_dry_run_bytes:
        raise unprocessable(
            f"checking this model means running {DRY_RUN_SAMPLES} samples through it, which needs "
            f"about {_size(needs)} ({per_sample:,} activations per sample), over the server's "
            f"limit of {_size(settings.max_dry_run_bytes)} for a check{largest}",
            loc,
        )


def _size(n: int) -> str:
    unit, scale = next(
        ((u, s) for u, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)) if n >= s),
        ("bytes", 1),
    )
    return f"{n:,} bytes" if scale == 1 else f"{n / scale:,.1f} {unit}"


def check_parameters(spec: JobSpec, settings: Settings, parameters: int) -> None:
    if parameters > settings.max_parameters:
        loc = ("body", "model") if spec.family == "supervised" else ("body", spec.family)
        raise unprocessable(
            f"the model has {parameters} parameters, which exceeds the server's limit of {settings.max_parameters}",
            loc,
        )


def active_jobs(session: Session, tenant_id: str) -> int:
    query = (
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))
    )
    return int(session.scalar(query) or 0)


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Serialise the tenant's quota checks until the transaction ends. A no-op UPDATE of its row
    takes PostgreSQL's row lock and SQLite's write lock (pysqlite begins the transaction at the
    first write, so the count that follows sees every committed job): two submissions racing for
    the last free slot cannot both pass."""
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(name=Tenant.name))


def check_active_jobs(session: Session, tenant_id: str, settings: Settings) -> None:
    """Exact once `lock_tenant` holds; without it, a cheap early refusal."""
    active = active_jobs(session, tenant_id)
    if active >= settings.max_active_jobs:
        raise HTTPException(
            429,
            f"this tenant has {active} queued or running jobs, the most it may have "
            f"(FITSERVE_MAX_ACTIVE_JOBS={settings.max_active_jobs}); wait for one to finish "
            "or cancel one, then submit again",
            headers={"Retry-After": str(JOBS_RETRY_AFTER_SECONDS)},
        )


def stored_bytes(session: Session, tenant_id: str) -> int:
    query = select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
        Dataset.tenant_id == tenant_id
    )
    return int(session.scalar(query) or 0)


def storage_refusal(settings: Settings, used: int, size: int | None = None) -> HTTPException:
    adding = (
        f"this file is {size} bytes"
        if size is not None
        else "this file is larger than what is left"
    )
    return HTTPException(
        413,
        f"the tenant's storage quota of {settings.storage_quota_bytes} bytes "
        f"(FITSERVE_STORAGE_QUOTA_BYTES) would be exceeded: {used} bytes are used by uploaded "
        f"datasets and {adding}",
    )

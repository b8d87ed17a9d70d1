"""Registered models, their versions and aliases, always scoped to their tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.tables import ApiKey, Job, ModelAlias, ModelVersion, RegisteredModel


def get_model(
    *, session: Session, tenant_id: str, name: str, lock: bool = False
) -> RegisteredModel | None:
    """`lock`: the row locked for this transaction (PostgreSQL; SQLite has one writer anyway).
    Every registry write takes it first, so concurrent writes to one model queue on one row
    instead of locking its aliases and versions in different orders (which deadlocked)."""
    query = select(RegisteredModel).where(
        RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == name
    )
    return session.scalar(query.with_for_update() if lock else query)


def _model_for_update(*, session: Session, tenant_id: str, name: str) -> RegisteredModel:
    """The model row, created if new. Two first registrations of one name race on the unique
    (tenant, name): the loser reads the winner's row."""
    model = get_model(session=session, tenant_id=tenant_id, name=name, lock=True)
    if model is not None:
        return model
    try:
        with session.begin_nested():
            model = RegisteredModel(tenant_id=tenant_id, name=name, next_version=1)
            session.add(model)
    except IntegrityError:
        model = get_model(session=session, tenant_id=tenant_id, name=name, lock=True)
        if model is None:  # the winner's row is gone again: a concurrent delete
            raise
    return model


def add_version(*, session: Session, tenant_id: str, name: str, job_id: str) -> ModelVersion:
    """The next version of `name` (created at version 1). The counter is bumped by one UPDATE
    that returns it: on PostgreSQL the row lock, on SQLite the write lock, orders concurrent
    registrations, so two never get one number."""
    model = _model_for_update(session=session, tenant_id=tenant_id, name=name)
    number = session.execute(
        update(RegisteredModel)
        .where(RegisteredModel.id == model.id)
        .values(next_version=RegisteredModel.next_version + 1)
        .returning(RegisteredModel.next_version)
    ).scalar_one()
    version = ModelVersion(model_id=model.id, version=number - 1, job_id=job_id)
    session.add(version)
    session.flush()
    session.refresh(model)
    return version


def list_models(
    *, session: Session, tenant_id: str, after: str | None, limit: int
) -> list[RegisteredModel]:
    query = select(RegisteredModel).where(RegisteredModel.tenant_id == tenant_id)
    if after is not None:
        query = query.where(RegisteredModel.name > after)
    return list(session.scalars(query.order_by(RegisteredModel.name).limit(limit)))


@dataclass(frozen=True)
class VersionRow:
    version: int
    job_id: str | None
    job_status: str | None  # None: the job was deleted
    created_at: datetime


def versions(*, session: Session, model_id: str) -> list[VersionRow]:
    rows = session.execute(
        select(ModelVersion.version, ModelVersion.job_id, Job.status, ModelVersion.created_at)
        .outerjoin(Job, Job.id == ModelVersion.job_id)
        .where(ModelVersion.model_id == model_id)
        .order_by(ModelVersion.version)
    ).all()
    return [VersionRow(*row) for row in rows]


def aliases(*, session: Session, model_ids: list[str]) -> dict[str, dict[str, int]]:
    """model id -> {alias: version}, for a page of models in one query."""
    found: dict[str, dict[str, int]] = {mid: {} for mid in model_ids}
    query = select(ModelAlias.model_id, ModelAlias.alias, ModelAlias.version).where(
        ModelAlias.model_id.in_(model_ids)
    )
    for model_id, alias, version in session.execute(query.order_by(ModelAlias.alias)):
        found[model_id][alias] = version
    return found


def latest_versions(*, session: Session, model_ids: list[str]) -> dict[str, int]:
    query = (
        select(ModelVersion.model_id, func.max(ModelVersion.version))
        .where(ModelVersion.model_id.in_(model_ids))
        .group_by(ModelVersion.model_id)
    )
    return {model_id: number for model_id, number in session.execute(query)}


def get_version(*, session: Session, model_id: str, version: int) -> ModelVersion | None:
    return session.get(ModelVersion, (model_id, version))


def set_alias(*, session: Session, model_id: str, alias: str, version: int) -> None:
    """Create or move: one row written, so readers see the old version or the new one."""
    row = session.get(ModelAlias, (model_id, alias))
    if row is None:
        session.add(ModelAlias(model_id=model_id, alias=alias, version=version))
    else:
        row.version = version
    session.flush()


def delete_alias(*, session: Session, model_id: str, alias: str) -> bool:
    result = session.execute(
        delete(ModelAlias).where(ModelAlias.model_id == model_id, ModelAlias.alias == alias)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_version(*, session: Session, model_id: str, version: int) -> None:
    session.execute(
        delete(ModelVersion).where(
            ModelVersion.model_id == model_id, ModelVersion.version == version
        )
    )


def delete_model(*, session: Session, model: RegisteredModel) -> None:
    session.execute(delete(ModelAlias).where(ModelAlias.model_id == model.id))
    session.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
    session.delete(model)
    session.flush()


@dataclass(frozen=True)
class ServingOptions:
    """A registered model's id and its batching overrides (None: the service's default)."""

    id: str
    max_batch_size: int | None
    max_delay_ms: float | None
    exact_batches: bool | None


@dataclass(frozen=True)
class Resolution:
    """What a serving request's name came to, read in one autocommit round of queries."""

    key_valid: bool
    model: ServingOptions | None = None  # None: no model of that name for the key's tenant
    version: int | None = None  # None: no such version or alias
    job_id: str | None = None  # None with a version: its job was deleted
    job_status: str | None = None


def resolve_name(
    *, connection: Connection, key_hash: str, name: str, version: int | None, alias: str | None
) -> Resolution:
    """The key's tenant, its model `name`, and the version asked (a number, an alias, or the
    latest when neither), with that version's job and the job's status."""
    tenant_id = connection.scalar(
        select(ApiKey.tenant_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    if tenant_id is None:
        return Resolution(key_valid=False)
    model_row = connection.execute(
        select(
            RegisteredModel.id,
            RegisteredModel.max_batch_size,
            RegisteredModel.max_delay_ms,
            RegisteredModel.exact_batches,
        ).where(RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == name)
    ).first()
    if model_row is None:
        return Resolution(key_valid=True)
    model = ServingOptions(*model_row)
    query = (
        select(ModelVersion.version, ModelVersion.job_id, Job.status)
        .outerjoin(Job, Job.id == ModelVersion.job_id)
        .where(ModelVersion.model_id == model.id)
    )
    if alias is not None:
        query = query.join(
            ModelAlias,
            (ModelAlias.model_id == ModelVersion.model_id)
            & (ModelAlias.version == ModelVersion.version),
        ).where(ModelAlias.alias == alias)
    elif version is not None:
        query = query.where(ModelVersion.version == version)
    else:
        query = query.order_by(ModelVersion.version.desc()).limit(1)
    row = connection.execute(query).first()
    if row is None:
        return Resolution(key_valid=True, model=model)
    return Resolution(True, model, row[0], row[1], row[2])


def registry_mark(*, connection: Connection) -> tuple[Any, ...]:
    """What moves whenever a name could serve something else: each table's row count and newest
    change (a version's job deleted nulls its job_id: counted apart)."""
    models = connection.execute(select(func.count(), func.max(RegisteredModel.updated_at))).one()
    versions = connection.execute(
        select(func.count(), func.count(ModelVersion.job_id), func.max(ModelVersion.created_at))
    ).one()
    aliases = connection.execute(select(func.count(), func.max(ModelAlias.updated_at))).one()
    return (*models, *versions, *aliases)

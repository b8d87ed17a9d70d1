"""/v1/models: a tenant's registered models. A name holds numbered versions (succeeded jobs,
numbered 1, 2, ... and never reused) and aliases (`production`, `staging`, any name) that move
between them in one write. Serving by name is in api/model_refs.py; predict in models.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError, NoResultFound
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from api.deps import CurrentTenant, SessionDep, SessionRoute, SettingsDep
from api.errors import ApiError, responses
from api.model_refs import MAX_VERSION
from api.registry_schemas import (
    ALIAS,
    AliasUpdate,
    Batching,
    ModelUpdate,
    ModelVersionPublic,
    RegisteredModelPublic,
    RegisteredModelsPublic,
    RegisterModel,
)
from core.repository import jobs as jobs_repo
from core.repository import registry as registry_repo
from core.storage import job_dir
from core.tables import JobStatus, RegisteredModel

T = TypeVar("T")
router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    responses=responses(401, 429, 503),
    route_class=SessionRoute,
)


def _model(session: Session, tenant_id: str, name: str, lock: bool = False) -> RegisteredModel:
    model = registry_repo.get_model(session=session, tenant_id=tenant_id, name=name, lock=lock)
    if model is None:
        raise ApiError(404, f"model {name} not found")
    return model


def _raced(route: Callable[..., T]) -> Callable[..., T]:
    """A write that lost a race with the model's deletion (its row gone under the UPDATE, an
    alias inserted for a deleted model, a row expired by the commit) answers what it would have
    answered a moment later: 404, not a 500."""

    @functools.wraps(route)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return route(*args, **kwargs)
        except (StaleDataError, ObjectDeletedError, IntegrityError, NoResultFound) as exc:
            body = kwargs.get("body")
            name = kwargs.get("name") or getattr(body, "name", "")
            raise ApiError(404, f"model {name} not found") from exc

    return run


def _committed(request: Request, session: Session) -> None:
    """Commit now, then tell this process's name cache: a request that starts after this serves
    the change (committing first, so no request can cache what the commit replaces)."""
    session.commit()
    request.app.state.names.changed()


def _batching(model: RegisteredModel) -> Batching:
    return Batching(
        max_batch_size=model.max_batch_size,
        max_delay_ms=model.max_delay_ms,
        exact=model.exact_batches,
    )


def _set_batching(model: RegisteredModel, batching: Batching) -> None:
    """Only the fields sent change; a null sent clears that override."""
    sent = batching.model_fields_set
    if "max_batch_size" in sent:
        model.max_batch_size = batching.max_batch_size
    if "max_delay_ms" in sent:
        model.max_delay_ms = batching.max_delay_ms
    if "exact" in sent:
        model.exact_batches = batching.exact


def _public(session: Session, model: RegisteredModel, with_versions: bool) -> RegisteredModelPublic:
    aliases = registry_repo.aliases(session=session, model_ids=[model.id])[model.id]
    latest = registry_repo.latest_versions(session=session, model_ids=[model.id]).get(model.id)
    versions = None
    if with_versions:
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(number, []).append(alias)
        versions = [
            ModelVersionPublic(
                name=model.name,
                version=row.version,
                job_id=row.job_id,
                job_status=row.job_status,
                aliases=by_version.get(row.version, []),
                created_at=row.created_at,
            )
            for row in registry_repo.versions(session=session, model_id=model.id)
        ]
    return RegisteredModelPublic(
        name=model.name,
        description=model.description,
        latest_version=latest,
        aliases=aliases,
        batching=_batching(model),
        versions=versions,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelVersionPublic,
    responses=responses(400, 404, 409),
)
@_raced
def register_model(
    request: Request,
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    body: RegisterModel,
) -> ModelVersionPublic:
    """The job must be a succeeded job of yours whose model files are on the server."""
    job = jobs_repo.get_job(session=session, tenant_id=tenant.id, job_id=body.job_id)
    if job is None:
        raise ApiError(404, f"job {body.job_id} not found", ("body", "job_id"))
    if job.status != JobStatus.SUCCEEDED:
        raise ApiError(409, f"job {job.id} is {job.status}; only a succeeded job can be registered")
    if not (job_dir(settings.artifacts_dir, job.id) / "model.json").exists():
        raise ApiError(409, f"the model files of job {job.id} are missing from this server")
    version = registry_repo.add_version(
        session=session, tenant_id=tenant.id, name=body.name, job_id=job.id
    )
    model = _model(session, tenant.id, body.name)
    if body.description is not None:
        model.description = body.description
    if body.batching is not None:
        _set_batching(model, body.batching)
    for alias in body.aliases:  # in the same transaction as the version: all or nothing
        registry_repo.set_alias(
            session=session, model_id=model.id, alias=alias, version=version.version
        )
    _committed(request, session)
    return ModelVersionPublic(
        name=model.name,
        version=version.version,
        job_id=job.id,
        job_status=job.status,
        aliases=sorted(set(body.aliases)),
        created_at=version.created_at,
    )


@router.get("", response_model=RegisteredModelsPublic)
def list_models(
    session: SessionDep,
    tenant: CurrentTenant,
    after: Annotated[str | None, Query(max_length=100, description="the last name seen")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> RegisteredModelsPublic:
    """By name; a page at a time."""
    rows = registry_repo.list_models(session=session, tenant_id=tenant.id, after=after, limit=limit)
    ids = [m.id for m in rows]
    aliases = registry_repo.aliases(session=session, model_ids=ids)
    latest = registry_repo.latest_versions(session=session, model_ids=ids)
    data = [
        RegisteredModelPublic(
            name=m.name,
            description=m.description,
            latest_version=latest.get(m.id),
            aliases=aliases[m.id],
            batching=_batching(m),
            created_at=m.created_at,
            updated_at=m.updated_at,
        )
        for m in rows
    ]
    next_after = rows[-1].name if len(rows) == limit else None
    return RegisteredModelsPublic(data=data, count=len(data), next_after=next_after)


@router.get("/{name}", response_model=RegisteredModelPublic, responses=responses(404))
def get_model(session: SessionDep, tenant: CurrentTenant, name: str) -> RegisteredModelPublic:
    return _public(session, _model(session, tenant.id, name), with_versions=True)


@router.patch("/{name}", response_model=RegisteredModelPublic, responses=responses(400, 404))
@_raced
def update_model(
    request: Request, session: SessionDep, tenant: CurrentTenant, name: str, body: ModelUpdate
) -> RegisteredModelPublic:
    """The description, or the batching overrides (a field sent as null goes back to the
    service's default). Serving picks the change up on the next request."""
    model = _model(session, tenant.id, name, lock=True)
    if "description" in body.model_fields_set:
        model.description = body.description
    if body.batching is not None:
        _set_batching(model, body.batching)
    _committed(request, session)
    return _public(session, model, with_versions=True)


@router.put(
    "/{name}/aliases/{alias}", response_model=RegisteredModelPublic, responses=responses(400, 404)
)
@_raced
def set_alias(
    request: Request,
    session: SessionDep,
    tenant: CurrentTenant,
    name: str,
    alias: Annotated[str, Path(pattern=ALIAS, max_length=64)],
    body: AliasUpdate,
) -> RegisteredModelPublic:
    """Create the alias or move it: one row written, so a request in flight is served by the old
    version or the new one, never refused."""
    model = _model(session, tenant.id, name, lock=True)
    if registry_repo.get_version(session=session, model_id=model.id, version=body.version) is None:
        raise ApiError(404, f"model {name!r} has no version {body.version}", ("body", "version"))
    registry_repo.set_alias(session=session, model_id=model.id, alias=alias, version=body.version)
    _committed(request, session)
    return _public(session, model, with_versions=False)


@router.delete(
    "/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404)
)
@_raced
def delete_alias(
    request: Request, session: SessionDep, tenant: CurrentTenant, name: str, alias: str
) -> Response:
    model = _model(session, tenant.id, name, lock=True)
    if not registry_repo.delete_alias(session=session, model_id=model.id, alias=alias):
        raise ApiError(404, f"model {name!r} has no alias {alias!r}")
    _committed(request, session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/{name}/versions/{version}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(404, 409),
)
@_raced
def delete_version(
    request: Request,
    session: SessionDep,
    tenant: CurrentTenant,
    name: str,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
) -> Response:
    """Refused (409) while an alias names it: move the alias first, so nothing serving by alias
    is cut off. The job and its files stay; only the version goes."""
    model = _model(session, tenant.id, name, lock=True)
    if registry_repo.get_version(session=session, model_id=model.id, version=version) is None:
        raise ApiError(404, f"model {name} has no version {version}")
    aliased = [
        alias
        for alias, number in registry_repo.aliases(session=session, model_ids=[model.id])[
            model.id
        ].items()
        if number == version
    ]
    if aliased:
        raise ApiError(
            409,
            f"version {version} of model {name!r} is aliased as {', '.join(aliased)}; "
            "move or delete those aliases first",
        )
    registry_repo.delete_version(session=session, model_id=model.id, version=version)
    _committed(request, session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404))
@_raced
def delete_model(
    request: Request, session: SessionDep, tenant: CurrentTenant, name: str
) -> Response:
    """The name, its versions and aliases; the jobs and their files stay."""
    registry_repo.delete_model(session=session, model=_model(session, tenant.id, name, lock=True))
    _committed(request, session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

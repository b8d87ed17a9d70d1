"""/v1/datasets: the built-in catalogue and a tenant's uploads (CSV or NPZ, parsed without
executing anything, stored under a server-made id). An upload over `upload_max_bytes`, or one
that would take the tenant past `storage_quota_bytes`, is refused with 413."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile, status

from api import quota
from api.deps import CurrentTenant, SessionDep, SessionRoute, SettingsDep, ShortTenant
from api.errors import ApiError, responses, unprocessable
from api.schemas import DatasetPublic, DatasetsPublic
from api.uploads import store_upload
from core.datasets import builtin_catalogue
from core.repository import datasets as datasets_repo
from core.storage import upload_path
from core.tables import Dataset

router = APIRouter(
    prefix="/v1/datasets",
    tags=["datasets"],
    responses=responses(401, 429, 503),
    route_class=SessionRoute,
)


def to_public(row: Dataset) -> DatasetPublic:
    d = row.description
    return DatasetPublic(
        id=row.id,
        name=row.name,
        source="uploaded",
        task=row.task,
        kind=d["kind"],
        input_shape=d["input_shape"],
        num_classes=d["num_classes"],
        class_names=d["class_names"],
        samples=d["samples"],
        test_samples=d["test_samples"],
        target=row.target,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=responses(400, 413),
)
async def upload_dataset(
    request: Request,
    tenant: ShortTenant,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a .csv (header row) or .npz (arrays x, y) file")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    target: Annotated[
        str | None, Form(max_length=200, description="CSV column to predict; default the last")
    ] = None,
    task: Annotated[Literal["classification", "regression"] | None, Form()] = None,
) -> DatasetPublic:
    """Stored in chunks, parsed in a process of its own, its row written under the tenant's lock
    (api/uploads.py): nothing of it runs on the event loop. The body was cut off at the upload
    limit by BodyLimit before it was parsed."""
    filename = file.filename or ""
    fmt = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if fmt not in ("csv", "npz"):
        raise unprocessable(f"the file must be .csv or .npz, got {filename!r}", ("body", "file"))
    row = await store_upload(
        pool=request.app.state.parse_pool,
        settings=settings,
        tenant_id=tenant.id,
        source=file.file,
        fmt=fmt,
        name=name or filename,
        target=target if fmt == "csv" else None,
        task=task,
    )
    return to_public(row)


@router.get("", response_model=DatasetsPublic)
def list_datasets(session: SessionDep, tenant: CurrentTenant) -> DatasetsPublic:
    builtins = [
        DatasetPublic(
            id=None,
            source="builtin",
            **{
                k: d[k]
                for k in (
                    "name",
                    "task",
                    "kind",
                    "input_shape",
                    "num_classes",
                    "class_names",
                    "samples",
                    "test_samples",
                )
            },
        )
        for d in builtin_catalogue()
    ]
    uploaded = [
        to_public(r) for r in datasets_repo.list_datasets(session=session, tenant_id=tenant.id)
    ]
    return DatasetsPublic(data=builtins + uploaded, count=len(builtins) + len(uploaded))


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=responses(404))
def get_dataset(session: SessionDep, tenant: CurrentTenant, dataset_id: str) -> DatasetPublic:
    row = datasets_repo.get_dataset(session=session, tenant_id=tenant.id, dataset_id=dataset_id)
    if row is None:
        raise ApiError(404, f"dataset {dataset_id} not found")
    return to_public(row)


@router.delete(
    "/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404, 409)
)
def delete_dataset(
    session: SessionDep, tenant: CurrentTenant, settings: SettingsDep, dataset_id: str
) -> Response:
    """Frees its share of the storage quota. Refused (409) while a queued, running or preempted job
    will still read it; finished jobs and their models are unaffected."""
    row = datasets_repo.get_dataset(session=session, tenant_id=tenant.id, dataset_id=dataset_id)
    if row is None:
        raise ApiError(404, f"dataset {dataset_id} not found")
    quota.lock_tenant(session, tenant.id)  # a submit naming it waits, then finds it gone
    using = datasets_repo.jobs_using(session=session, dataset_id=dataset_id)
    if using:
        raise ApiError(
            409,
            f"dataset {dataset_id} is used by queued or running jobs ({', '.join(using)}); "
            "cancel them or wait for them to end",
        )
    path = upload_path(settings.artifacts_dir, row.id, row.format)
    datasets_repo.delete_dataset(session=session, dataset=row)
    session.commit()  # the row goes first: a file without a row is only space, a row without a file breaks jobs
    path.unlink(missing_ok=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""/v1/datasets: the built-in catalogue and a tenant's uploads (CSV or NPZ, parsed without
executing anything, stored under a server-made id). An upload over `upload_max_bytes`, or one
that would take the tenant past `storage_quota_bytes`, is refused with 413."""

from __future__ import annotations

import hashlib
import os
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from api import quota
from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.errors import ApiError, responses, unprocessable
from api.schemas import DatasetPublic, DatasetsPublic
from core.datasets import DatasetError, builtin_catalogue, parse_csv, parse_npz
from core.repository import datasets as datasets_repo
from core.storage import upload_path
from core.tables import Dataset, new_id

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=responses(401, 429, 503))
CHUNK = 1 << 20


def to_public(row: Dataset) -> DatasetPublic:
    d = row.description
    return DatasetPublic(id=row.id, name=row.name, source="uploaded", task=row.task, kind=d["kind"],
                         input_shape=d["input_shape"], num_classes=d["num_classes"], class_names=d["class_names"],
                         samples=d["samples"], test_samples=d["test_samples"], target=row.target,
                         size_bytes=row.size_bytes, created_at=row.created_at)  # fmt: skip


async def read_limited(upload: UploadFile, limit: int, refusal: Exception | None = None) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise refusal or ApiError(413, f"the file is larger than the upload limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic, responses=responses(400, 413))
async def upload_dataset(
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a .csv (header row) or .npz (arrays x, y) file")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    target: Annotated[str | None, Form(max_length=200, description="CSV column to predict; default the last")] = None,
    task: Annotated[Literal["classification", "regression"] | None, Form()] = None,
) -> DatasetPublic:
    filename = file.filename or ""
    fmt = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if fmt not in ("csv", "npz"):
        raise unprocessable(f"the file must be .csv or .npz, got {filename!r}", ("body", "file"))
    # The body itself was cut off at the upload limit by BodyLimit before it was parsed.
    used = await run_in_threadpool(quota.stored_bytes, session, tenant.id)
    left = settings.storage_quota_bytes - used
    if left < settings.upload_max_bytes:
        data = await read_limited(file, max(left, 0), quota.storage_refusal(settings, used))
    else:
        data = await read_limited(file, settings.upload_max_bytes)
    parse = parse_csv if fmt == "csv" else parse_npz
    try:
        kwargs = {"target": target} if fmt == "csv" else {}
        ds = await run_in_threadpool(lambda: parse(data, task=task, name=name or filename, **kwargs))  # type: ignore[operator]
    except DatasetError as exc:
        raise unprocessable(str(exc), ("body", "file")) from exc
    dataset_id = new_id("ds")
    path = upload_path(settings.artifacts_dir, dataset_id, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    description = {**ds.describe(), "info": ds.info().model_dump(mode="json")}
    column = ds.target_name  # the CSV column used (the last one when none was named)
    row = datasets_repo.add_dataset(session=session, dataset=Dataset(
        id=dataset_id, tenant_id=tenant.id, name=(name or filename)[:200], format=fmt, size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), target=column, task=ds.task, description=description))  # fmt: skip
    return to_public(row)


@router.get("", response_model=DatasetsPublic)
def list_datasets(session: SessionDep, tenant: CurrentTenant) -> DatasetsPublic:
    builtins = [DatasetPublic(id=None, source="builtin", **{k: d[k] for k in (
        "name", "task", "kind", "input_shape", "num_classes", "class_names", "samples", "test_samples")})
        for d in builtin_catalogue()]  # fmt: skip
    uploaded = [to_public(r) for r in datasets_repo.list_datasets(session=session, tenant_id=tenant.id)]
    return DatasetsPublic(data=builtins + uploaded, count=len(builtins) + len(uploaded))


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=responses(404))
def get_dataset(session: SessionDep, tenant: CurrentTenant, dataset_id: str) -> DatasetPublic:
    row = datasets_repo.get_dataset(session=session, tenant_id=tenant.id, dataset_id=dataset_id)
    if row is None:
        raise ApiError(404, f"dataset {dataset_id} not found")
    return to_public(row)

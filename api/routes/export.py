"""/v1/models/{ref}/export: a succeeded job's model as a zip archive (models.export builds it).

An export is built once per (job, format) and kept in the job's directory as
`exports/<format>.zip`: a finished model never changes, so later requests are a file send. A file
lock serialises the builds of one archive across threads and API processes alike, so concurrent
first requests build it once; the others wait and send the file it left."""

from __future__ import annotations

import fcntl
import logging
import pathlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import FileResponse

from api.deps import bearer_key
from api.errors import responses, unprocessable
from api.model_refs import resolve
from api.serving import load
from core.settings import get_settings
from core.storage import job_dir
from models.export import ExportError, build_archive

router = APIRouter(prefix="/v1/models", tags=["models"], responses=responses(401, 429, 503))
log = logging.getLogger("fitserve.api")

Format = Literal["safetensors", "onnx", "torchscript"]
# safetensors by default: the checkpoint's own files, which every family has and no build needs
FORMAT_HELP = "safetensors (the default: the checkpoint's files), onnx or torchscript"


@contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive flock on `path`: each open() is its own lock, so threads of one process
    exclude each other as processes do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _archive(
    request: Request, ref: str, version: str | None, fmt: str, key: str | None
) -> FileResponse:
    served = resolve(request.app.state.predict_gate, key, ref, version, request.app.state.names)
    directory = job_dir(get_settings().artifacts_dir, served.job_id)
    archive = directory / "exports" / f"{fmt}.zip"
    if not archive.exists():
        load(request.app.state, served)  # the model's files as predict checks them: 409 when gone
        with _locked(directory / "exports" / f".{fmt}.lock"):
            if not archive.exists():  # built while this request waited
                started = time.monotonic()
                try:
                    build_archive(directory / "model.json", fmt, archive, served.job_id)
                except ExportError as exc:
                    raise unprocessable(str(exc), ("query", "format")) from exc
                log.info(
                    "job %s: %s export built in %.2f s",
                    served.job_id,
                    fmt,
                    time.monotonic() - started,
                )
    return FileResponse(
        archive, media_type="application/zip", filename=f"{served.job_id}-{fmt}.zip"
    )


@router.get("/{ref}/export", responses=responses(404, 409), response_class=FileResponse)
def export_model(
    request: Request,
    ref: str,
    format: Annotated[Format, Query(description=FORMAT_HELP)] = "safetensors",
    authorization: Annotated[str | None, Header()] = None,
) -> FileResponse:
    """The model as a zip archive. A sync route: FastAPI runs it in its thread pool, where a first
    export (seconds) builds without holding the event loop."""
    return _archive(request, ref, None, format, bearer_key(authorization))


@router.get(
    "/{name}/versions/{version}/export", responses=responses(404, 409), response_class=FileResponse
)
def export_model_version(
    request: Request,
    name: str,
    version: Annotated[str, Path(description="a version number, or an alias such as production")],
    format: Annotated[Format, Query(description=FORMAT_HELP)] = "safetensors",
    authorization: Annotated[str | None, Header()] = None,
) -> FileResponse:
    """A registered model's version or alias, as the route above (versions belong to names)."""
    return _archive(request, name, version, format, bearer_key(authorization))

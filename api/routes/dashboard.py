"""The web dashboard: its page at `/` and its files under `/ui/` (the package's api/dashboard/).

Every answer carries a strict Content-Security-Policy (scripts and styles from this origin only,
no inline script, no framing), `nosniff` and `no-referrer`. The page reads only the public /v1
API, with the key a user signs in with, kept in the browser tab's sessionStorage. None of these
routes takes a key or appears in the OpenAPI schema."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

ROOT = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS = "/ui"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The vendored library's folder names its pinned version: a new version is a new URL.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"  # kept, but checked against its ETag each time: a new release shows at once

router = APIRouter(include_in_schema=False)


def secured(response: Response, cache: str = REVALIDATE) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = cache
    return response


@router.api_route("/", methods=["GET", "HEAD"])
def index() -> Response:
    return secured(FileResponse(ROOT / "index.html", media_type="text/html; charset=utf-8"))


class DashboardFiles(StaticFiles):
    """The dashboard's files, each with the security headers; a missing one is a plain 404."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            response = PlainTextResponse("not found", status_code=exc.status_code)
            return secured(response, "no-store")
        return secured(response, IMMUTABLE if path.startswith("vendor/") else REVALIDATE)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS, DashboardFiles(directory=ROOT), name="dashboard")

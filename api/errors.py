"""Domain errors rendered as HTTP answers in one place: the field path rides along, in
the same shape as FastAPI's own 422 body."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from core.db import unreachable

# How long a client is told to wait when the database is unreachable: a restart or a failover.
DATABASE_RETRY_AFTER = 5
DATABASE_DOWN = "the database is unreachable; try again shortly"
MAX_ERRORS = 20


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, loc: Sequence[str | int] = (), kind: str = "invalid"
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.loc, self.kind = status, message, list(loc), kind


class ErrorMessage(BaseModel):
    """Every refusal but a 422 (which follows FastAPI's HTTPValidationError): one message."""

    detail: str


_MEANINGS = {
    400: "the body cannot be parsed",
    401: "a valid API key is required",
    404: "not found, or another tenant's",
    409: "conflicts with the resource's state",
    413: "the body, or the tenant's storage, is over its limit",
    429: "over the API key's rate or the tenant's active jobs (see Retry-After)",
    503: "the database is unreachable; nothing was written (see Retry-After)",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the refusals a route can answer, for `responses=`."""
    return {code: {"model": ErrorMessage, "description": _MEANINGS[code]} for code in codes}


def unprocessable(message: str, loc: Sequence[str | int]) -> ApiError:
    return ApiError(422, message, loc)


def finite(value: Any) -> Any:
    """NaN and infinities (a body may hold the JSON tokens NaN, Infinity) echoed back as strings:
    JSON has no such numbers, and a 422 must not become a 500 while being rendered."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


PREVIEW_CHARACTERS = 200


_BOUNDED = reprlib.Repr()  # Python 3.11's takes no arguments
_BOUNDED.maxlevel, _BOUNDED.maxdict, _BOUNDED.maxlist, _BOUNDED.maxtuple = 3, 8, 8, 8
_BOUNDED.maxstring = _BOUNDED.maxother = PREVIEW_CHARACTERS


def preview(value: Any) -> Any:
    """An error's `input`, whole if it is small, else a short preview made in bounded time (this
    runs on the event loop): a 20 MB field, or 10^5 layers, must not come back whole."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) <= PREVIEW_CHARACTERS:
            return value
        return f"{value[:PREVIEW_CHARACTERS]}... ({len(value):,} characters in all)"
    short = _BOUNDED.repr(value)
    return (
        value
        if "..." not in short and len(short) <= PREVIEW_CHARACTERS
        else short[:PREVIEW_CHARACTERS] + "..."
    )


def _shortened(errors: Sequence[Any]) -> list[Any]:
    return [
        {**e, "input": preview(e["input"])} if isinstance(e, dict) and "input" in e else e
        for e in errors
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()[:MAX_ERRORS]  # 10^5 bad layers need not give 10^5 errors
        return JSONResponse(
            {"detail": finite(jsonable_encoder(_shortened(errors)))}, status_code=422
        )

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        # A request that found the database down wrote nothing (its transaction never committed):
        # a retryable 503, not a 500. Any other database error is a bug and stays a 500.
        if not unreachable(exc):
            raise exc
        return JSONResponse(
            {"detail": DATABASE_DOWN},
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )

    @app.exception_handler(ApiError)
    async def _render(_: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, object]
        if exc.status == 422:
            body = {"detail": [{"loc": exc.loc, "msg": exc.message, "type": exc.kind}]}
        else:
            body = {"detail": exc.message}
        return JSONResponse(body, status_code=exc.status)

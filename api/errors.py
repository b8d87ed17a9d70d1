"""Domain errors rendered as HTTP answers in one place: the field path rides along, in
the same shape as FastAPI's own 422 body."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str, loc: Sequence[str | int] = (), kind: str = "invalid") -> None:
        super().__init__(message)
        self.status, self.message, self.loc, self.kind = status, message, list(loc), kind


def unprocessable(message: str, loc: Sequence[str | int]) -> ApiError:
    return ApiError(422, message, loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _render(_: Request, exc: ApiError) -> JSONResponse:
        body: dict[str, object]
        if exc.status == 422:
            body = {"detail": [{"loc": exc.loc, "msg": exc.message, "type": exc.kind}]}
        else:
            body = {"detail": exc.message}
        return JSONResponse(body, status_code=exc.status)

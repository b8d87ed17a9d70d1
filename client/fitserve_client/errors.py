"""Typed errors: each refusal of the API as a `FitserveError` subclass, with the API's detail.

A 422 keeps every error's field path (`loc`) and message; a 429 or 503 keeps `Retry-After`.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from typing import Any

import httpx

from fitserve_client.types import ErrorDetail


class FitserveError(Exception):
    """An answer the API refused, or no answer at all (`status` None)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.detail, self.request_id = (
            message,
            status,
            detail,
            request_id,
        )


class BadRequest(FitserveError):
    """400: the body could not be parsed."""


class AuthenticationError(FitserveError):
    """401: no valid API key."""


class NotFound(FitserveError):
    """404: no such job or dataset (or another tenant's)."""


class Conflict(FitserveError):
    """409: the request conflicts with the resource's state (the job already ended...)."""


class PayloadTooLarge(FitserveError):
    """413: the body, or the tenant's storage, is over its limit."""


class ValidationError(FitserveError):
    """422: a field is wrong; `errors` names each field by its path (`loc`)."""

    def __init__(self, message: str, *, errors: list[ErrorDetail], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errors = errors


class Retryable(FitserveError):
    """An answer that says when to try again: `retry_after` seconds, if the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimited(Retryable):
    """429: over the key's rate, the tenant's active jobs or its open streams."""


class ServerError(FitserveError):
    """5xx: a fault of the service."""


class ServiceUnavailable(ServerError, Retryable):
    """503: the service's database is unreachable; nothing was written."""


class APIConnectionError(FitserveError):
    """The service could not be reached, or the connection dropped before an answer;
    `request_sent` False when no connection was made (then nothing reached the server)."""

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout."""


_BY_STATUS: dict[int, type[FitserveError]] = {
    400: BadRequest,
    401: AuthenticationError,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):  # not delta-seconds: an HTTP date, below
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _where(loc: list[str | int]) -> str:
    # The API's paths start with where the field was ("body", "query"): the field path is the rest.
    path = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
    return ".".join(str(p) for p in path) or "request"


def from_response(response: httpx.Response) -> FitserveError:
    """The typed error for a refused answer (status >= 400)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else (response.text or None)
    common: dict[str, Any] = {
        "status": status,
        "detail": detail,
        "request_id": response.headers.get("x-request-id"),
    }
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else FitserveError)
    if cls is ValidationError:
        errors = [ErrorDetail.model_validate(e) for e in detail] if isinstance(detail, list) else []
        lines = [f"{_where(e.loc)}: {e.msg}" for e in errors] or [str(detail)]
        return ValidationError("; ".join(lines), errors=errors, **common)
    message = detail if isinstance(detail, str) else f"HTTP {status}"
    if issubclass(cls, Retryable):
        return cls(message, retry_after=retry_after(response), **common)
    return cls(message, **common)

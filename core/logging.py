"""Logging for the service commands: one JSON object per line (or plain text), and the job a
record belongs to.

The worker binds the job it is running (`bind_job`) in a context variable; a filter on the
handler copies it onto every record emitted in that context, so a record logged anywhere
below the runner (the engine, SQLAlchemy, Celery's task trace) carries `job_id` and `attempt`.
Threads start with an empty context: a thread that must carry the job runs its target through
`contextvars.copy_context().run`.

Nothing here logs request headers; uvicorn's access log writes the client, method, path and
status only, and API keys travel only in the Authorization header.
"""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]

_job: ContextVar[tuple[str, int | None] | None] = ContextVar("fitserve_job", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s"
# uvicorn and Celery loggers that would otherwise keep handlers of their own
_OWN_HANDLERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "celery",
    "celery.task",
    "celery.redirected",
)


def bind_job(job_id: str | None, attempt: int | None = None) -> None:
    """Records emitted from now on in this context belong to this job (None: to no job).

    One task per process at a time in the worker: each run binds its job at the start."""
    _job.set(None if job_id is None else (job_id, attempt))


def current_job() -> tuple[str, int | None] | None:
    return _job.get()


class JobContextFilter(logging.Filter):
    """Puts `job_id` and `attempt` on a record emitted while a job is bound; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _job.get()
        if bound is not None and not hasattr(record, "job_id"):
            record.job_id, record.attempt = bound
        return True


class JsonFormatter(logging.Formatter):
    """time (ISO 8601 UTC), level, logger, message; job_id and attempt when bound; exc_info as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = job_id
            attempt = getattr(record, "attempt", None)
            if attempt is not None:
                entry["attempt"] = attempt
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        attempt = getattr(record, "attempt", None)
        record.job = (
            "" if job_id is None else f" [{job_id}" + ("]" if attempt is None else f"#{attempt}]")
        )
        return super().format(record)


def make_handler(log_format: LogFormat, stream: Any = None) -> logging.Handler:
    """A stream handler with the formatter and the job filter (stderr by default)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(JobContextFilter())
    return handler


def logging_config(log_format: LogFormat, level: str | int = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: one stderr handler on the root logger, uvicorn's and
    Celery's loggers propagating to it. uvicorn takes it as `log_config` and applies it in each
    of its worker processes too (they are spawned, not forked)."""
    formatter = (
        "core.logging.JsonFormatter" if log_format == "json" else "core.logging.TextFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": "core.logging.JobContextFilter"}},
        "formatters": {"main": {"()": formatter}},
        "handlers": {
            "main": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["job"]}
        },
        "root": {"handlers": ["main"], "level": level.upper() if isinstance(level, str) else level},
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in _OWN_HANDLERS},
            "alembic.runtime.plugins": {"level": "WARNING"},  # a line per plugin at every start
        },
    }


def configure_logging(log_format: LogFormat, level: str | int = "INFO") -> None:
    """Apply `logging_config`. Run uvicorn with `log_config=logging_config(...)` and Celery with
    `worker_hijack_root_logger=False` plus `celery_keeps_logging()`, so neither replaces it."""
    logging.config.dictConfig(logging_config(log_format, level))
    logging.captureWarnings(True)


def celery_keeps_logging() -> None:
    """Celery sets up its own handlers unless a `setup_logging` receiver exists; this one keeps ours."""
    from celery import signals

    signals.setup_logging.connect(_keep, weak=False)


def _keep(**_: Any) -> None:
    return None

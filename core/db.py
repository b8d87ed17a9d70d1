"""Engines and sessions, one engine per process (a forked worker makes its own), and
the Alembic upgrade that is the only way the schema is created."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

T = TypeVar("T")
log = logging.getLogger("fitserve.db")
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_engines: dict[tuple[int, str], Engine] = {}
# Optuna's RDB storage tables (core/sweeps.py), made by migration 0011 after Optuna's models, not
# from Base: a comparison of the schema with Base leaves them out (`ours`).
OPTUNA_TABLES = frozenset(
    {
        "studies",
        "study_directions",
        "study_user_attributes",
        "study_system_attributes",
        "trials",
        "trial_user_attributes",
        "trial_system_attributes",
        "trial_params",
        "trial_values",
        "trial_intermediate_values",
        "trial_heartbeats",
        "version_info",
    }
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; busy_timeout waits out a writer instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, pre_ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=10, max_overflow=20)


def get_engine(url: str | None = None, pre_ping: bool = True) -> Engine:
    url = url or get_settings().database_url
    key = (os.getpid(), url) if pre_ping else (os.getpid(), url + "#hot")
    if key not in _engines:
        _engines[key] = make_engine(url, pre_ping)
    return _engines[key]


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """The task/command boundary: commit on success, roll back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def hot_read(query: Callable[[Connection], T], url: str | None = None) -> T:
    """One read on a hot path: autocommit (no BEGIN, no ROLLBACK) from a pool that does not ping
    before each use (a round trip saved); a connection found dead is dropped and the read retried."""
    engine = get_engine(url, pre_ping=False)
    for attempt in (1, 2):
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                return query(connection)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def unreachable(exc: BaseException) -> bool:
    """The database is down or the connection was lost (worth waiting out), not a bad statement."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def patiently(
    action: Callable[[], T], *, patience: float, what: str, stop: threading.Event | None = None
) -> T:
    """Run `action` (one whole transaction) until the database answers. A worker waits out an
    outage instead of dropping the write: a claim, a job's outcome. After `patience` seconds,
    or once `stop` is set, the last error is raised."""
    deadline, delay = time.monotonic() + patience, 0.1
    while True:
        try:
            return action()
        except DBAPIError as exc:
            if (
                not unreachable(exc)
                or time.monotonic() + delay > deadline
                or (stop is not None and stop.is_set())
            ):
                raise
            log.warning(
                "%s: the database is unreachable, trying again in %.1f s (%s)",
                what,
                delay,
                type(exc.orig).__name__,
            )
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def ours(name: str | None, type_: str, _parents: Any) -> bool:
    """Alembic's `include_name`: every table of the database but Optuna's."""
    return not (type_ == "table" and name in OPTUNA_TABLES)


def alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option(
        "sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%")
    )
    return config


def upgrade(url: str | None = None) -> None:
    from alembic import command

    command.upgrade(alembic_config(url), "head")

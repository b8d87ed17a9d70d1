"""Typed dependencies: a request's session (committed at the request boundary), its
settings, and the tenant its API key belongs to."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, status
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from core.db import session_scope
from core.repository import tenants as tenants_repo
from core.settings import Settings, get_settings
from core.tables import Tenant


def get_session() -> Iterator[Session]:
    """Commit at the request boundary, roll back on any error (SessionRoute commits sooner)."""
    with session_scope() as session:
        yield session


def _commits_on_return(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        sessions = [v for v in kwargs.values() if isinstance(v, Session)]
        try:
            result = endpoint(*args, **kwargs)
        except BaseException:
            for session in sessions:
                session.rollback()
            raise
        for session in sessions:
            session.commit()
        return result

    return run


class SessionRoute(APIRoute):
    """A sync route's session is committed (its connection given back) in the route's own thread,
    as it returns. FastAPI validates a sync route's response in another thread hop, and the
    dependency's exit comes after that: a request that held a pooled connection while it waited for
    a thread deadlocked the service once every thread waited for a connection (300 reads at once
    did it: 40 threads waiting for 15 connections held by requests waiting for a thread)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _commits_on_return(endpoint)
        super().__init__(path, endpoint, **kwargs)


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


UNAUTHORIZED = HTTPException(
    status.HTTP_401_UNAUTHORIZED,
    "a valid API key is required: Authorization: Bearer <key>",
    headers={"WWW-Authenticate": "Bearer"},
)


def bearer_key(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def current_tenant(
    session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> Tenant:
    key = bearer_key(authorization)
    tenant = tenants_repo.tenant_for_key(session=session, key=key) if key else None
    session.commit()  # its connection goes back before the route's thread hop (see SessionRoute)
    if tenant is None:
        raise UNAUTHORIZED
    return tenant


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]


def tenant_in_own_session(authorization: Annotated[str | None, Header()] = None) -> Tenant:
    """For routes that outlive their queries (event streams, uploads): the key is checked in a
    session of its own, closed before the route runs, so no pooled connection waits with them."""
    with session_scope() as session:
        return current_tenant(session, authorization)


# A detached Tenant: read its columns, never its relationships.
ShortTenant = Annotated[Tenant, Depends(tenant_in_own_session)]

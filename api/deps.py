"""Typed dependencies: a request's session (committed at the request boundary), its
settings, and the tenant its API key belongs to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, status
from sqlalchemy.orm import Session

from core.db import session_scope
from core.repository import tenants as tenants_repo
from core.settings import Settings, get_settings
from core.tables import Tenant


def get_session() -> Iterator[Session]:
    """Commit at the request boundary, roll back on any error."""
    with session_scope() as session:
        yield session


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


def current_tenant(session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> Tenant:
    key = bearer_key(authorization)
    tenant = tenants_repo.tenant_for_key(session=session, key=key) if key else None
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

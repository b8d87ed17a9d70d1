"""Tenants and API keys. Keys are shown once and stored as their sha256."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from core.tables import ApiKey, Tenant, utcnow

KEY_PREFIX = "fs_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(*, session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(*, session: Session, tenant: Tenant) -> str:
    """Returns the key itself; only its hash is kept."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:10]))
    session.flush()
    return key


def tenant_for_key(*, session: Session, key: str) -> Tenant | None:
    row = session.execute(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    return None if row is None else row[0]


def key_hash_is_valid(*, connection: Connection, key_hash: str) -> bool:
    """One indexed read: is this key known and not revoked?"""
    query = (
        select(ApiKey.id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)).limit(1)
    )
    return connection.execute(query).first() is not None


def revoke_key(*, session: Session, prefix: str) -> int:
    keys = session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).all()
    for key in keys:
        key.revoked_at = utcnow()
    session.flush()
    return len(keys)


def revocation_mark(*, connection: Connection) -> tuple[Any, ...]:
    """Changes whenever a key is revoked (keys are never deleted or un-revoked)."""
    row = connection.execute(
        select(func.count(ApiKey.revoked_at), func.max(ApiKey.revoked_at))
    ).one()
    return tuple(row)

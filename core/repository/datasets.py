"""Uploaded datasets, always scoped to their tenant."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.tables import Dataset


def add_dataset(*, session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(*, session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))


def list_datasets(*, session: Session, tenant_id: str) -> list[Dataset]:
    return list(session.scalars(select(Dataset).where(Dataset.tenant_id == tenant_id).order_by(Dataset.created_at)))

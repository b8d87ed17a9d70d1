"""Uploaded datasets, always scoped to their tenant."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.tables import UNFINISHED, Dataset, Job


def add_dataset(*, session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(*, session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    )


def jobs_using(*, session: Session, dataset_id: str) -> list[str]:
    """Jobs that will still read the dataset: queued, running, or preempted (to resume)."""
    query = select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(UNFINISHED)).limit(10)
    return list(session.scalars(query))


def delete_dataset(*, session: Session, dataset: Dataset) -> None:
    """The row; finished jobs keep the id in their spec, not the reference (the trained model does
    not need the data)."""
    session.execute(update(Job).where(Job.dataset_id == dataset.id).values(dataset_id=None))
    session.delete(dataset)
    session.flush()


def list_datasets(*, session: Session, tenant_id: str) -> list[Dataset]:
    return list(
        session.scalars(
            select(Dataset).where(Dataset.tenant_id == tenant_id).order_by(Dataset.created_at)
        )
    )

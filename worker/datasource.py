"""From a spec's dataset section to the engine's in-memory tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core.datasets import Dataset, DatasetError, load_dataset
from core.db import patiently, session_scope
from core.preprocessing import prepare
from core.repository import datasets as datasets_repo
from core.settings import Settings
from core.spec import JobSpec, SupervisedJob
from core.spec.families import REGISTRY
from core.storage import upload_path
from worker.reporter import STOPPING
from worker.training.engine import TrainData


def takes_tokens(spec: JobSpec) -> bool:
    if not isinstance(
        spec, SupervisedJob
    ):  # a family that reads and writes tokens (seq2seq), or features
        return REGISTRY[spec.family].tokens
    layers = spec.model.layers or []  # a preset starts with no embedding
    return bool(layers) and layers[0].type == "embedding"


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def train_data(spec: JobSpec, ds: Dataset) -> TrainData:
    prepared = prepare(
        ds,
        validation_split=spec.validation_split,
        test_split=spec.dataset.test_split,
        seed=spec.fit.seed,
        standardize=spec.dataset.standardize,
        tokens=takes_tokens(spec),
        binarize=spec.dataset.binarize,
    )
    x_train, y_train = _tensor(prepared.x_train), _tensor(prepared.y_train)
    assert x_train is not None and y_train is not None  # noqa: S101
    return TrainData(
        ds.info(),
        x_train,
        y_train,
        _tensor(prepared.x_val),
        _tensor(prepared.y_val),
        _tensor(prepared.x_test),
        _tensor(prepared.y_test),
        prepared.preprocessing,
        ds.class_names,
    )


def load_train_data(
    spec: JobSpec, resolve_upload: Callable[[str], Path] | None = None
) -> TrainData:
    return train_data(spec, load_dataset(spec.dataset, spec.fit.seed, resolve_upload))


def upload_resolver(settings: Settings, tenant_id: str) -> Callable[[str], Path]:
    """Looks an uploaded dataset's file up by id, within the job's tenant, waiting out a
    database outage (the worker's patience)."""

    def lookup(dataset_id: str) -> Path:
        with session_scope() as session:
            row = datasets_repo.get_dataset(
                session=session, tenant_id=tenant_id, dataset_id=dataset_id
            )
            if row is None:
                raise DatasetError(f"dataset {dataset_id} does not exist")
            return upload_path(settings.artifacts_dir, row.id, row.format)

    def resolve(dataset_id: str) -> Path:
        return patiently(
            lambda: lookup(dataset_id),
            patience=settings.database_patience_seconds,
            what=f"dataset {dataset_id}: lookup",
            stop=STOPPING,
        )

    return resolve

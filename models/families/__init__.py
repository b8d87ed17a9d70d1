"""Model families (core.spec.families.REGISTRY names them): each module builds its networks from the
spec, checks them before anything is queued (`dry_run`) and serves predict operations from a
checkpoint.

A family module defines:
    build(spec, info) -> nn.Module          every weight, checkpointed under "model."
    dry_run(spec, info) -> DryRun           raises SpecError naming the field or layer
    OPERATIONS: dict[str, Operation]        predict operations; the first is the default
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from core.spec import DataInfo, JobSpec
from core.spec.families import REGISTRY
from models.checkpoint_meta import CheckpointMeta
from models.errors import PredictError

MODULES = {name: record.model_module for name, record in REGISTRY.items()}
# Predict operations each family serves, from the registry, so the API can refuse a wrong one
# (422) and document them without importing torch code; the first is the default.
OPERATION_NAMES = {name: record.operations for name, record in REGISTRY.items()}


@dataclass
class FamilyModel:
    """A loaded family checkpoint: its networks and what predict needs to run them."""

    module: nn.Module
    spec: JobSpec
    info: DataInfo
    meta: CheckpointMeta
    device: torch.device
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # ModelMeta.family: open, each family describes itself


@dataclass(frozen=True)
class OperationRequest:
    """An operation's inputs, from the predict request; each operation reads what it needs."""

    instances: list[Any] | np.ndarray | None = None  # /v2 infer passes its tensor as it came
    count: int | None = None
    seed: int | None = None
    labels: list[int] | None = None


Operation = Callable[[FamilyModel, OperationRequest], dict[str, Any]]


def refuse_unused(req: OperationRequest, operation: str, used: tuple[str, ...]) -> None:
    """A field the operation would ignore is refused: never a silent default. Every family's
    operations share it, so it lives beside the request (read field by field, so a new field is
    checked too)."""
    for name in (f.name for f in fields(req)):
        if name not in used and getattr(req, name) is not None:
            raise PredictError(
                f"{operation} takes no `{name}`; it reads {', '.join(used) or 'nothing'}", name
            )


def family_module(family: str) -> ModuleType:
    return importlib.import_module(MODULES[family])


def build(spec: JobSpec, info: DataInfo) -> nn.Module:
    module: nn.Module = family_module(spec.family).build(spec, info)
    return module

"""The shape dry-run: build the module for the dataset, push a tiny batch through it,
and report the parameter count and an estimate of training memory."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from core.spec import DataInfo, GANJob, JobSpec, OptimizerSpec
from core.spec.families import REGISTRY
from models.errors import SpecError
from models.network import BuildResult

FLOAT_BYTES = 4


@dataclass(frozen=True)
class DryRun:
    parameters: int
    output_shape: tuple[int, ...]
    layers: list[dict[str, Any]]
    estimated_memory_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def optimizer_slots(opt: OptimizerSpec) -> int:
    """Tensors the optimizer keeps per parameter."""
    if opt.type == "sgd":
        return 1 if opt.momentum else 0
    if opt.type == "adagrad":
        return 1
    if opt.type == "rmsprop":
        return 1 + int(opt.momentum > 0) + int(opt.centered)
    return 2 + int(opt.amsgrad)


def estimate_memory(spec: JobSpec, built: BuildResult, info: DataInfo) -> int:
    """Weights, gradients and optimizer state, plus activations kept for backward."""
    params = built.parameters * FLOAT_BYTES * (2 + optimizer_slots(spec.compiled.optimizer))
    per_sample = math.prod(info.input_shape) + sum(math.prod(s.output_shape) for s in built.summary)
    activations = 2 * per_sample * spec.fit.batch_size * FLOAT_BYTES
    return int(params + activations)


def sample_batch(info: DataInfo, tokens: bool, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = (
        torch.zeros((n, *info.input_shape), dtype=torch.long)
        if tokens
        else torch.randn(n, *info.input_shape)
    )
    if info.task == "classification":
        y = torch.arange(n) % max(info.num_classes or 2, 1)
    else:
        y = torch.zeros(n, info.target_dim)
    return x, y


def _check_family(spec: JobSpec, info: DataInfo) -> None:
    """What no family beyond supervised honours is refused rather than ignored."""
    if spec.fit.augmentation is not None:
        raise SpecError(
            f"fit.augmentation applies to supervised training; the {spec.family} family takes none",
            ("fit", "augmentation"),
        )
    labelled = REGISTRY[spec.family].labels or (
        isinstance(spec, GANJob) and spec.gan.variant == "cgan"
    )
    if labelled and info.task == "classification" and info.target_dim > 1:
        raise SpecError(
            f"the dataset's targets are token sequences, not one class per sample: the {spec.family} "
            "family needs class labels",
            ("dataset",),
        )


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    """Raises SpecError (with the field path) for anything that would fail once training starts."""
    from models.families import (
        family_module,
    )  # imported here: the families import this module's DryRun

    record = REGISTRY[spec.family]
    if not record.augments:
        _check_family(spec, info)
    if not record.mixed_precision and spec.fit.mixed_precision in ("bf16", "fp16"):
        raise SpecError(
            f"the {spec.family} family trains in fp32: fit.mixed_precision {spec.fit.mixed_precision!r} "
            "applies to the supervised and seq2seq families; give 'auto' or 'off'",
            ("fit", "mixed_precision"),
        )
    report: DryRun = family_module(spec.family).dry_run(spec, info)
    return report

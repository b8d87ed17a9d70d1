"""The supervised family: `model.layers` (or a preset) trained on `compile`'s loss. Its networks
are built by models.network and served by models.inference.Predictor."""

from __future__ import annotations

import torch

from core.spec import DataInfo, JobSpec
from models.errors import SpecError
from models.network import BuildResult, Network, build_network
from models.objective import Objective, check_objective
from models.validation import DryRun, estimate_memory, sample_batch


def build(spec: JobSpec, info: DataInfo) -> Network:
    return build_network(spec, info).network


def _forward_by_layer(built: BuildResult, x: torch.Tensor) -> torch.Tensor:
    """Run layer by layer so a runtime failure still names its layer."""
    for index, module in enumerate(built.network.body):
        try:
            x = module(x)
        except RuntimeError as exc:
            layer = built.layers[index]
            raise SpecError(f"layer {index} ({layer.type}): {exc}", ("model", "layers", index)) from exc
    return x


def _check_augmentation(spec: JobSpec, info: DataInfo) -> None:
    a = spec.fit.augmentation
    if a is None:
        return
    geometric = a.horizontal_flip or a.vertical_flip or a.shift > 0 or a.rotation > 0
    if geometric and len(info.input_shape) != 3:
        raise SpecError(
            f"flips, shifts and rotations need (C, H, W) images; this dataset's samples are "
            f"{info.input_shape}: keep only noise_stddev",
            ("fit", "augmentation"),
        )
    if a.noise_stddev > 0 and spec.supervised_model.layers and spec.supervised_model.layers[0].type == "embedding":
        raise SpecError("noise_stddev cannot be added to token ids", ("fit", "augmentation", "noise_stddev"))


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    """Build, push two samples through layer by layer (a failure names its layer) and backpropagate."""
    _check_augmentation(spec, info)
    if info.task == "classification" and info.target_dim > 1:
        raise SpecError(
            'the dataset\'s targets are token sequences, one class per step: train it with "family": "seq2seq"',
            ("dataset",),
        )
    built = build_network(spec, info)
    units = check_objective(spec.compiled, info, built)
    x, y = sample_batch(info, built.network.tokens)
    built.network.train()
    logits = _forward_by_layer(built, x)
    if tuple(logits.shape[1:]) != built.network.output_shape:  # the builders' shape formulas disagree
        raise SpecError(
            f"inferred output {built.network.output_shape}, computed {tuple(logits.shape[1:])}", ("model", "layers")
        )
    objective = Objective(spec.compiled, info, units, built.network.head)
    objective.loss(logits, y).backward()
    return DryRun(
        parameters=built.parameters,
        output_shape=built.network.output_shape,
        layers=[
            {"index": s.index, "type": s.type, "output_shape": list(s.output_shape), "parameters": s.parameters}
            for s in built.summary
        ],
        estimated_memory_bytes=estimate_memory(spec, built, info),
    )

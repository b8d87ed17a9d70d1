"""The supervised family: `model.layers` (or a preset) trained on `compile`'s loss. Its networks
are built by models.network; `predict` answers classes with probabilities, or values."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from core.spec import DataInfo, JobSpec
from models.errors import PredictError, SpecError
from models.families import FamilyModel, Operation, OperationRequest, refuse_unused
from models.inference import affine, prepare_instances
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
            raise SpecError(
                f"layer {index} ({layer.type}): {exc}", ("model", "layers", index)
            ) from exc
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
    if (
        a.noise_stddev > 0
        and spec.supervised_model.layers
        and spec.supervised_model.layers[0].type == "embedding"
    ):
        raise SpecError(
            "noise_stddev cannot be added to token ids", ("fit", "augmentation", "noise_stddev")
        )


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
    if (
        tuple(logits.shape[1:]) != built.network.output_shape
    ):  # the builders' shape formulas disagree
        raise SpecError(
            f"inferred output {built.network.output_shape}, computed {tuple(logits.shape[1:])}",
            ("model", "layers"),
        )
    objective = Objective(spec.compiled, info, units, built.network.head)
    objective.loss(logits, y).backward()
    return DryRun(
        parameters=built.parameters,
        output_shape=built.network.output_shape,
        layers=[
            {
                "index": s.index,
                "type": s.type,
                "output_shape": list(s.output_shape),
                "parameters": s.parameters,
            }
            for s in built.summary
        ],
        estimated_memory_bytes=estimate_memory(spec, built, info),
    )


# -- predict -----------------------------------------------------------------------------------
def predict(model: FamilyModel, request: OperationRequest) -> dict[str, Any]:
    """Instances -> classes with probabilities (a classifier), or values in the target's units."""
    refuse_unused(request, "predict", ("instances",))
    if request.instances is None:
        raise PredictError("give `instances` to predict", "instances")
    network: Network = model.module  # type: ignore[assignment]
    preprocessing = model.meta.preprocessing
    x = prepare_instances(
        request.instances, model.info.input_shape, preprocessing, network.tokens, model.device
    )
    vocabulary = network.vocabulary
    if vocabulary is not None and (x.min() < 0 or x.max() >= vocabulary):
        raise PredictError(f"token ids must lie in 0..{vocabulary - 1}")
    logits = network.logits(x).float()
    if model.info.task == "classification":
        return _classes(model, network, logits)
    values = affine(network.head(logits).cpu().numpy(), preprocessing.get("target"), invert=True)
    return {"predictions": (values[:, 0] if values.shape[1] == 1 else values).tolist()}


def _classes(model: FamilyModel, network: Network, logits: torch.Tensor) -> dict[str, Any]:
    loss = model.spec.compiled.loss
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        probs = torch.cat([1 - p, p], dim=1)
    elif loss == "binary_crossentropy":
        probs = torch.sigmoid(logits)
    elif loss in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        probs = F.softmax(logits, dim=1)
    else:  # a regression loss on one-hot targets: the head's output is the score
        probs = network.head(logits)
    ids = probs.argmax(dim=1).tolist()
    names = model.meta.class_names or [str(i) for i in range(probs.shape[1])]
    return {
        "predictions": [names[i] for i in ids],
        "class_ids": ids,
        "probabilities": probs.cpu().tolist(),
        "classes": names,
    }


OPERATIONS: dict[str, Operation] = {"predict": predict}

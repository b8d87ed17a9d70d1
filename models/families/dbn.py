"""Deep belief networks: a stack of RBMs pretrained greedily, layer after layer, then fine-tuned
with a softmax output as a sigmoid MLP whose hidden layers are the RBMs' weights.

`fit.epochs` counts every epoch: the first `dbn.pretrain_epochs` x layers pretrain the RBMs in
turn (each on the hidden probabilities of the ones below), the rest fine-tune the whole stack
with `compile`. `phase_of` is that schedule, shared by the dry run and the worker.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import DataInfo, DBNJob, JobSpec, PlateauSchedule, as_family
from core.spec.families import DBNSpec
from models.errors import SpecError
from models.families import FamilyModel, Operation, OperationRequest
from models.families.rbm import RBM, check_visible, flat, inputs, memory
from models.validation import FLOAT_BYTES, DryRun, optimizer_slots

Phase = Literal["pretrain", "finetune"]
FINE_TUNE_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")


class DBN(nn.Module):
    def __init__(
        self, visible: int, hidden_units: list[int], classes: int, gaussian: bool = False
    ) -> None:
        super().__init__()
        sizes = [visible, *hidden_units]
        # Only the first RBM sees the data; the others see hidden probabilities, in [0, 1].
        self.rbms = nn.ModuleList(
            RBM(sizes[i], sizes[i + 1], gaussian and i == 0) for i in range(len(hidden_units))
        )
        self.output = nn.Linear(hidden_units[-1], classes)

    @property
    def stack(self) -> list[RBM]:
        """The RBMs, bottom first, typed (a ModuleList's items are only `nn.Module` to mypy)."""
        return [rbm for rbm in self.rbms if isinstance(rbm, RBM)]

    def below(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """What RBM `layer` is pretrained on: the hidden probabilities of the RBMs under it."""
        v = flat(x)
        with torch.no_grad():
            for rbm in self.stack[:layer]:
                v = rbm.hidden_probs(v)
        return v

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The top hidden layer, through the stack as sigmoid layers (differentiable, for fine-tuning)."""
        v = flat(x)
        for rbm in self.stack:
            v = rbm.hidden_probs(v)
        return v

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(x))


def section(spec: JobSpec) -> DBNSpec:
    return as_family(spec, DBNJob).dbn


def pretrain_epochs(spec: JobSpec) -> int:
    s = section(spec)
    return s.pretrain_epochs * len(s.hidden_units)


def phase_of(spec: JobSpec, epoch: int) -> tuple[Phase, int]:
    """(phase, RBM index being pretrained; the top index + 1 when fine-tuning) of 1-based `epoch`."""
    s = section(spec)
    if epoch <= pretrain_epochs(spec):
        return "pretrain", (epoch - 1) // s.pretrain_epochs
    return "finetune", len(s.hidden_units)


def build(spec: JobSpec, info: DataInfo) -> DBN:
    s = section(spec)
    classes = info.num_classes or 2
    return DBN(
        math.prod(info.input_shape), list(s.hidden_units), classes, gaussian=s.visible == "gaussian"
    )


def check(spec: JobSpec, info: DataInfo) -> None:
    """The DBN's own rules, refused before queuing (and again by the worker, for in-process runs)."""
    s = section(spec)
    check_visible(s.visible, spec.dataset, info, "dbn")
    if info.task != "classification":
        raise SpecError(
            "a DBN fine-tunes a softmax classifier; this dataset is regression", ("dataset",)
        )
    loss = spec.compiled.loss
    if loss not in FINE_TUNE_LOSSES:
        raise SpecError(
            f"a DBN's softmax output trains with {' or '.join(FINE_TUNE_LOSSES)}, not {loss}",
            ("compile", "loss"),
        )
    pre = pretrain_epochs(spec)
    if spec.fit.epochs <= pre:
        raise SpecError(
            f"fit.epochs counts every epoch, and pretraining takes the first {pre} "
            f"(dbn.pretrain_epochs {s.pretrain_epochs} x {len(s.hidden_units)} layers): give at least "
            f"{pre + 1} so fine-tuning gets one, or lower dbn.pretrain_epochs",
            ("fit", "epochs"),
        )
    # The loss and val_loss of pretraining epochs are RBM reconstruction errors, not the
    # fine-tuning cross-entropy: a monitor spanning both would compare different quantities.
    if pre and spec.fit.early_stopping is not None:
        raise SpecError(
            f"early stopping would compare pretraining's reconstruction errors with fine-tuning's "
            f"{loss}; remove fit.early_stopping, or set dbn.pretrain_epochs to 0",
            ("fit", "early_stopping"),
        )
    if pre and isinstance(spec.fit.lr_schedule, PlateauSchedule):
        raise SpecError(
            "reduce_on_plateau would compare pretraining's reconstruction errors with fine-tuning's "
            "loss; use a step or cosine schedule, or set dbn.pretrain_epochs to 0",
            ("fit", "lr_schedule"),
        )


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    s = section(spec)
    check(spec, info)
    dbn = build(spec, info)
    x = torch.rand(2, *info.input_shape)
    for layer, rbm in enumerate(dbn.stack):
        rbm.contrastive_divergence(dbn.below(x, layer), s.k, s.weight_decay)
    y = torch.arange(2) % dbn.output.out_features
    F.cross_entropy(dbn.logits(x), y).backward()
    layers: list[dict[str, Any]] = [
        {
            "index": i,
            "type": "rbm",
            "output_shape": [rbm.weight.shape[0]],
            "parameters": sum(p.numel() for p in rbm.parameters()),
        }
        for i, rbm in enumerate(dbn.stack)
    ]
    classes = dbn.output.out_features
    layers.append(
        {
            "index": len(layers),
            "type": "dense",
            "output_shape": [classes],
            "parameters": sum(p.numel() for p in dbn.output.parameters()),
        }
    )
    parameters = sum(p.numel() for p in dbn.parameters())
    units = math.prod(info.input_shape) + sum(s.hidden_units) + classes
    # Pretraining's momentum beside fine-tuning's optimizer state, which both live all along.
    estimate = memory(parameters, units, spec.fit.batch_size, s.k)
    estimate += parameters * FLOAT_BYTES * optimizer_slots(spec.compiled.optimizer)
    return DryRun(parameters, (classes,), layers, estimate)


# -- predict -----------------------------------------------------------------------------------
def predict(model: FamilyModel, request: OperationRequest) -> dict[str, Any]:
    """Instances -> classes, as a classifier answers: names, ids, softmax probabilities."""
    dbn: DBN = model.module  # type: ignore[assignment]
    probs = F.softmax(dbn.logits(inputs(model, request, "predict")).float(), dim=1)
    ids = probs.argmax(dim=1).tolist()
    names: list[str] = model.meta.class_names or [str(i) for i in range(probs.shape[1])]
    return {
        "predictions": [names[i] for i in ids],
        "class_ids": ids,
        "probabilities": probs.cpu().tolist(),
        "classes": names,
    }


def transform(model: FamilyModel, request: OperationRequest) -> dict[str, Any]:
    """Instances -> the top hidden layer's activations (after fine-tuning): learned features."""
    dbn: DBN = model.module  # type: ignore[assignment]
    return {"predictions": dbn.features(inputs(model, request, "transform")).cpu().tolist()}


OPERATIONS: dict[str, Operation] = {"predict": predict, "transform": transform}

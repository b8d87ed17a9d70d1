"""The supervised family: Keras' `Sequential` + `compile` + `fit` on (x, y)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from core.spec import JobSpec
from models.network import Network, build_network
from models.objective import Objective, check_objective
from worker.training.augment import augment
from worker.training.data import TrainData, TrainingFailed
from worker.training.optim import backprop_step, kernels, make_optimizer, penalty, with_penalty
from worker.training.task import Task

FOLD_EVERY = 16  # CPU steps whose metrics are computed in one pass


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


class SupervisedTask(Task):
    model: Network

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        super().__init__(spec, data, device)
        self.compile = spec.compiled
        built = build_network(spec, data.info)
        units = check_objective(self.compile, data.info, built)
        self.built = built
        self.model = built.network.to(device)
        scale = (data.preprocessing.get("target") or {}).get("scale")
        target_scale = (
            None if scale is None else torch.tensor(scale, dtype=torch.float32, device=device)
        )
        self.objective = Objective(self.compile, data.info, units, self.model.head, target_scale)
        self.optimizers = [make_optimizer(self.compile, list(self.model.parameters()))]
        self.kernels = kernels(self.model)
        self._check_token_ids(data)
        self.amp = amp_dtype(spec.fit.mixed_precision, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.on_host = device.type == "cpu"
        active = spec.fit.augmentation is not None and spec.fit.augmentation.active
        self.augmentation = spec.fit.augmentation if active else None
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _check_token_ids(self, data: TrainData) -> None:
        vocabulary = self.model.vocabulary
        for name, x in (
            ("training", data.x_train),
            ("validation", data.x_val),
            ("test", data.x_test),
        ):
            if vocabulary is not None and x is not None and len(x) and int(x.max()) >= vocabulary:
                raise TrainingFailed(
                    f"the {name} data holds token id {int(x.max())}, but the embedding's "
                    f"input_dim is {vocabulary}: raise model.layers.0.input_dim above it"
                )

    @property
    def parameters(self) -> int:
        return self.built.parameters

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        c, optimizer = self.compile, self.optimizers[0]
        if self.augmentation is not None:
            xb = augment(xb, self.augmentation)
        with self.autocast():
            logits = self.model.logits(xb)
            loss = self.objective.loss(logits.float(), yb)
        extra = penalty(self.kernels, c.regularization.l1, c.regularization.l2)
        if extra is not None:
            loss = loss + extra
        backprop_step(loss, optimizer, self.model.parameters(), c, self.scaler)
        self._accumulate(logits, yb, loss)
        return loss

    def _accumulate(self, logits: torch.Tensor, yb: torch.Tensor, loss: torch.Tensor) -> None:
        """On the CPU the loss is summed as a number (the engine reads it every step anyway) and
        metrics are folded in groups of FOLD_EVERY steps, as their small ops' dispatch is a
        measurable share of a small model's step; on a GPU the sums stay on the device."""
        if self.on_host:
            self.sums.add(loss=loss.item() * len(yb))
            self.pending.append((logits.detach(), yb))
            if len(self.pending) >= FOLD_EVERY:
                self._fold()
            return
        self.sums.add(**self.objective.batch_sums(logits, yb, loss))

    def _fold(self) -> None:
        pending = self.pending
        logits, y = (
            (torch.cat(t) for t in zip(*pending, strict=True)) if len(pending) > 1 else pending[0]
        )
        self.sums.add(
            **{key: value.item() for key, value in self.objective.metric_sums(logits, y).items()}
        )
        pending.clear()

    def epoch_metrics(self, seen: int) -> dict[str, float]:
        if self.pending:
            self._fold()
        return self.sums.take_means(seen)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return with_penalty(
            self.evaluate_in_batches(self._held_out_sums, x, y),
            self.kernels,
            self.compile.regularization,
        )

    def _held_out_sums(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast():
            logits = self.model.logits(xb).float()
        return self.objective.batch_sums(logits, yb, self.objective.loss(logits, yb))


TASK = SupervisedTask

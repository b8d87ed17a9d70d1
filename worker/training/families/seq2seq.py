"""The seq2seq family's training: teacher forcing with per-token sparse categorical cross-entropy;
evaluation decodes greedily, as predict does.

Training metrics (teacher-forced, the decoder reads the true previous token): loss, token_accuracy,
sequence_accuracy (and `accuracy`, the token accuracy, when compile.metrics lists it). Held-out metrics
(val_/test_) come from free-running greedy decoding, each step fed the model's own previous token, so
they are what predict would score: the loss there is the cross-entropy of those decoded steps.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import JobSpec, Seq2SeqJob, as_family
from models.families.seq2seq import Seq2Seq, build
from worker.training.data import TrainData, TrainingFailed
from worker.training.families.supervised import amp_dtype
from worker.training.optim import backprop_step, kernels, make_optimizer, penalty
from worker.training.task import Task

EVAL_BATCH = 1024  # sequences decoded at once in evaluation (bounds the logits kept per step)


def _regularised(model: nn.Module) -> list[torch.Tensor]:
    """Keras' kernel_regularizer: dense and embedding kernels and the recurrent input kernels (from
    `kernels`), plus the recurrent state kernels."""
    rnn = [
        p
        for m in model.modules()
        if isinstance(m, nn.LSTM | nn.GRU)
        for name, p in m.named_parameters()
        if name.startswith("weight_hh")
    ]
    return kernels(model) + rnn


class Seq2SeqTask(Task):
    model: Seq2Seq
    eval_batch = EVAL_BATCH

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        super().__init__(spec, data, device)
        self.compile = spec.compiled
        self.model = build(spec, data.info).to(device)
        self._check_ids(data)
        self.optimizers = [make_optimizer(self.compile, list(self.model.parameters()))]
        self.kernels = _regularised(self.model)
        self.amp = amp_dtype(spec.fit.mixed_precision, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.alias = "accuracy" in self.compile.metrics

    def _check_ids(self, data: TrainData) -> None:
        """Token ids outside the embeddings would fail deep inside training: say which and where."""
        m = self.model
        length, steps = data.info.input_shape[0], m.output_length
        for split in ("train", "val", "test"):
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            if x is None or y is None:
                continue
            if tuple(x.shape[1:]) != (length,) or tuple(y.shape[1:]) != (steps,):
                raise TrainingFailed(
                    f"{split} split: x is {list(x.shape)} and y {list(y.shape)}; seq2seq needs "
                    f"x (N, {length}) and y (N, {steps})"
                )
            for name, a, top in (("x", x, m.input_vocabulary), ("y", y, m.vocabulary)):
                if len(a) and (int(a.min()) < 0 or int(a.max()) >= top):
                    hint = " (set seq2seq.input_vocabulary)" if name == "x" else ""
                    raise TrainingFailed(
                        f"{split} split: {name} holds token ids {int(a.min())}..{int(a.max())}, "
                        f"outside 0..{top - 1}{hint}"
                    )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return (
            contextlib.nullcontext()
            if self.amp is None
            else torch.autocast(self.device.type, dtype=self.amp)
        )

    @staticmethod
    def _batch_sums(
        logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-batch sums over samples: the loss (a per-token mean) and the share of right tokens."""
        right = logits.argmax(dim=-1) == y
        return {
            "loss": loss.detach().float() * len(y),
            "token_accuracy": right.float().mean(dim=1).sum(),
            "sequence_accuracy": right.all(dim=1).float().sum(),
        }

    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        optimizer = self.optimizers[0]
        with self.autocast():
            logits = self.model(xb, yb)
        loss = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten())
        c = self.compile
        extra = penalty(self.kernels, c.regularization.l1, c.regularization.l2)
        total = loss if extra is None else loss + extra
        backprop_step(total, optimizer, self.model.parameters(), c, self.scaler)
        with torch.no_grad():
            self.sums.add(**self._batch_sums(logits.detach(), yb, loss))
        return loss

    def _aliased(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.alias:
            metrics["accuracy"] = metrics["token_accuracy"]
        return metrics

    def epoch_metrics(self, seen: int) -> dict[str, float]:
        return self._aliased(super().epoch_metrics(seen))

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return self._aliased(self.evaluate_in_batches(self._held_out_sums, x, y))

    def _held_out_sums(self, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast():
            _, logits = self.model.greedy(xb)
        return self._batch_sums(
            logits, yb, F.cross_entropy(logits.float().flatten(0, 1), yb.flatten())
        )

    def describe(self) -> dict[str, Any]:
        m = self.model
        attention = as_family(self.spec, Seq2SeqJob).seq2seq.attention
        return {
            "input_length": self.data.info.input_shape[0],
            "output_length": m.output_length,
            "input_vocabulary": m.input_vocabulary,
            "vocabulary": m.vocabulary,
            "start_token": m.start_token,
            "attention": "luong_general" if attention else None,
        }


TASK = Seq2SeqTask

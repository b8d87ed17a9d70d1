"""The autoencoder family's training: reconstruct the (optionally corrupted) input.

`ReconstructionTask` holds what the autoencoder and the VAE share (the optimizer step,
regularisation, clipping, the epoch's sums, evaluation in batches); a family overrides
`terms`, which returns the loss to minimise and the batch's metric sums.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from core.spec import AutoencoderJob, JobSpec, as_family
from models.families.autoencoder import Autoencoder, build, reconstruction_terms
from worker.training.data import TrainData, TrainingFailed
from worker.training.optim import backprop_step, kernels, make_optimizer, penalty, with_penalty
from worker.training.task import Task

Sums = dict[str, torch.Tensor]


class ReconstructionTask(Task):
    def __init__(
        self, spec: JobSpec, data: TrainData, device: torch.device, module: nn.Module
    ) -> None:
        super().__init__(spec, data, device)
        self.compile = spec.compiled
        if self.compile.loss == "binary_crossentropy":
            low, high = float(data.x_train.min()), float(data.x_train.max())
            if low < 0 or high > 1:
                raise TrainingFailed(
                    f"binary_crossentropy needs inputs in [0, 1]; these lie in [{low:g}, {high:g}]:"
                    " use mse, or scale the features to [0, 1]"
                )
        self.model = module.to(device)
        self.optimizers = [make_optimizer(self.compile, list(self.model.parameters()))]
        self.kernels = kernels(self.model)
        # mae/mse metrics are reported in the dataset's raw units, as supervised regression's are.
        features = data.preprocessing.get("features") or {}
        scale = features.get("scale")
        self.raw_scale = (
            None if scale is None else torch.tensor(scale, dtype=torch.float32, device=device)
        )

    @abstractmethod
    def terms(
        self, x_in: torch.Tensor, target: torch.Tensor, training: bool
    ) -> tuple[torch.Tensor, Sums]:
        """(the loss to minimise, the batch's metric sums, "loss" included as loss * batch size)."""

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def metric_sums(self, output: torch.Tensor, target: torch.Tensor) -> Sums:
        """compile.metrics (mae, mse) per value, in raw units, summed over the batch's samples."""
        sums: Sums = {}
        if not self.compile.metrics:
            return sums
        diff = output.detach().float() - target
        if self.raw_scale is not None:
            diff = diff / self.raw_scale
        per_sample = diff[0].numel()
        if "mae" in self.compile.metrics:
            sums["mae"] = diff.abs().sum() / per_sample
        if "mse" in self.compile.metrics:
            sums["mse"] = diff.square().sum() / per_sample
        return sums

    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        c, optimizer = self.compile, self.optimizers[0]
        loss, sums = self.terms(self.corrupt(xb), xb, training=True)
        extra = penalty(self.kernels, c.regularization.l1, c.regularization.l2)
        if extra is not None:
            loss = loss + extra
            sums["loss"] = sums["loss"] + extra.detach() * len(xb)
        backprop_step(loss, optimizer, self.model.parameters(), c)
        # Summed on the device (no host sync per step on a GPU); read once per epoch.
        self.sums.add(**sums)
        return loss

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        metrics = self.evaluate_in_batches(lambda xb: self.terms(xb, xb, training=False)[1], x)
        return with_penalty(metrics, self.kernels, self.compile.regularization)


class AutoencoderTask(ReconstructionTask):
    """loss: the reconstruction loss per value (Keras' mean over the sample's values and the batch)."""

    model: Autoencoder

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        super().__init__(spec, data, device, build(spec, data.info))
        section = as_family(spec, AutoencoderJob).autoencoder
        self.noise_stddev, self.mask_rate = section.noise_stddev, section.mask_rate

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """Denoising: the network sees a corrupted input and is scored against the clean one.
        Noise is drawn from torch's global RNG, which the engine seeds per epoch."""
        if self.noise_stddev > 0:
            x = x + self.noise_stddev * torch.randn_like(x)
        if self.mask_rate > 0:
            x = x * (torch.rand_like(x) >= self.mask_rate)
        return x

    def terms(
        self, x_in: torch.Tensor, target: torch.Tensor, training: bool
    ) -> tuple[torch.Tensor, Sums]:
        decoder = self.model.decoder
        logits = decoder.logits(self.model.encoder(x_in))
        loss = reconstruction_terms(self.compile.loss, decoder, logits, target).mean()
        sums = {
            "loss": loss.detach() * len(target),
            **self.metric_sums(decoder.output(logits), target),
        }
        return loss, sums

    def describe(self) -> dict[str, Any]:
        return {"code_shape": list(self.model.encoder.output_shape)}


TASK = AutoencoderTask

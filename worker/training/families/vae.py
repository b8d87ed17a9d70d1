"""The VAE family's training: minimise the negative ELBO, reporting its two terms.

Metrics, each a mean per sample: `loss` = reconstruction + beta * kl (the negative ELBO for
beta = 1), `reconstruction` (compile.loss summed over the sample's values) and `kl`
(KL(q(z|x) || N(0, I)) summed over the latent values); the engine adds their val_/test_ twins.
"""

from __future__ import annotations

from typing import Any

import torch

from core.spec import JobSpec, VAEJob, as_family
from models.families.vae import VAE, build, elbo_terms
from worker.training.data import TrainData
from worker.training.families.autoencoder import ReconstructionTask, Sums

EVAL_SEED = 0  # held-out ELBOs draw their latents from a fixed stream: comparable across epochs


class VAETask(ReconstructionTask):
    model: VAE

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        super().__init__(spec, data, device, build(spec, data.info))
        section = as_family(spec, VAEJob).vae
        self.beta = section.beta
        self.eval_generator: torch.Generator | None = None

    def terms(
        self, x_in: torch.Tensor, target: torch.Tensor, training: bool
    ) -> tuple[torch.Tensor, Sums]:
        # Training draws from torch's global RNG (seeded per epoch by the engine, so resume is exact).
        generator = None if training else self.eval_generator
        reconstruction, kl, logits = elbo_terms(
            self.model, self.compile.loss, x_in, target, generator
        )
        per_sample = reconstruction + self.beta * kl
        sums = {
            "loss": per_sample.detach().sum(),
            "reconstruction": reconstruction.detach().sum(),
            "kl": kl.detach().sum(),
            **self.metric_sums(self.model.decoder.output(logits), target),
        }
        return per_sample.mean(), sums

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.eval_generator = torch.Generator(device=self.device).manual_seed(EVAL_SEED)
        try:
            return super().evaluate(x, y)
        finally:
            self.eval_generator = None

    def describe(self) -> dict[str, Any]:
        return {"latent_dim": self.model.latent_dim, "beta": self.beta}


TASK = VAETask

"""The GAN family's training: per batch one discriminator (critic) update on a real and a fake batch,
and every `n_critic`-th batch one generator update.

Losses: gan, dcgan and cgan use binary cross-entropy on the discriminator's logit, d_loss =
BCE(D(real), 1) + BCE(D(fake), 0) and the non-saturating g_loss = BCE(D(G(z)), 1); wgan_gp uses
d_loss = mean D(fake) - mean D(real) + gp_weight * GP and g_loss = -mean D(G(z)), GP being the mean
of (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat of real and fake samples.

Metrics per epoch: `d_loss`, `g_loss` (means over discriminator resp. generator steps) and `loss` =
d_loss + g_loss (one number the engine checks for NaN; not a figure to minimise), plus
`d_accuracy` (share of real and fake samples the discriminator scores on the right side of 0.5) or,
for wgan_gp, `wasserstein` (mean D(real) - mean D(fake)) and `gp`. Held-out data gets the same names
(val_/test_, no gp: its fakes come from a fixed latent stream). Sample quality, after each epoch:
`fd`, the Frechet distance between 1000 generated samples (fixed latents) and up to 2000 real ones
(validation split, else training split) in the model's input space (images in [0, 1], tabular
features standardised); on gaussian_mixture also `modes_covered`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.spec import CompileSpec, GANJob, JobSpec, as_family
from core.spec.families import GANNetwork
from models.families.gan import GAN, build
from models.inference import affine
from worker.training.data import TrainData, TrainingFailed
from worker.training.optim import make_optimizer
from worker.training.task import Task

FD_FAKE, FD_FAKE_WIDE, FD_REAL = (
    1000,
    500,
    2000,
)  # generated samples per epoch: fewer when projected
FD_MAX_DIMS = (
    256  # wider samples are projected (a fixed random map) to keep the per-epoch cost small
)
EVAL_SEED, FD_SEED = 1, 2  # fixed latent streams: held-out figures comparable across epochs
MODE_SHARE, MODE_RADIUS = (
    0.01,
    3.0,
)  # a mode is covered by >= 1% of samples within 3 stddev of its centre


def optimizer_for(net: GANNetwork, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Each network has its own optimizer spec; make_optimizer reads only a CompileSpec's optimizer."""
    return make_optimizer(CompileSpec(optimizer=net.optimizer, loss="mse"), params)


class FrechetReference:
    """The real side of the Frechet distance, computed once per job: its mean, covariance and the
    covariance's square root (Tr sqrt(S_r^1/2 S_f S_r^1/2) equals the usual Tr sqrt(S_f S_r)), so an
    epoch pays for one covariance and one symmetric eigendecomposition of the generated side."""

    def __init__(self, real: torch.Tensor) -> None:
        b = real.flatten(1).double().cpu()
        self.projection: torch.Tensor | None = None
        if b.shape[1] > FD_MAX_DIMS:  # a fixed random map: same for every epoch and every job
            seeded = torch.Generator().manual_seed(0)
            projection = torch.randn(b.shape[1], FD_MAX_DIMS, generator=seeded, dtype=b.dtype)
            self.projection = projection / FD_MAX_DIMS**0.5
            b = b @ self.projection
        self.mean, self.cov = b.mean(0), torch.atleast_2d(torch.cov(b.T))
        w, v = torch.linalg.eigh(self.cov)
        self.root = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T

    @property
    def wide(self) -> bool:
        return self.projection is not None

    def distance(self, fake: torch.Tensor) -> float:
        """||mu_f - mu_r||^2 + Tr(S_f + S_r - 2 (S_r^1/2 S_f S_r^1/2)^1/2)."""
        a = fake.flatten(1).double().cpu()
        if self.projection is not None:
            a = a @ self.projection
        cov = torch.atleast_2d(torch.cov(a.T))
        cross = torch.linalg.eigvalsh(self.root @ cov @ self.root).clamp(min=0).sqrt().sum()
        return float(
            (a.mean(0) - self.mean).square().sum() + cov.trace() + self.cov.trace() - 2 * cross
        )


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frechet distance between two sample sets (rows), b as the reference."""
    return FrechetReference(b).distance(a)


class GANTask(Task):
    model: GAN

    def __init__(self, spec: JobSpec, data: TrainData, device: torch.device) -> None:
        super().__init__(spec, data, device)
        self.section = g = as_family(spec, GANJob).gan
        self.model = build(spec, data.info).to(device)
        # The generator's optimizer comes first: fit.lr_schedule drives it, the discriminator's follows.
        self.optimizers = [
            optimizer_for(g.generator, list(self.model.generator.parameters())),
            optimizer_for(g.discriminator, list(self.model.discriminator.parameters())),
        ]
        self.wasserstein = g.variant == "wgan_gp"
        self.figure_name = (
            "wasserstein" if self.wasserstein else "d_accuracy"
        )  # the second figure of _d_terms
        self.conditional = self.model.num_classes is not None
        self.batches = 0  # counts discriminator steps: the generator steps on every n_critic-th
        self.d_sums = torch.zeros(4, device=device)  # d_loss, d_accuracy | wasserstein, gp, samples
        self.g_sums = torch.zeros(2, device=device)  # g_loss, samples
        self.g_last = torch.zeros((), device=device)
        held_out = data.x_val is not None and len(data.x_val) >= 2  # a covariance needs two samples
        x_ref, y_ref = (data.x_val, data.y_val) if held_out else (data.x_train, data.y_train)
        assert x_ref is not None and y_ref is not None  # noqa: S101
        self.fd_real = x_ref[:FD_REAL]
        self.fd_reference = FrechetReference(self.fd_real) if len(self.fd_real) >= 2 else None
        self.fd_count = (
            FD_FAKE_WIDE if self.fd_reference is not None and self.fd_reference.wide else FD_FAKE
        )
        # a cgan's FD samples take the reference's labels, cycled: like is compared with like
        self.fd_labels = (
            y_ref[:FD_REAL].repeat(self.fd_count // len(self.fd_real) + 1)[: self.fd_count]
            if self.conditional
            else None
        )
        self.modes = self._mixture_modes() if spec.dataset.name == "gaussian_mixture" else None

    def _mixture_modes(self) -> tuple[np.ndarray, float]:
        """The modes' centres (class means) and their stddev (pooled over classes and axes), in raw units."""
        x = affine(self.data.x_train.numpy(), self.data.preprocessing.get("features"), invert=True)
        y = self.data.y_train.numpy()
        modes = np.unique(y)  # the modes the training split holds
        centres = np.stack([x[y == k].mean(0) for k in modes])
        return centres, float(np.sqrt(np.mean((x - centres[np.searchsorted(modes, y)]) ** 2)))

    def _gradient_penalty(
        self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        eps = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device)
        mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(
            self.model.score(mixed, labels).sum(), mixed, create_graph=True
        )
        return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()

    def _d_terms(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d_loss without a penalty, d_accuracy or the Wasserstein estimate) from the two batches' scores."""
        if self.wasserstein:
            gap = real.mean() - fake.mean()
            return -gap, gap
        loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        return loss, ((real > 0).float().mean() + (fake < 0).float().mean()) / 2

    def _g_loss(self, score: torch.Tensor) -> torch.Tensor:
        if self.wasserstein:
            return -score.mean()
        return F.binary_cross_entropy_with_logits(score, torch.ones_like(score))

    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> torch.Tensor:
        gan, (opt_g, opt_d) = self.model, self.optimizers
        labels = yb if self.conditional else None
        self.batches += 1
        generator_step = self.batches % self.section.n_critic == 0
        with torch.set_grad_enabled(
            generator_step
        ):  # the fake's graph is reused for the generator's step
            fake = gan.generate(gan.noise(len(xb)), labels)
        real_score, fake_score = gan.score(xb, labels), gan.score(fake.detach(), labels)
        d_loss, figure = self._d_terms(real_score, fake_score)
        gp = torch.zeros((), device=xb.device)
        if self.wasserstein and self.section.gp_weight > 0:
            gp = self._gradient_penalty(xb, fake.detach(), labels)
            d_loss = d_loss + self.section.gp_weight * gp
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        self.d_sums += torch.stack(
            [d_loss.detach(), figure.detach(), gp.detach(), d_loss.new_ones(())]
        ) * len(xb)
        if generator_step:
            gan.discriminator.requires_grad_(
                False
            )  # no weight gradients the generator's step would discard
            g_loss = self._g_loss(gan.score(fake, labels))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            gan.discriminator.requires_grad_(True)
            self.g_last = g_loss.detach()
            self.g_sums += torch.stack([self.g_last, self.g_last.new_ones(())]) * len(xb)
        return d_loss.detach() + self.g_last

    def epoch_metrics(self, seen: int) -> dict[str, float]:
        d_loss, figure, gp, n = self.d_sums.tolist()
        g_loss, g_n = self.g_sums.tolist()
        g_loss = (
            g_loss / g_n if g_n else self.g_last.item()
        )  # an epoch shorter than n_critic batches
        self.d_sums.zero_()
        self.g_sums.zero_()
        metrics = {"loss": d_loss / n + g_loss, "d_loss": d_loss / n, "g_loss": g_loss}
        if self.wasserstein:
            return metrics | {"wasserstein": figure / n, "gp": gp / n}
        return metrics | {"d_accuracy": figure / n}

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Real held-out samples against as many fakes from a fixed latent stream, networks in eval mode."""
        means = self.evaluate_in_batches(
            self._held_out_sums, x, y, self.model.noise(len(x), seed=EVAL_SEED)
        )
        return {"loss": means["d_loss"] + means["g_loss"], **means}

    def _held_out_sums(
        self, xb: torch.Tensor, yb: torch.Tensor, zb: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        gan, labels = self.model, yb if self.conditional else None
        fake_score = gan.score(gan.generate(zb, labels), labels)
        d_loss, figure = self._d_terms(gan.score(xb, labels), fake_score)
        figures = {"d_loss": d_loss, "g_loss": self._g_loss(fake_score), self.figure_name: figure}
        return {key: value * len(xb) for key, value in figures.items()}

    @torch.no_grad()
    def samples(self, n: int, seed: int) -> torch.Tensor:
        """`n` generated samples from fixed latents (a cgan's labels follow the FD reference's), eval mode."""
        gan = self.model
        gan.eval()
        labels = None if self.fd_labels is None else self.fd_labels[:n].to(self.device)
        out = gan.generate(gan.noise(n, seed=seed), labels)
        gan.train()
        return out

    def epoch_end(self, epoch: int) -> dict[str, float]:
        fake = self.samples(self.fd_count, FD_SEED)
        if not bool(torch.isfinite(fake).all()):
            raise TrainingFailed(
                f"the generator's samples became non-finite at epoch {epoch}; lower the "
                "generator's learning_rate or use variant wgan_gp"
            )
        figures = {"fd": self.fd_reference.distance(fake)} if self.fd_reference is not None else {}
        if self.modes is not None:
            centres, std = self.modes
            raw = affine(fake.cpu().numpy(), self.data.preprocessing.get("features"), invert=True)
            near = np.linalg.norm(raw[:, None, :] - centres[None], axis=2) <= MODE_RADIUS * std
            figures["modes_covered"] = float(np.sum(near.mean(axis=0) >= MODE_SHARE))
        return figures

    def extra_state(self) -> dict[str, Any]:
        return {"batches": self.batches, "g_last": float(self.g_last)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.batches = int(state.get("batches", 0))
        self.g_last = torch.tensor(float(state.get("g_last", 0.0)), device=self.device)

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.section.variant,
            "latent_dim": self.section.latent_dim,
            "num_classes": self.model.num_classes,
        }


TASK = GANTask

"""Variational autoencoder: the encoder's features feed two dense heads, the mean and the
log-variance of a diagonal Gaussian over `latent_dim` values; a latent drawn from it by the
reparameterisation trick (z = mean + exp(log_var / 2) * eps) goes through the decoder.

The loss is the negative ELBO per sample: the reconstruction term summed over the sample's
values (a log-likelihood, not a mean, so it keeps its weight against the KL term as in
Kingma & Welling) plus `beta` times KL(q(z|x) || N(0, I)).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.spec import DataInfo, JobSpec, VAEJob, as_family
from models.errors import PredictError, SpecError
from models.families import FamilyModel, Operation, OperationRequest, refuse_unused
from models.families.autoencoder import (
    Decoder,
    build_decoder,
    build_encoder,
    check_compile,
    code_inputs,
    forward_by_layer,
    in_raw_units,
    model_inputs,
    reconstruction_terms,
    report,
)
from models.init import init_layer
from models.network import LayerSummary, Network
from models.validation import DryRun

# exp(log_var) must stay finite in float32: a bound, not a prior (the KL term keeps it near 0).
LOG_VAR_RANGE = (-30.0, 20.0)
MAX_SAMPLES = 1024
DEFAULT_SAMPLES = 8


class VAE(nn.Module):
    def __init__(
        self, encoder: Network, mean: nn.Linear, log_var: nn.Linear, decoder: Decoder
    ) -> None:
        super().__init__()
        self.encoder, self.mean, self.log_var, self.decoder = encoder, mean, log_var, decoder

    @property
    def latent_dim(self) -> int:
        return self.mean.out_features

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return self.mean(features), self.log_var(features).clamp(*LOG_VAR_RANGE)

    def draw(
        self, mean: torch.Tensor, log_var: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The reparameterisation trick: the noise is an input, so gradients reach mean and log_var."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * log_var) * eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction through the posterior mean (what predict's `reconstruct` returns)."""
        return self.decoder(self.encode(x)[0])


def kl_per_sample(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)), summed over the latent values."""
    return -0.5 * (1 + log_var - mean.square() - log_var.exp()).sum(dim=1)


def elbo_terms(
    module: VAE,
    loss: str,
    x_in: torch.Tensor,
    target: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """(reconstruction, kl), one value per sample, and the decoder's logits for the drawn latents."""
    mean, log_var = module.encode(x_in)
    logits = module.decoder.logits(module.draw(mean, log_var, generator))
    reconstruction = (
        reconstruction_terms(loss, module.decoder, logits, target).flatten(1).sum(dim=1)
    )
    return reconstruction, kl_per_sample(mean, log_var), logits


def build(spec: JobSpec, info: DataInfo) -> VAE:
    return build_summarised(spec, info)[0]


def build_summarised(spec: JobSpec, info: DataInfo) -> tuple[VAE, dict[str, list[LayerSummary]]]:
    section = as_family(spec, VAEJob).vae
    check_compile(spec, info)
    encoder, enc_summary = build_encoder(list(section.encoder), info, section.initializer, "vae")
    if len(encoder.output_shape) != 1:
        last = len(section.encoder) - 1
        raise SpecError(
            f"vae.encoder: layer {last} ({section.encoder[-1].type}): output shape "
            f"{encoder.output_shape}; the encoder must end in features (1-D) for the mean and "
            "log-variance heads: add a flatten layer",
            ("vae", "encoder", last),
        )
    heads = []
    for _ in range(2):
        head = nn.Linear(encoder.output_shape[0], section.latent_dim)
        init_layer(head, section.initializer)
        heads.append(head)
    decoder, dec_summary = build_decoder(
        list(section.decoder), (section.latent_dim,), info, spec, section.initializer
    )
    latent = [
        LayerSummary(0, "dense", (section.latent_dim,), sum(p.numel() for p in head.parameters()))
        for head in heads
    ]
    summaries = {
        "encoder": enc_summary,
        "mean": latent[:1],
        "log_var": latent[1:],
        "decoder": dec_summary,
    }
    return VAE(encoder, heads[0], heads[1], decoder), summaries


def dry_run(spec: JobSpec, info: DataInfo) -> DryRun:
    module, summaries = build_summarised(spec, info)
    section = as_family(spec, VAEJob).vae
    x = torch.rand(2, *info.input_shape)  # in [0, 1]: a valid binary cross-entropy target
    module.train()
    features = module.encoder.head(
        forward_by_layer(module.encoder.body, x, "vae", "encoder", section.encoder)
    )
    z = module.draw(module.mean(features), module.log_var(features))
    logits = forward_by_layer(module.decoder.body, z, "vae", "decoder", section.decoder)
    reconstruction_terms(spec.compiled.loss, module.decoder, logits, x).sum().backward()
    return report(spec, info, module, summaries)


# -- predict ---------------------------------------------------------------------------------------
def _module(model: FamilyModel) -> VAE:
    module: VAE = model.module  # type: ignore[assignment]
    return module


def _reconstruct(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    return {
        "predictions": in_raw_units(model, _module(model)(model_inputs(model, req, "reconstruct")))
    }


def _encode(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    mean, log_var = _module(model).encode(model_inputs(model, req, "encode"))
    return {
        "predictions": mean.float().cpu().tolist(),
        "log_variances": log_var.float().cpu().tolist(),
    }


def _decode(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    module = _module(model)
    return {
        "predictions": in_raw_units(
            model, module.decoder(code_inputs(model, req, (module.latent_dim,)))
        )
    }


def _sample(model: FamilyModel, req: OperationRequest) -> dict[str, Any]:
    refuse_unused(req, "sample", ("count", "seed"))
    count = DEFAULT_SAMPLES if req.count is None else req.count
    if not 1 <= count <= MAX_SAMPLES:
        raise PredictError(f"count must lie in 1..{MAX_SAMPLES}", "count")
    # Drawn on the CPU from the request's seed, so a seed gives the same samples on any device.
    generator = torch.Generator()
    if req.seed is None:
        generator.seed()
    else:
        generator.manual_seed(req.seed)
    module = _module(model)
    z = torch.randn(count, module.latent_dim, generator=generator).to(model.device)
    return {"predictions": in_raw_units(model, module.decoder(z))}


OPERATIONS: dict[str, Operation] = {
    "reconstruct": _reconstruct,
    "encode": _encode,
    "decode": _decode,
    "sample": _sample,
}

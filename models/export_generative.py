"""The generative families' exports: an autoencoder's and a VAE's reconstruct, encode and decode,
a GAN's generate and discriminate, the preprocessing inside (models.export_graphs)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from core.spec import AutoencoderJob, GANJob, VAEJob, as_family
from models.export_graphs import Graph, Port, Preprocess, RawUnits, raw_port, samples_port
from models.families import FamilyModel
from models.families.autoencoder import Autoencoder, Decoder
from models.families.gan import GAN
from models.families.vae import VAE

# -- autoencoder and VAE -----------------------------------------------------------------------


class Reconstruct(nn.Module):
    def __init__(self, module: nn.Module, pre: nn.Module, post: nn.Module) -> None:
        super().__init__()
        self.module, self.pre, self.post = module, pre, post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.post(self.module(self.pre(x)).float())
        return out


class Encode(nn.Module):
    def __init__(self, encoder: nn.Module, pre: nn.Module) -> None:
        super().__init__()
        self.encoder, self.pre = encoder, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(self.pre(x)).float()
        return out


class EncodeGaussian(nn.Module):
    """A VAE's posterior: its mean and (clamped) log-variance, as `encode` answers them."""

    def __init__(self, vae: VAE, pre: nn.Module) -> None:
        super().__init__()
        self.vae, self.pre = vae, pre

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.vae.encode(self.pre(x))
        return mean.float(), log_var.float()


class Decode(nn.Module):
    """Code or latent vectors (model space, never rescaled) -> samples in raw units."""

    def __init__(self, decoder: Decoder, post: nn.Module) -> None:
        super().__init__()
        self.decoder, self.post = decoder, post

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.post(self.decoder(z).float())
        return out


def autoencoder_graphs(model: FamilyModel) -> list[Graph]:
    module = cast(Autoencoder, model.module)
    section = as_family(model.spec, AutoencoderJob).autoencoder
    pre, post = (
        Preprocess(model.meta.preprocessing),
        RawUnits(model.meta.preprocessing.get("features")),
    )
    parts = [
        ("autoencoder.encoder: ", list(section.encoder), module.encoder.body),
        ("autoencoder.decoder: ", list(section.decoder), module.decoder.body),
    ]
    code = module.encoder.output_shape
    return [
        Graph(
            "reconstruct",
            Reconstruct(module, pre, post),
            [raw_port(model)],
            [samples_port(model, "reconstructions")],
            parts,
        ),
        Graph(
            "encode",
            Encode(module.encoder, pre),
            [raw_port(model)],
            [Port("codes", "float32", (), "the codes (model space)")],
            parts[:1],
        ),
        Graph(
            "decode",
            Decode(module.decoder, post),
            [Port("codes", "float32", code, "code vectors, model space as encode gives them")],
            [samples_port(model, "samples")],
            parts[1:],
        ),
    ]


def vae_graphs(model: FamilyModel) -> list[Graph]:
    module = cast(VAE, model.module)
    section = as_family(model.spec, VAEJob).vae
    pre, post = (
        Preprocess(model.meta.preprocessing),
        RawUnits(model.meta.preprocessing.get("features")),
    )
    parts = [
        ("vae.encoder: ", list(section.encoder), module.encoder.body),
        ("vae.decoder: ", list(section.decoder), module.decoder.body),
    ]
    latent = Port(
        "latents", "float32", (module.latent_dim,), "latent vectors; N(0, I) draws give new samples"
    )
    gaussian = [
        Port("means", "float32", (), "the posterior's means"),
        Port("log_variances", "float32", (), "the posterior's log-variances"),
    ]
    return [
        Graph(
            "reconstruct",
            Reconstruct(module, pre, post),
            [raw_port(model)],
            [samples_port(model, "reconstructions")],
            parts,
        ),
        Graph("encode", EncodeGaussian(module, pre), [raw_port(model)], gaussian, parts[:1]),
        Graph(
            "decode",
            Decode(module.decoder, post),
            [latent],
            [samples_port(model, "samples")],
            parts[1:],
        ),
    ]


# -- GAN ----------------------------------------------------------------------------------------


class Generate(nn.Module):
    def __init__(self, gan: GAN, post: nn.Module) -> None:
        super().__init__()
        self.gan, self.post = gan, post

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.post(self.gan.generate(noise, labels).float())
        return out


class Discriminate(nn.Module):
    def __init__(self, gan: GAN, pre: nn.Module) -> None:
        super().__init__()
        self.gan, self.pre = gan, pre

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # GAN.score's reshape(len(x)) would freeze the traced batch size: one score per sample either way
        x = self.gan.condition(self.pre(x), labels)
        scores = self.gan.discriminator.logits(x).reshape(-1).float()
        return scores if self.gan.variant == "wgan_gp" else torch.sigmoid(scores)


def gan_graphs(model: FamilyModel) -> list[Graph]:
    gan = cast(GAN, model.module)
    g = as_family(model.spec, GANJob).gan
    pre, post = (
        Preprocess(model.meta.preprocessing),
        RawUnits(model.meta.preprocessing.get("features")),
    )
    noise = Port("noise", "float32", (gan.latent_dim,), "latent vectors, N(0, I) draws")
    labels = (
        []
        if gan.num_classes is None
        else [
            Port("labels", "int64", (), f"class ids in 0..{gan.num_classes - 1}", gan.num_classes)
        ]
    )
    score = (
        "wgan_gp's critic score" if gan.variant == "wgan_gp" else "the probability that it is real"
    )
    return [
        Graph(
            "generate",
            Generate(gan, post),
            [noise, *labels],
            [samples_port(model, "samples")],
            [("gan.generator: ", list(g.generator.layers), gan.generator.body)],
        ),
        Graph(
            "discriminate",
            Discriminate(gan, pre),
            [raw_port(model), *labels],
            [Port("scores", "float32", (), f"per instance, {score}")],
            [("gan.discriminator: ", list(g.discriminator.layers), gan.discriminator.body)],
        ),
    ]

"""The serving graphs an export holds: one small module per exportable operation, each taking the
inputs a caller has (raw instances, latent vectors, noise and labels) and giving what predict
answers, with the saved preprocessing inside it, so the exported file needs nothing of Fitserve.

Each wrapper reuses the family's own networks and replays its operation's arithmetic in float32, as
models.inference does: binarize, then `(x - offset) * scale`, and back with `x / scale + offset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from core.spec import AutoencoderJob, GANJob, VAEJob, as_family
from models.checkpoint_meta import Affine, Preprocessing
from models.families import FamilyModel
from models.families.autoencoder import Autoencoder, Decoder
from models.families.gan import GAN
from models.families.vae import VAE
from models.network import Network, resolve_layers

# Families whose operations loop or sample inside the model: no single feed-forward graph serves them.
REFUSED_FAMILIES = {
    "seq2seq": "its predict is a greedy decoding loop, one step per output token, that no "
    "feed-forward graph holds",
    "rbm": "its operations run Gibbs sampling (random draws inside the model)",
    "dbn": "it is not exported in this version (its layers are RBMs' stacked weights)",
}


class ExportError(ValueError):
    """A model, family or layer that cannot be exported; the message names it (the API's 422)."""


@dataclass(frozen=True)
class Port:
    """One input or output of an exported graph; `shape` is one sample's, the batch axis excluded."""

    name: str
    dtype: str  # "float32" or "int64"
    shape: tuple[int, ...]
    description: str
    high: int | None = None  # an int64 input's values lie in 0..high-1


@dataclass
class Graph:
    operation: str
    module: nn.Module
    inputs: list[Port]
    outputs: list[Port]  # their shapes are filled in by tracing
    # (where, layer specs, the modules that run them): to name the layer when an export fails
    parts: list[tuple[str, list[Any], nn.Sequential]] = field(default_factory=list)


def _tensor(numbers: Any) -> torch.Tensor:
    # float32 as models.inference.affine converts them, so the arithmetic is the served one
    return torch.tensor(numbers, dtype=torch.float32)


class Preprocess(nn.Module):
    """Raw instances -> model space: the dataset's binarize threshold, then the features' affine."""

    threshold: torch.Tensor
    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        threshold = preprocessing.get("binarize")
        features = preprocessing.get("features")
        self.binarize = threshold is not None
        self.affine = bool(features)
        self.register_buffer("threshold", _tensor(threshold if threshold is not None else 0.0))
        self.register_buffer("offset", _tensor(features["offset"] if features else 0.0))
        self.register_buffer("scale", _tensor(features["scale"] if features else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binarize:
            x = (x > self.threshold).to(torch.float32)
        return (x - self.offset) * self.scale if self.affine else x


class RawUnits(nn.Module):
    """Model space -> raw units (`x / scale + offset`, as models.inference.affine inverts)."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, affine: Affine | None) -> None:
        super().__init__()
        self.active = bool(affine)
        self.register_buffer("offset", _tensor(affine["offset"] if affine else 0.0))
        self.register_buffer("scale", _tensor(affine["scale"] if affine else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale + self.offset if self.active else x


# -- supervised ---------------------------------------------------------------------------------


class Classify(nn.Module):
    """models.families.supervised._classes: the probabilities the loss implies, and their argmax."""

    def __init__(self, network: Network, pre: nn.Module, mode: str) -> None:
        super().__init__()
        self.network, self.pre, self.mode = network, pre, mode

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network.logits(self.pre(x)).float()
        if self.mode == "one_logit":
            p = torch.sigmoid(logits)
            probs = torch.cat([1 - p, p], dim=1)
        elif self.mode == "sigmoid":
            probs = torch.sigmoid(logits)
        elif self.mode == "softmax":
            probs = F.softmax(logits, dim=1)
        else:
            probs = self.network.head(logits)
        return probs, probs.argmax(dim=1)


class Regress(nn.Module):
    def __init__(self, network: Network, pre: nn.Module, post: nn.Module, squeeze: bool) -> None:
        super().__init__()
        self.network, self.pre, self.post, self.squeeze = network, pre, post, squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: torch.Tensor = self.post(
            self.network.head(self.network.logits(self.pre(x)).float())
        )
        return values[:, 0] if self.squeeze else values  # one target answers a value per instance


def _class_mode(loss: str, outputs: int) -> str:
    if outputs == 1:
        return "one_logit"
    if loss == "binary_crossentropy":
        return "sigmoid"
    if loss in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        return "softmax"
    return "head"


def _instances(model: FamilyModel, network: Network) -> Port:
    if network.tokens:
        vocabulary = network.vocabulary
        return Port(
            "instances",
            "int64",
            model.info.input_shape,
            f"token ids in 0..{vocabulary - 1 if vocabulary else '?'}",
            vocabulary,
        )
    return Port(
        "instances", "float32", model.info.input_shape, "raw instances, the dataset's units"
    )


def supervised_graphs(model: FamilyModel) -> list[Graph]:
    network = cast(Network, model.module)
    pre = Preprocess({} if network.tokens else model.meta.preprocessing)
    layers = resolve_layers(model.spec.supervised_model, model.info, model.spec.compiled.loss)
    parts = [("", layers, network.body)]
    x = _instances(model, network)
    if model.info.task == "classification":
        mode = _class_mode(model.spec.compiled.loss, network.output_shape[-1])
        outputs = [
            Port("probabilities", "float32", (), "one probability per class, in `classes` order"),
            Port("class_ids", "int64", (), "the most probable class's index in `classes`"),
        ]
        return [Graph("predict", Classify(network, pre, mode), [x], outputs, parts)]
    post = RawUnits(model.meta.preprocessing.get("target"))
    squeeze = network.output_shape == (1,)
    out = Port("predictions", "float32", (), "the predicted values, in the target's units")
    return [Graph("predict", Regress(network, pre, post, squeeze), [x], [out], parts)]


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


def _raw(model: FamilyModel) -> Port:
    return Port(
        "instances", "float32", model.info.input_shape, "raw instances, the dataset's units"
    )


def _samples(model: FamilyModel, what: str) -> Port:
    return Port(what, "float32", model.info.input_shape, f"{what}, in the dataset's raw units")


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
            [_raw(model)],
            [_samples(model, "reconstructions")],
            parts,
        ),
        Graph(
            "encode",
            Encode(module.encoder, pre),
            [_raw(model)],
            [Port("codes", "float32", (), "the codes (model space)")],
            parts[:1],
        ),
        Graph(
            "decode",
            Decode(module.decoder, post),
            [Port("codes", "float32", code, "code vectors, model space as encode gives them")],
            [_samples(model, "samples")],
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
            [_raw(model)],
            [_samples(model, "reconstructions")],
            parts,
        ),
        Graph("encode", EncodeGaussian(module, pre), [_raw(model)], gaussian, parts[:1]),
        Graph(
            "decode",
            Decode(module.decoder, post),
            [latent],
            [_samples(model, "samples")],
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
            [_samples(model, "samples")],
            [("gan.generator: ", list(g.generator.layers), gan.generator.body)],
        ),
        Graph(
            "discriminate",
            Discriminate(gan, pre),
            [_raw(model), *labels],
            [Port("scores", "float32", (), f"per instance, {score}")],
            [("gan.discriminator: ", list(g.discriminator.layers), gan.discriminator.body)],
        ),
    ]


BUILDERS = {
    "supervised": supervised_graphs,
    "autoencoder": autoencoder_graphs,
    "vae": vae_graphs,
    "gan": gan_graphs,
}

# Served operations no export holds, and what to run instead.
NOT_EXPORTED = {
    "vae": {"sample": "draws its latents inside the service: draw N(0, I) latents and run decode"},
}


def graphs(model: FamilyModel) -> list[Graph]:
    """The family's exportable operations; a family that has none is an ExportError naming it."""
    family = model.spec.family
    if family in REFUSED_FAMILIES or family not in BUILDERS:
        why = REFUSED_FAMILIES.get(family, "no export is defined for it")
        raise ExportError(f"the {family} family cannot be exported: {why}")
    return BUILDERS[family](model)

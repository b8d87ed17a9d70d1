"""Spec sections of the model families beyond supervised `fit` (`"family"` in the job spec).

Each family names its networks as layer lists in the same vocabulary as `model.layers`, so
the registry, shape inference and layer-indexed errors serve every family alike.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from core.layers import MAX_LAYERS, Initializer, LayerSpec, StrictModel
from core.optimizers import Adam, OptimizerSpec

Family = Literal["supervised", "autoencoder", "vae", "gan", "rbm", "dbn", "seq2seq"]
Layers = Annotated[list[LayerSpec], Field(min_length=1, max_length=MAX_LAYERS)]
Units = Annotated[int, Field(ge=1, le=65_536)]


def named(value: Any, key: str) -> Any:
    """Keras lets `"adam"` stand for `{"type": "adam"}`; so do we."""
    return {key: value} if isinstance(value, str) else value


class AutoencoderSpec(StrictModel):
    """encoder: input -> code; decoder: code -> the input's shape. `compile.loss` is the
    reconstruction loss (mse, mae, huber or binary_crossentropy)."""

    encoder: Layers
    decoder: Layers
    initializer: Initializer = "glorot_uniform"
    noise_stddev: float = Field(0.0, ge=0.0, le=10.0, description="denoising: Gaussian noise on training inputs")
    mask_rate: float = Field(0.0, ge=0.0, lt=1.0, description="denoising: share of training inputs zeroed")


class VAESpec(StrictModel):
    """encoder: input -> features (a dense mean and log-variance of `latent_dim` follow it);
    decoder: latent -> the input's shape. `compile.loss` is the reconstruction term."""

    encoder: Layers
    decoder: Layers
    latent_dim: Annotated[int, Field(ge=1, le=4096)] = 2
    beta: float = Field(1.0, ge=0.0, le=100.0, description="weight of the KL term (beta-VAE)")
    initializer: Initializer = "glorot_uniform"


class GANNetwork(StrictModel):
    layers: Layers
    optimizer: OptimizerSpec = Field(default_factory=lambda: Adam(type="adam", learning_rate=2e-4, beta_1=0.5))
    initializer: Initializer = "glorot_uniform"

    @field_validator("optimizer", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        return named(value, "type")


class GANSpec(StrictModel):
    """generator: latent (plus a one-hot label for cgan) -> a sample of the dataset's shape;
    discriminator: a sample (plus its label for cgan) -> one score."""

    variant: Literal["gan", "dcgan", "cgan", "wgan_gp"] = "gan"
    latent_dim: Annotated[int, Field(ge=1, le=4096)] = 64
    generator: GANNetwork
    discriminator: GANNetwork
    n_critic: Annotated[int, Field(ge=1, le=100)] = Field(1, description="discriminator steps per generator step")
    gp_weight: float = Field(10.0, ge=0.0, le=1000.0, description="wgan_gp's gradient-penalty weight")


class RBMSpec(StrictModel):
    """Trained by contrastive divergence (CD-k), not backpropagation."""

    hidden_units: Units
    visible: Literal["bernoulli", "gaussian"] = "bernoulli"
    k: Annotated[int, Field(ge=1, le=100)] = 1
    learning_rate: float = Field(0.05, gt=0.0, le=10.0)
    momentum: float = Field(0.5, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class DBNSpec(StrictModel):
    """Greedy layer-wise RBM pretraining (`pretrain_epochs` per layer), then supervised
    fine-tuning of the stack plus a softmax output with `compile` for `fit.epochs`."""

    hidden_units: list[Units] = Field(min_length=1, max_length=8)
    visible: Literal["bernoulli", "gaussian"] = "bernoulli"
    k: Annotated[int, Field(ge=1, le=100)] = 1
    pretrain_epochs: Annotated[int, Field(ge=0, le=1000)] = 5
    learning_rate: float = Field(0.05, gt=0.0, le=10.0, description="pretraining")
    momentum: float = Field(0.5, ge=0.0, lt=1.0, description="pretraining")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="pretraining")


class Seq2SeqSpec(StrictModel):
    """Token sequence -> token sequence: an encoder RNN and a decoder RNN with attention over
    the encoder's states, trained with teacher forcing and decoded greedily."""

    cell: Literal["lstm", "gru"] = "lstm"
    embedding_dim: Units = 32
    units: Units = 64
    num_layers: Annotated[int, Field(ge=1, le=4)] = 1
    attention: bool = True
    bidirectional_encoder: bool = False

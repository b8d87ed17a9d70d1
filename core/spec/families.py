"""Spec sections of the model families beyond supervised `fit` (`"family"` in the job spec).

Each family names its networks as layer lists in the same vocabulary as `model.layers`, so
the registry, shape inference and layer-indexed errors serve every family alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from core.spec.base import StrictModel, named
from core.spec.layers import MAX_LAYERS, Initializer, LayerSpec
from core.spec.optimizers import Adam, OptimizerSpec

Family = Literal[
    "supervised", "autoencoder", "vae", "gan", "rbm", "dbn", "seq2seq"
]  # REGISTRY's keys
Layers = Annotated[list[LayerSpec], Field(min_length=1, max_length=MAX_LAYERS)]
Units = Annotated[int, Field(ge=1, le=65_536)]


class AutoencoderSpec(StrictModel):
    """encoder: input -> code; decoder: code -> the input's shape. `compile.loss` is the
    reconstruction loss (mse, mae, huber or binary_crossentropy)."""

    encoder: Layers
    decoder: Layers
    initializer: Initializer = "glorot_uniform"
    noise_stddev: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="denoising: Gaussian noise added to training "
        "inputs, in the model's units (images scaled to [0, 1])",
    )
    mask_rate: float = Field(
        0.0, ge=0.0, lt=1.0, description="denoising: share of training input values zeroed"
    )


class VAESpec(StrictModel):
    """encoder: input -> features (a dense mean and log-variance of `latent_dim` follow it);
    decoder: latent -> the input's shape. `compile.loss` is the reconstruction term."""

    encoder: Layers
    decoder: Layers
    latent_dim: Annotated[int, Field(ge=1, le=4096)] = 2
    beta: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="weight of the KL term (beta-VAE); with mse it "
        "stands for 2 * sigma^2 of a Gaussian decoder, e.g. 0.05 for images in [0, 1]",
    )
    initializer: Initializer = "glorot_uniform"


class GANNetwork(StrictModel):
    layers: Layers
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: Adam(type="adam", learning_rate=2e-4, beta_1=0.5),
        description="this network's own; default adam(2e-4, beta_1 0.5)",
    )
    initializer: Initializer = Field(
        "glorot_uniform", description="for every layer that names none"
    )

    @field_validator("optimizer", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        return named(value, "type")


class GANSpec(StrictModel):
    """generator: latent (plus a one-hot label for cgan) -> a sample of the dataset's shape;
    discriminator: a sample (plus its label for cgan, as extra channels) -> one score (a logit)."""

    variant: Literal["gan", "dcgan", "cgan", "wgan_gp"] = Field(
        "gan",
        description=(
            "gan and dcgan: cross-entropy on the discriminator's logit, non-saturating generator loss; cgan: the same, "
            "both networks given the class label (a classification dataset); wgan_gp: Wasserstein critic (no "
            "sigmoid) with a gradient penalty"
        ),
    )
    latent_dim: Annotated[int, Field(ge=1, le=4096)] = Field(
        64, description="the generator's noise input size"
    )
    generator: GANNetwork
    discriminator: GANNetwork
    n_critic: Annotated[int, Field(ge=1, le=100)] = Field(
        1, description="discriminator steps per generator step"
    )
    gp_weight: float = Field(
        10.0, ge=0.0, le=1000.0, description="wgan_gp's gradient-penalty weight (wgan_gp only)"
    )


Visible = Literal["bernoulli", "gaussian"]
VISIBLE = "bernoulli: binary data (dataset.binarize) or [0, 1] images; gaussian: unit variance, standardised data"
CD_RATE = "CD step size; default 0.1 for bernoulli visible units, 0.01 for gaussian ones (they diverge sooner)"


class RBMSpec(StrictModel):
    """Trained by contrastive divergence (CD-k), not backpropagation: SGD with momentum on
    <v h>_data - <v h>_model after k Gibbs steps; `fit.epochs` and `fit.batch_size` as usual."""

    hidden_units: Units
    visible: Visible = Field("bernoulli", description=VISIBLE)
    k: Annotated[int, Field(ge=1, le=100)] = Field(1, description="Gibbs steps per update (CD-k)")
    learning_rate: float | None = Field(None, gt=0.0, le=10.0, description=CD_RATE)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(
        0.0, ge=0.0, le=1.0, description="L2 on the weights (not the biases)"
    )


class DBNSpec(StrictModel):
    """Greedy layer-wise RBM pretraining, then supervised fine-tuning of the stack (as a sigmoid
    MLP) plus a softmax output with `compile`. `fit.epochs` counts every epoch: the first
    `pretrain_epochs` x len(hidden_units) pretrain the RBMs in turn, the rest fine-tune."""

    hidden_units: list[Units] = Field(min_length=1, max_length=8)
    visible: Visible = Field("bernoulli", description=VISIBLE)
    k: Annotated[int, Field(ge=1, le=100)] = Field(
        1, description="Gibbs steps per pretraining update"
    )
    pretrain_epochs: Annotated[int, Field(ge=0, le=1000)] = Field(
        5, description="per RBM; 0: no pretraining"
    )
    learning_rate: float | None = Field(
        None, gt=0.0, le=10.0, description=f"pretraining: {CD_RATE}"
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="pretraining")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="pretraining: L2 on the weights")


class Seq2SeqSpec(StrictModel):
    """Token sequence -> token sequence: an encoder RNN and a decoder RNN with Luong attention over
    the encoder's states, trained with teacher forcing and decoded greedily. `compile.loss` must be
    sparse_categorical_crossentropy (one target id per step)."""

    cell: Literal["lstm", "gru"] = Field(
        "lstm", description="the encoder's and decoder's recurrent cell"
    )
    embedding_dim: int = Field(
        32, ge=1, le=4096, description="token embedding size (encoder and decoder)"
    )
    units: int = Field(64, ge=1, le=4096, description="hidden units per recurrent layer")
    num_layers: int = Field(1, ge=1, le=4, description="stacked recurrent layers")
    attention: bool = Field(
        True, description="Luong (general) attention; false: the final state alone"
    )
    bidirectional_encoder: bool = Field(
        False, description="read the input both ways (state bridged to the decoder)"
    )
    input_vocabulary: int | None = Field(
        None,
        ge=2,
        le=65_536,
        description="source ids 0..n-1; default: the target vocabulary (the dataset's num_classes)",
    )


@dataclass(frozen=True)
class FamilyRecord:
    """Everything the rest of Fitserve knows of a family, in one place. The spec's checks, the
    API's limits and predict operations, the dry run, the worker's task and the docs read this;
    the family's own code lives in `models.families.<name>` (networks, dry run, predict) and
    `worker.training.families.<name>` (its `Task`)."""

    name: str
    section: (
        str  # the spec field holding its networks: `model` for supervised, else its own section
    )
    compiles: bool  # takes `compile` (optimizer and loss); gan and rbm carry their own optimizers
    metrics: tuple[str, ...]  # per-epoch metrics beside loss and compile.metrics, with val_ twins
    operations: tuple[str, ...]  # predict operations; the first is the default
    networks: tuple[tuple[str, ...], ...]  # paths of its layer lists inside `section`
    example: str  # examples/<example>.json: one spec of the family that trains in seconds
    guide: str  # where its spec, metrics and operations are documented
    epoch_metrics: tuple[str, ...] = ()  # computed once per epoch, without a val_ twin
    tokens: bool = False  # reads and writes token ids rather than features
    labels: bool = False  # needs one class label per sample
    augments: bool = False  # honours fit.augmentation (image transforms of the training split)
    mixed_precision: bool = (
        False  # honours fit.mixed_precision bf16/fp16 (autocast); others train in fp32
    )

    @property
    def model_module(self) -> str:
        return f"models.families.{self.name}"

    @property
    def trainer_module(self) -> str:
        return f"worker.training.families.{self.name}"


REGISTRY: dict[str, FamilyRecord] = {r.name: r for r in (
    FamilyRecord("supervised", "model", True, (), ("predict",), (("layers",),), "digits_mlp", "docs/spec.md",
                 augments=True, mixed_precision=True),
    FamilyRecord("autoencoder", "autoencoder", True, (), ("reconstruct", "encode", "decode"),
                 (("encoder",), ("decoder",)), "digits_autoencoder", "docs/autoencoder.md"),
    FamilyRecord("vae", "vae", True, ("reconstruction", "kl"), ("reconstruct", "encode", "decode", "sample"),
                 (("encoder",), ("decoder",)), "digits_vae", "docs/autoencoder.md"),
    FamilyRecord("gan", "gan", False, ("d_loss", "g_loss"), ("generate", "discriminate"),
                 (("generator", "layers"), ("discriminator", "layers")), "gaussian_mixture_gan", "docs/gan.md",
                 epoch_metrics=("fd",)),
    FamilyRecord("rbm", "rbm", False, ("free_energy",), ("transform", "reconstruct"), (), "digits_rbm",
                 "docs/rbm.md"),
    FamilyRecord("dbn", "dbn", True, (), ("predict", "transform"), (), "digits_dbn", "docs/rbm.md", labels=True),
    FamilyRecord("seq2seq", "seq2seq", True, ("token_accuracy", "sequence_accuracy"), ("predict",), (),
                 "reverse_seq2seq", "docs/seq2seq.md", tokens=True, mixed_precision=True),
)}  # fmt: skip  # a table: one family a row reads better than the formatter's one field a line

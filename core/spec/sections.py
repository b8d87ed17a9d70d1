"""The sections every job spec may hold beside its family's own: the dataset, the supervised
`model`, `compile` and `fit`, in Keras' vocabulary; and DataInfo, what a dataset tells the
builders."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from core.spec.base import StrictModel, named
from core.spec.layers import MAX_LAYERS, Activation, Initializer, LayerSpec
from core.spec.optimizers import Adam, OptimizerSpec

BuiltinDataset = Literal[
    "digits",
    "iris",
    "wine",
    "breast_cancer",
    "diabetes",
    "mnist",
    "moons",
    "circles",
    "blobs",
    "spirals",
    "sine",
    "road",
    "gaussian_mixture",
    "sequence_sine",
    "sequence_classes",
    "sequence_tokens",
    "sequence_reverse",
    "sequence_copy",
]
Loss = Literal[
    "mse",
    "mae",
    "huber",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
]
Metric = Literal["accuracy", "mae", "mse"]
CLASSIFICATION_LOSSES = (
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
)
Fraction = Annotated[float, Field(ge=0.0, le=0.9)]


class DatasetSpec(StrictModel):
    name: BuiltinDataset | None = Field(None, description="a built-in dataset")
    id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="an uploaded dataset's id"
    )
    target: str | None = Field(None, max_length=200, description="CSV column holding the target")
    task: Literal["classification", "regression"] | None = Field(
        None, description="default: inferred"
    )
    n_samples: int | None = Field(None, ge=10, le=200_000, description="generated datasets only")
    noise: float | None = Field(None, ge=0.0, le=10.0, description="generated datasets only")
    classes: int | None = Field(
        None,
        ge=2,
        le=100,
        description="blobs, spirals, sequence_classes, sequence_tokens; the vocabulary of sequence_reverse/copy",
    )
    validation_split: Fraction | None = Field(
        None, description="same as fit.validation_split; give one"
    )
    test_split: Fraction = Field(
        0.0, description="held out for a final evaluation; mnist has its own"
    )
    standardize: bool | None = Field(None, description="default: tabular features yes, images no")
    binarize: float | None = Field(
        None,
        ge=-1e9,
        le=1e9,
        description="a threshold in raw units (e.g. 8 for "
        "digits): features above it become 1, the rest 0, before any scaling",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of `name` (built-in) or `id` (uploaded)")
        return self


class MlpPreset(StrictModel):
    name: Literal["mlp"]
    hidden_units: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(default=[512], max_length=32)
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batchnorm: bool = False
    output_units: int | None = Field(None, ge=1, le=65_536, description="default: from the dataset")
    output_activation: Activation | None = Field(None, description="default: from the loss")


class ShallowVggPreset(StrictModel):
    """The ShallowVGGNet of the lecture notes: (CONV-BN)x2-POOL-DROP twice, FC 512-BN-DROP, softmax."""

    name: Literal["shallow_vggnet"]
    classes: int | None = Field(None, ge=2, le=10_000, description="default: from the dataset")


class AlvinnPreset(StrictModel):
    """ALVINN: a 30x32 input, one hidden layer of 4 units, 30 linear outputs (steering direction)."""

    name: Literal["alvinn"]
    hidden_activation: Activation = "sigmoid"


PresetSpec = Annotated[MlpPreset | ShallowVggPreset | AlvinnPreset, Field(discriminator="name")]


class ModelSpec(StrictModel):
    layers: list[LayerSpec] | None = Field(None, min_length=1, max_length=MAX_LAYERS)
    preset: PresetSpec | None = None
    initializer: Initializer = Field(
        "glorot_uniform", description="for every layer that names none"
    )

    @field_validator("preset", mode="before")
    @classmethod
    def _preset_by_name(cls, value: Any) -> Any:
        return named(value, "name")

    @model_validator(mode="after")
    def _layers_or_preset(self) -> ModelSpec:
        if (self.layers is None) == (self.preset is None):
            raise ValueError("give exactly one of `layers` or `preset`")
        return self


class Regularization(StrictModel):
    """Penalties on kernels (not biases), added to the loss as Keras' kernel_regularizer does."""

    l1: float = Field(0.0, ge=0.0, le=1.0)
    l2: float = Field(0.0, ge=0.0, le=1.0)


class CompileSpec(StrictModel):
    optimizer: OptimizerSpec = Field(default_factory=lambda: Adam(type="adam"))
    loss: Loss
    metrics: list[Metric] = Field(default_factory=list, max_length=3)
    regularization: Regularization = Field(default_factory=Regularization)
    clip_grad_norm: float | None = Field(None, gt=0.0, le=1e6)
    clip_grad_value: float | None = Field(None, gt=0.0, le=1e6)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_by_name(cls, value: Any) -> Any:
        return named(value, "type")

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("metrics must not repeat")
        return value


class EarlyStopping(StrictModel):
    monitor: str = Field("val_loss", max_length=64)
    patience: int = Field(0, ge=0, le=10_000)
    min_delta: float = Field(0.0, ge=0.0, le=1e6)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best: bool = False


class StepSchedule(StrictModel):
    type: Literal["step"]
    step_size: int = Field(ge=1, le=10_000, description="epochs between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0)


class CosineSchedule(StrictModel):
    type: Literal["cosine"]
    t_max: int | None = Field(
        None, ge=1, le=10_000, description="epochs to the minimum; default fit.epochs"
    )
    min_lr: float = Field(0.0, ge=0.0, le=10.0)


class PlateauSchedule(StrictModel):
    type: Literal["reduce_on_plateau"]
    monitor: str = Field("val_loss", max_length=64)
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(10, ge=0, le=10_000)
    min_delta: float = Field(1e-4, ge=0.0, le=1e6)
    min_lr: float = Field(0.0, ge=0.0, le=10.0)


ScheduleSpec = Annotated[
    StepSchedule | CosineSchedule | PlateauSchedule, Field(discriminator="type")
]


class Augmentation(StrictModel):
    """Random transforms of training images (never validation or test), drawn from the epoch's
    seed so a run and its resume see the same batches; as Keras' ImageDataGenerator."""

    horizontal_flip: bool = False
    vertical_flip: bool = False
    shift: float = Field(
        0.0, ge=0.0, le=0.5, description="largest shift, as a fraction of height and width"
    )
    rotation: float = Field(0.0, ge=0.0, le=180.0, description="largest rotation, in degrees")
    noise_stddev: float = Field(
        0.0, ge=0.0, le=10.0, description="Gaussian noise, in the model's input units"
    )

    @property
    def active(self) -> bool:
        flips = self.horizontal_flip or self.vertical_flip
        return flips or self.shift > 0 or self.rotation > 0 or self.noise_stddev > 0


class FitSpec(StrictModel):
    epochs: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=65_536)
    validation_split: Fraction = 0.0
    shuffle: bool = True
    seed: int = Field(0, ge=0, le=2**31 - 1)
    early_stopping: EarlyStopping | None = None
    lr_schedule: ScheduleSpec | None = None
    log_every_steps: int = Field(
        50, ge=1, le=1_000_000, description="a step-loss record every N steps"
    )
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA; supervised and seq2seq (the others train in fp32)"
    )
    keep_checkpoints: int = Field(3, ge=1, le=100)
    max_seconds: int | None = Field(
        None, ge=1, le=90 * 24 * 3600, description="fails past this (server max bounds it)"
    )
    augmentation: Augmentation | None = Field(
        None, description="image datasets; the training split only"
    )


class DataInfo(StrictModel):
    """What the model builder needs to know of a dataset: shapes and the kind of target."""

    input_shape: tuple[int, ...]
    task: Literal["classification", "regression"]
    num_classes: int | None = None
    target_dim: int = 1
    kind: Literal["image", "tabular"] = "tabular"

"""Layer specs: one pydantic class per layer `type`, joined in a discriminated union.

Shapes follow PyTorch's channels-first convention: an image sample is (C, H, W),
a 1-D signal (C, L), a token sequence (L,). The batch axis is never written.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Activation = Literal["relu", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "tanh", "softmax", "softplus", "linear"]
Initializer = Literal[
    "zeros",
    "random_normal",
    "random_uniform",
    "glorot_normal",
    "glorot_uniform",
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
]
Padding = Literal["valid", "same"]

PositiveInt = Annotated[int, Field(ge=1, le=65_536)]
Size = Annotated[int, Field(ge=1, le=64)]
# A kernel, pool or stride size: one int for every spatial axis, or one per axis.
Size2D = Size | tuple[Size, Size]


class StrictModel(BaseModel):
    """Unknown fields are an error (a typo must not become a silent default); NaN/inf too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class DenseLayer(StrictModel):
    type: Literal["dense"]
    units: PositiveInt
    activation: Activation = "linear"
    use_bias: bool = True
    initializer: Initializer | None = None


class _ConvFields(StrictModel):
    filters: PositiveInt
    padding: Padding = "valid"
    activation: Activation = "linear"
    use_bias: bool = True
    initializer: Initializer | None = None


class Conv1DLayer(_ConvFields):
    type: Literal["conv1d"]
    kernel_size: Size
    strides: Size = 1
    dilation: Size = 1


class Conv2DLayer(_ConvFields):
    type: Literal["conv2d"]
    kernel_size: Size2D
    strides: Size2D = 1
    dilation: Size2D = 1


class MaxPool1DLayer(StrictModel):
    type: Literal["maxpool1d"]
    pool_size: Size = 2
    strides: Size | None = None
    padding: Padding = "valid"


class MaxPool2DLayer(StrictModel):
    type: Literal["maxpool2d"]
    pool_size: Size2D = 2
    strides: Size2D | None = None
    padding: Padding = "valid"


class AvgPool2DLayer(StrictModel):
    type: Literal["avgpool2d"]
    pool_size: Size2D = 2
    strides: Size2D | None = None
    padding: Padding = "valid"


class GlobalAvgPoolLayer(StrictModel):
    """Averages every axis after the channel axis: (C, ...) -> (C,)."""

    type: Literal["global_avgpool"]


class BatchNormLayer(StrictModel):
    """Normalises over the channel axis (axis 0 of a sample), as Keras' axis=-1 does channels-last."""

    type: Literal["batchnorm"]
    momentum: float = Field(0.99, gt=0.0, lt=1.0, description="Keras convention: running = m*running + (1-m)*batch")
    epsilon: float = Field(1e-3, gt=0.0, le=1.0)


class LayerNormLayer(StrictModel):
    type: Literal["layernorm"]
    epsilon: float = Field(1e-3, gt=0.0, le=1.0)


class DropoutLayer(StrictModel):
    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=1.0)


class FlattenLayer(StrictModel):
    type: Literal["flatten"]


class ReshapeLayer(StrictModel):
    type: Literal["reshape"]
    target_shape: list[Annotated[int, Field(ge=-1, le=1_000_000)]] = Field(min_length=1, max_length=4)


class ActivationLayer(StrictModel):
    type: Literal["activation"]
    activation: Activation
    alpha: float | None = Field(None, gt=0.0, le=10.0, description="slope for leaky_relu, scale for elu")


class EmbeddingLayer(StrictModel):
    """Token ids (L,) -> vectors (L, output_dim)."""

    type: Literal["embedding"]
    input_dim: Annotated[int, Field(ge=2, le=1_000_000)]
    output_dim: PositiveInt
    initializer: Initializer | None = None


LayerSpec = Annotated[
    DenseLayer
    | Conv1DLayer
    | Conv2DLayer
    | MaxPool1DLayer
    | MaxPool2DLayer
    | AvgPool2DLayer
    | GlobalAvgPoolLayer
    | BatchNormLayer
    | LayerNormLayer
    | DropoutLayer
    | FlattenLayer
    | ReshapeLayer
    | ActivationLayer
    | EmbeddingLayer,
    Field(discriminator="type"),
]

MAX_LAYERS = 256

"""Layer specs: one pydantic class per layer `type`, joined in a discriminated union.

Shapes follow PyTorch's channels-first convention: an image sample is (C, H, W),
a 1-D signal (C, L), a token sequence (L,). Sequence layers (recurrent, attention) take
(L, F): time first, features last, as Keras' do. The batch axis is never written.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.base import StrictModel

Activation = Literal[
    "relu", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "tanh", "softmax", "softplus", "linear"
]
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
    momentum: float = Field(
        0.99, gt=0.0, lt=1.0, description="Keras convention: running = m*running + (1-m)*batch"
    )
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
    target_shape: list[Annotated[int, Field(ge=-1, le=1_000_000)]] = Field(
        min_length=1, max_length=4
    )


class ActivationLayer(StrictModel):
    type: Literal["activation"]
    activation: Activation
    alpha: float | None = Field(
        None, gt=0.0, le=10.0, description="slope for leaky_relu, scale for elu"
    )


class EmbeddingLayer(StrictModel):
    """Token ids (L,) -> vectors (L, output_dim)."""

    type: Literal["embedding"]
    input_dim: Annotated[int, Field(ge=2, le=1_000_000)]
    output_dim: PositiveInt
    initializer: Initializer | None = None


class Conv2DTransposeLayer(_ConvFields):
    """Keras' output size: 'same' gives H * strides; 'valid' H * strides + max(kernel - strides, 0)."""

    type: Literal["conv2d_transpose"]
    kernel_size: Size2D
    strides: Size2D = 1


class UpSample2DLayer(StrictModel):
    type: Literal["upsample2d"]
    size: Size2D = 2
    interpolation: Literal["nearest", "bilinear"] = "nearest"


Heads = Annotated[int, Field(ge=1, le=256)]
DropRate = Annotated[float, Field(ge=0.0, lt=1.0)]


class _RecurrentFields(StrictModel):
    """(L, F) -> (L, units * directions) with return_sequences, else the final state (units * directions,)."""

    units: Annotated[int, Field(ge=1, le=4096)]
    num_layers: int = Field(1, ge=1, le=8, description="stacked recurrent layers")
    bidirectional: bool = False
    return_sequences: bool = False
    dropout: DropRate = Field(0.0, description="between stacked layers; needs num_layers >= 2")
    initializer: Initializer | None = Field(
        None,
        description="input kernels (default glorot_uniform); recurrent kernels are orthogonal, biases zero",
    )

    @model_validator(mode="after")
    def _dropout_needs_a_stack(self) -> _RecurrentFields:
        # torch drops out between stacked layers only; a single layer would ignore the rate silently.
        if self.dropout > 0 and self.num_layers == 1:
            raise ValueError("dropout applies between stacked layers: it needs num_layers >= 2")
        return self


class RNNLayer(_RecurrentFields):
    """Keras' SimpleRNN. Its cell function is `nonlinearity`: a field named `activation` would be
    applied a second time after the layer, as every layer's `activation` is."""

    type: Literal["rnn"]
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LSTMLayer(_RecurrentFields):
    type: Literal["lstm"]


class GRULayer(_RecurrentFields):
    """Keras' GRU with reset_after=True (its default), which is torch's formulation."""

    type: Literal["gru"]


class PositionalEncodingLayer(StrictModel):
    """(L, D) -> (L, D): adds a fixed sinusoidal (Vaswani et al.) or a learned vector per position."""

    type: Literal["positional_encoding"]
    kind: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_length: int | None = Field(
        None, ge=1, le=65_536, description="the longest input; learned: default L"
    )


class MultiHeadAttentionLayer(StrictModel):
    """Self-attention, (L, D) -> (L, D); D must divide by num_heads (each head sees D / num_heads)."""

    type: Literal["multi_head_attention"]
    num_heads: Heads
    dropout: DropRate = 0.0
    causal: bool = Field(False, description="each position attends to itself and earlier ones only")
    use_bias: bool = True
    initializer: Initializer | None = None


class TransformerEncoderLayer(StrictModel):
    """One encoder block, (L, D) -> (L, D): self-attention and a feed-forward net, each residual and normed."""

    type: Literal["transformer_encoder"]
    num_heads: Heads
    ff_dim: PositiveInt
    dropout: DropRate = 0.0
    ff_activation: Literal["relu", "gelu"] = "relu"
    norm_first: bool = Field(
        False, description="pre-norm (True) or post-norm as in the original paper"
    )
    causal: bool = False
    epsilon: float = Field(1e-5, gt=0.0, le=1.0)
    initializer: Initializer | None = None


class SequencePoolLayer(StrictModel):
    """(L, D) -> (D,): the mean, the max or the last step over the sequence axis."""

    type: Literal["sequence_pool"]
    mode: Literal["mean", "max", "last"] = "mean"


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
    | EmbeddingLayer
    | Conv2DTransposeLayer
    | UpSample2DLayer
    | RNNLayer
    | LSTMLayer
    | GRULayer
    | PositionalEncodingLayer
    | MultiHeadAttentionLayer
    | TransformerEncoderLayer
    | SequencePoolLayer,
    Field(discriminator="type"),
]

MAX_LAYERS = 256

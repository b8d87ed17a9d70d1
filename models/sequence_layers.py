"""Builders for sequence layers (recurrent, attention, positions, pooling over time) and for the
upsampling layers of image decoders (transposed convolution, upsample).

A sequence sample is (L, F): time first, features last, as Keras' layers take it; modules run with
batch_first=True. `models.layers` imports this module at its end, so `import models.layers` registers
every builder.

Initialisation happens here because `models.network` re-initialises only Linear, Conv1d/2d and Embedding
modules: recurrent, transposed-convolution and attention-projection weights get their layer's
`initializer` (or glorot_uniform, the model's default initializer is not visible to a builder).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from core.spec import layers as L
from models.init import init_attention, init_layer, init_recurrent, init_weight
from models.registry import Built, Shape, ShapeError, register

_DEFAULT_KERNEL = "glorot_uniform"


def _expect(shape: Shape, ndim: int, what: str) -> None:
    if len(shape) != ndim:
        raise ShapeError(f"expected {ndim}-D {what} input, received {shape}")


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """True where attention is not allowed: every later position."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


# -- recurrent ------------------------------------------------------------------------------


class Recurrent(nn.Module):
    """A torch RNN on (N, L, F). Without return_sequences it gives the last layer's final state: both
    directions' concatenated, forward first, as Keras' Bidirectional(return_sequences=False) does (the
    backward direction's final state is the one it reaches at time 0, not its output at step L - 1)."""

    def __init__(self, rnn: nn.RNNBase, return_sequences: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences
        self.directions = 2 if rnn.bidirectional else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x)
        if self.return_sequences:
            return out
        h = state[0] if isinstance(state, tuple) else state  # an LSTM's state is (h, c)
        return h[-self.directions :].transpose(0, 1).reshape(x.shape[0], -1)


def _recurrent(
    spec: L.RNNLayer | L.LSTMLayer | L.GRULayer,
    shape: Shape,
    rnn_class: Callable[..., nn.RNNBase],
    **extra: str,
) -> Built:
    _expect(shape, 2, "(L, F) sequence")
    length, features = shape
    rnn = rnn_class(
        features,
        spec.units,
        num_layers=spec.num_layers,
        batch_first=True,
        dropout=spec.dropout,
        bidirectional=spec.bidirectional,
        **extra,
    )
    init_recurrent(rnn, spec.initializer or _DEFAULT_KERNEL)
    width = spec.units * (2 if spec.bidirectional else 1)
    return Built(
        Recurrent(rnn, spec.return_sequences),
        (length, width) if spec.return_sequences else (width,),
    )


@register(L.RNNLayer)
def build_rnn(spec: L.RNNLayer, shape: Shape) -> Built:
    return _recurrent(spec, shape, nn.RNN, nonlinearity=spec.nonlinearity)


@register(L.LSTMLayer)
def build_lstm(spec: L.LSTMLayer, shape: Shape) -> Built:
    return _recurrent(spec, shape, nn.LSTM)


@register(L.GRULayer)
def build_gru(spec: L.GRULayer, shape: Shape) -> Built:
    return _recurrent(spec, shape, nn.GRU)


# -- positions and attention ----------------------------------------------------------------


def sinusoid(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al.: sin on even features, cos on odd ones, wavelengths from 2*pi to 10000*2*pi."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    angles = position * rates
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table


class PositionalEncoding(nn.Module):
    def __init__(self, table: torch.Tensor, learned: bool) -> None:
        super().__init__()
        if learned:
            self.position = nn.Parameter(table)
        else:  # fixed: not a weight, and recomputed on load rather than stored in checkpoints
            self.register_buffer("position", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.position[: x.shape[1]]


@register(L.PositionalEncodingLayer)
def build_positional_encoding(spec: L.PositionalEncodingLayer, shape: Shape) -> Built:
    _expect(shape, 2, "(L, D) sequence")
    length, dim = shape
    if spec.max_length is not None and length > spec.max_length:
        raise ShapeError(
            f"the sequence has {length} positions, more than max_length {spec.max_length}"
        )
    if spec.kind == "sinusoidal":
        return Built(PositionalEncoding(sinusoid(length, dim), learned=False), shape)
    table = torch.empty(spec.max_length or length, dim)
    init_weight(table, _DEFAULT_KERNEL)  # keras_nlp's PositionEmbedding default
    return Built(PositionalEncoding(table, learned=True), shape)


def _check_heads(dim: int, heads: int) -> None:
    if dim % heads:
        raise ShapeError(
            f"the model dimension {dim} (the input's last axis) does not divide by num_heads {heads}"
        )


class SelfAttention(nn.Module):
    def __init__(self, attention: nn.MultiheadAttention, causal: bool) -> None:
        super().__init__()
        self.attention = attention
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = causal_mask(x.shape[1], x.device) if self.causal else None
        out, _ = self.attention(x, x, x, need_weights=False, attn_mask=mask, is_causal=self.causal)
        return out


@register(L.MultiHeadAttentionLayer)
def build_multi_head_attention(spec: L.MultiHeadAttentionLayer, shape: Shape) -> Built:
    _expect(shape, 2, "(L, D) sequence")
    _check_heads(shape[1], spec.num_heads)
    attention = nn.MultiheadAttention(
        shape[1], spec.num_heads, dropout=spec.dropout, bias=spec.use_bias, batch_first=True
    )
    init_attention(attention, spec.initializer or _DEFAULT_KERNEL)
    return Built(SelfAttention(attention, spec.causal), shape)


class EncoderBlock(nn.Module):
    def __init__(self, block: nn.TransformerEncoderLayer, causal: bool) -> None:
        super().__init__()
        self.block = block
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.causal:
            return self.block(x)
        return self.block(x, src_mask=causal_mask(x.shape[1], x.device), is_causal=True)


@register(L.TransformerEncoderLayer)
def build_transformer_encoder(spec: L.TransformerEncoderLayer, shape: Shape) -> Built:
    _expect(shape, 2, "(L, D) sequence")
    _check_heads(shape[1], spec.num_heads)
    block = nn.TransformerEncoderLayer(
        shape[1],
        spec.num_heads,
        dim_feedforward=spec.ff_dim,
        dropout=spec.dropout,
        activation=spec.ff_activation,
        layer_norm_eps=spec.epsilon,
        batch_first=True,
        norm_first=spec.norm_first,
    )
    kernel = spec.initializer or _DEFAULT_KERNEL
    init_attention(block.self_attn, kernel)
    for linear in (block.linear1, block.linear2):
        init_layer(linear, kernel)
    return Built(EncoderBlock(block, spec.causal), shape)


class SequencePool(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "max":
            return x.amax(dim=1)
        return x[:, -1]


@register(L.SequencePoolLayer)
def build_sequence_pool(spec: L.SequencePoolLayer, shape: Shape) -> Built:
    # global_avgpool would average (L, D) over D: it takes channels first.
    _expect(shape, 2, "(L, D) sequence")
    return Built(SequencePool(spec.mode), (shape[1],))


# -- upsampling -----------------------------------------------------------------------------


class _Crop2d(nn.Module):
    """Keras' 'same' transposed convolution: the full output, cropped by the padding of the matching
    'same' convolution, any odd pixel taken off the end (torch's `padding` crops both sides evenly)."""

    def __init__(
        self, conv: nn.ConvTranspose2d, crops: tuple[tuple[int, int], tuple[int, int]]
    ) -> None:
        super().__init__()
        self.conv = conv
        self.crops = crops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        (top, bottom), (left, right) = self.crops
        return y[:, :, top : y.shape[2] - bottom, left : y.shape[3] - right]


@register(L.Conv2DTransposeLayer)
def build_conv2d_transpose(spec: L.Conv2DTransposeLayer, shape: Shape) -> Built:
    _expect(shape, 3, "(C, H, W)")
    kernel, strides = _pair(spec.kernel_size), _pair(spec.strides)
    # A kernel smaller than its stride leaves stride - kernel uncovered pixels after each input pixel;
    # Keras' output keeps them for the last one too (H * stride), torch's needs output_padding for that.
    extra = (max(strides[0] - kernel[0], 0), max(strides[1] - kernel[1], 0))
    conv = nn.ConvTranspose2d(
        shape[0], spec.filters, kernel, stride=strides, output_padding=extra, bias=spec.use_bias
    )
    init_layer(conv, spec.initializer or _DEFAULT_KERNEL)
    over = [max(k - s, 0) for k, s in zip(kernel, strides, strict=True)]
    if spec.padding == "same":
        out = (shape[1] * strides[0], shape[2] * strides[1])
        if any(over):
            crops = ((over[0] // 2, over[0] - over[0] // 2), (over[1] // 2, over[1] - over[1] // 2))
            return Built(_Crop2d(conv, crops), (spec.filters, *out))
        return Built(conv, (spec.filters, *out))
    out = (shape[1] * strides[0] + over[0], shape[2] * strides[1] + over[1])
    return Built(conv, (spec.filters, *out))


@register(L.UpSample2DLayer)
def build_upsample2d(spec: L.UpSample2DLayer, shape: Shape) -> Built:
    _expect(shape, 3, "(C, H, W)")
    size = _pair(spec.size)
    # align_corners=False is the half-pixel sampling of Keras' (tf.image.resize) bilinear upsampling.
    corners = False if spec.interpolation == "bilinear" else None
    module = nn.Upsample(
        scale_factor=(float(size[0]), float(size[1])),
        mode=spec.interpolation,
        align_corners=corners,
    )
    return Built(module, (shape[0], shape[1] * size[0], shape[2] * size[1]))

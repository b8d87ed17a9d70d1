"""Builders for every layer type in `core.spec.layers`, registered by type.

Each builder checks the shape it is given and computes the output shape by formula,
so a bad spec is refused with "expected ..., received ..." before any tensor exists.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from core.spec import layers as L
from models.registry import Built, Shape, ShapeError, register

_DIMS = {1: "(C, L)", 2: "(C, H, W)"}


def activation_module(name: str, alpha: float | None = None) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01 if alpha is None else alpha)
    if name == "elu":
        return nn.ELU(1.0 if alpha is None else alpha)
    if name == "softmax":
        return nn.Softmax(dim=-1)
    factories: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "selu": nn.SELU,
        "gelu": nn.GELU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "softplus": nn.Softplus,
        "linear": nn.Identity,
    }
    return factories[name]()


def _expect(shape: Shape, ndim: int, what: str) -> None:
    if len(shape) != ndim:
        raise ShapeError(f"expected {ndim}-D {what} input, received {shape}")


def _pair(v: int | tuple[int, int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """Keras 'same': output ceil(size / stride), any odd pixel of padding goes after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _window(
    shape: Shape,
    spatial: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: str,
    fill: float,
) -> tuple[nn.Module | None, tuple[int, ...]]:
    """The padding module ('same') and the spatial output size of a sliding window."""
    sizes = shape[1:]
    pads: list[int] = []
    out = []
    for size, k, s, d in zip(sizes, kernel, stride, dilation, strict=False):
        before, after = _same_pads(size, k, s, d) if padding == "same" else (0, 0)
        span = (k - 1) * d + 1
        if size + before + after < span:
            raise ShapeError(
                f"window {kernel} does not fit the input {shape} with padding '{padding}'"
            )
        out.append((size + before + after - span) // s + 1)
        pads = [before, after, *pads]  # torch's F.pad order: last axis first
    pad_class: Any = nn.ConstantPad1d if spatial == 1 else nn.ConstantPad2d
    pad = pad_class(tuple(pads), fill) if any(pads) else None
    return pad, tuple(out)


def _with_pad(pad: nn.Module | None, module: nn.Module) -> nn.Module:
    return module if pad is None else nn.Sequential(pad, module)


@register(L.DenseLayer)
def build_dense(spec: L.DenseLayer, shape: Shape) -> Built:
    # As in Keras, a dense layer acts on the last axis of any input.
    return Built(nn.Linear(shape[-1], spec.units, bias=spec.use_bias), (*shape[:-1], spec.units))


def _conv(spec: L.Conv1DLayer | L.Conv2DLayer, shape: Shape, spatial: int) -> Built:
    _expect(shape, spatial + 1, _DIMS[spatial])
    k, s, d = (
        _pair(spec.kernel_size, spatial),
        _pair(spec.strides, spatial),
        _pair(spec.dilation, spatial),
    )
    pad, out = _window(shape, spatial, k, s, d, spec.padding, 0.0)
    conv_class = nn.Conv1d if spatial == 1 else nn.Conv2d
    conv = conv_class(shape[0], spec.filters, k, stride=s, dilation=d, bias=spec.use_bias)  # type: ignore[arg-type]
    return Built(_with_pad(pad, conv), (spec.filters, *out))


@register(L.Conv1DLayer)
def build_conv1d(spec: L.Conv1DLayer, shape: Shape) -> Built:
    return _conv(spec, shape, 1)


@register(L.Conv2DLayer)
def build_conv2d(spec: L.Conv2DLayer, shape: Shape) -> Built:
    return _conv(spec, shape, 2)


def _pool(
    spec: L.MaxPool1DLayer | L.MaxPool2DLayer | L.AvgPool2DLayer,
    shape: Shape,
    spatial: int,
    kind: str,
) -> Built:
    _expect(shape, spatial + 1, _DIMS[spatial])
    k = _pair(spec.pool_size, spatial)
    s = (
        k if spec.strides is None else _pair(spec.strides, spatial)
    )  # Keras: strides default to pool_size
    fill = float("-inf") if kind == "max" else 0.0
    pad, out = _window(shape, spatial, k, s, (1,) * spatial, spec.padding, fill)
    pools: dict[tuple[str, int], type[nn.Module]] = {
        ("max", 1): nn.MaxPool1d,
        ("max", 2): nn.MaxPool2d,
        ("avg", 2): nn.AvgPool2d,
    }
    pool = _with_pad(pad, pools[(kind, spatial)](k, stride=s))
    if kind == "avg" and pad is not None:
        pool = _RealValueAverage(pool, shape)
    return Built(pool, (shape[0], *out))


class _RealValueAverage(nn.Module):
    """Keras' 'same' average pooling averages only the real values at a border: divide the
    zero-padded average by the share of real values in each window (fixed by the input size)."""

    def __init__(self, pool: nn.Module, shape: Shape) -> None:
        super().__init__()
        self.pool = pool
        with torch.no_grad():
            share = pool(torch.ones(1, *shape[1:]).unsqueeze(0))[0]
        self.register_buffer("share", share, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) / self.share


@register(L.MaxPool1DLayer)
def build_maxpool1d(spec: L.MaxPool1DLayer, shape: Shape) -> Built:
    return _pool(spec, shape, 1, "max")


@register(L.MaxPool2DLayer)
def build_maxpool2d(spec: L.MaxPool2DLayer, shape: Shape) -> Built:
    return _pool(spec, shape, 2, "max")


@register(L.AvgPool2DLayer)
def build_avgpool2d(spec: L.AvgPool2DLayer, shape: Shape) -> Built:
    return _pool(spec, shape, 2, "avg")


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2)


@register(L.GlobalAvgPoolLayer)
def build_global_avgpool(spec: L.GlobalAvgPoolLayer, shape: Shape) -> Built:
    if len(shape) < 2:
        raise ShapeError(f"expected (C, ...) input with spatial axes, received {shape}")
    return Built(GlobalAvgPool(), (shape[0],))


class _WarmStart:
    """Running statistics that average the first 1/(1 - momentum) batches evenly, then move as
    Keras' do. With a plain moving average the initial variance of 1 still weighs 1% after 450
    steps of momentum 0.99, enough to wreck evaluation of a short run on a small dataset."""

    momentum: float | None
    base_momentum: float
    seen: int

    def warm_forward(self, forward: Any, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # type: ignore[attr-defined]
            self.seen += 1
            self.momentum = max(self.base_momentum, 1.0 / self.seen)
        return forward(x)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        tracked = state_dict.get(prefix + "num_batches_tracked")
        self.seen = int(tracked) if tracked is not None else 0
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[misc]


class BatchNorm1d(_WarmStart, nn.BatchNorm1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.warm_forward(super().forward, x)


class BatchNorm2d(_WarmStart, nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.warm_forward(super().forward, x)


@register(L.BatchNormLayer)
def build_batchnorm(spec: L.BatchNormLayer, shape: Shape) -> Built:
    if len(shape) > 3:
        raise ShapeError(f"expected (C,), (C, L) or (C, H, W) input, received {shape}")
    norm_class = BatchNorm2d if len(shape) == 3 else BatchNorm1d
    # Keras' momentum weighs the running value; torch's weighs the new batch.
    norm = norm_class(shape[0], eps=spec.epsilon, momentum=1.0 - spec.momentum)
    norm.base_momentum, norm.seen = 1.0 - spec.momentum, 0
    return Built(norm, shape)


@register(L.LayerNormLayer)
def build_layernorm(spec: L.LayerNormLayer, shape: Shape) -> Built:
    return Built(nn.LayerNorm(shape[-1], eps=spec.epsilon), shape)


@register(L.DropoutLayer)
def build_dropout(spec: L.DropoutLayer, shape: Shape) -> Built:
    return Built(nn.Dropout(spec.rate), shape)


@register(L.FlattenLayer)
def build_flatten(spec: L.FlattenLayer, shape: Shape) -> Built:
    return Built(nn.Flatten(), (math.prod(shape),))


@register(L.ReshapeLayer)
def build_reshape(spec: L.ReshapeLayer, shape: Shape) -> Built:
    target = list(spec.target_shape)
    size = math.prod(shape)
    if target.count(-1) > 1 or any(t == 0 or t < -1 for t in target):
        raise ShapeError(
            f"target_shape {tuple(target)} may hold one -1 and otherwise positive sizes"
        )
    known = math.prod(t for t in target if t != -1)
    if -1 in target:
        if size % known:
            raise ShapeError(f"cannot reshape {shape} ({size} values) into {tuple(target)}")
        target[target.index(-1)] = size // known
    if math.prod(target) != size:
        raise ShapeError(f"cannot reshape {shape} ({size} values) into {tuple(spec.target_shape)}")
    return Built(
        nn.Unflatten(1, tuple(target)) if len(shape) == 1 else _Reshape(tuple(target)),
        tuple(target),
    )


class _Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


@register(L.ActivationLayer)
def build_activation(spec: L.ActivationLayer, shape: Shape) -> Built:
    return Built(activation_module(spec.activation, spec.alpha), shape)


@register(L.EmbeddingLayer)
def build_embedding(spec: L.EmbeddingLayer, shape: Shape) -> Built:
    _expect(shape, 1, "(L,) token-id")
    return Built(nn.Embedding(spec.input_dim, spec.output_dim), (shape[0], spec.output_dim))


# Registers the sequence (recurrent, attention) and upsampling builders with the rest on `import models.layers`.
import models.sequence_layers  # noqa: E402, F401

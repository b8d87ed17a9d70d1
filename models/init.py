"""Weight initialisers with Keras' definitions (VarianceScaling, truncated normals), biases zero."""

from __future__ import annotations

import math

import torch
from torch import nn

# name -> (scale, mode, distribution) as in keras.initializers.VarianceScaling
_VARIANCE_SCALING = {
    "glorot_normal": (1.0, "fan_avg", "normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "he_normal": (2.0, "fan_in", "normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),
}
_ALIASES = {
    "xavier_normal": "glorot_normal",
    "xavier_uniform": "glorot_uniform",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
}
# Keras draws from a normal truncated at 2 std, rescaled so the variance is still `scale/fan`.
_TRUNCATION_STD = 0.87962566103423978


@torch.no_grad()
def init_weight(weight: torch.Tensor, name: str) -> None:
    name = _ALIASES.get(name, name)
    if name == "zeros":
        nn.init.zeros_(weight)
    elif name == "random_normal":
        nn.init.normal_(weight, 0.0, 0.05)
    elif name == "random_uniform":
        nn.init.uniform_(weight, -0.05, 0.05)
    else:
        scale, mode, distribution = _VARIANCE_SCALING[name]
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        fan = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2
        variance = scale / max(1.0, fan)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            nn.init.uniform_(weight, -limit, limit)
        else:
            std = math.sqrt(variance) / _TRUNCATION_STD
            nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def init_layer(module: nn.Module, name: str) -> None:
    """Initialise a Linear/Conv/Embedding's kernel with `name` and its bias with zeros."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        init_weight(weight, name)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        nn.init.zeros_(bias)


@torch.no_grad()
def init_recurrent(rnn: nn.RNNBase, kernel: str) -> None:
    """Keras' recurrent defaults: `kernel` on the input weights, orthogonal recurrent weights (they keep the
    state's norm through time at the start), zero biases but an LSTM's forget gate at 1, so early on the
    cell remembers and gradients reach the first steps (Jozefowicz et al., 2015)."""
    for name, p in rnn.named_parameters():
        if name.startswith("weight_ih"):
            init_weight(p, kernel)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(p)
        else:
            nn.init.zeros_(p)
            if isinstance(rnn, nn.LSTM) and name.startswith("bias_ih"):
                # torch's gates are stacked input, forget, cell, output; bias_hh stays 0 so the sum is 1.
                p[rnn.hidden_size : 2 * rnn.hidden_size] = 1.0


@torch.no_grad()
def init_attention(attention: nn.MultiheadAttention, kernel: str) -> None:
    """torch draws q, k and v from one initialiser over their stacked (3D, D) matrix, which shrinks a glorot
    limit; Keras draws each projection as a kernel of its own."""
    if attention.in_proj_weight is not None:
        for block in attention.in_proj_weight.chunk(3):
            init_weight(block, kernel)
    if attention.in_proj_bias is not None:
        nn.init.zeros_(attention.in_proj_bias)
    init_layer(attention.out_proj, kernel)

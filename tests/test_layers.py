"""Every registered layer type, every activation and every initializer, through one harness each.

The layer harness is driven by the registry: a layer type added to `core.spec.layers.LayerSpec`
without a builder, or registered without an example here, fails
`test_registry_matches_layer_spec_union` and the per-type tests.
"""

from __future__ import annotations

import math
import typing

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter
from torch import nn

import models.layers  # registers the builders
from core.spec import layers as L
from models import registry
from models.network import build_layers

ADAPTER: TypeAdapter = TypeAdapter(L.LayerSpec)
BATCH = 4


def _union_types() -> set[str]:
    union, _field_info = typing.get_args(L.LayerSpec)
    return {registry.layer_type(spec_class) for spec_class in typing.get_args(union)}


def _union_classes() -> dict[str, type]:
    union, _field_info = typing.get_args(L.LayerSpec)
    return {registry.layer_type(spec_class): spec_class for spec_class in typing.get_args(union)}


# One small valid spec and sample shape per layer type (the first entry is the canonical one),
# plus variants that reach the other code paths of the same builder.
EXAMPLES: dict[str, list[tuple[dict[str, typing.Any], tuple[int, ...]]]] = {
    "dense": [
        ({"type": "dense", "units": 3}, (5,)),
        ({"type": "dense", "units": 2, "use_bias": False, "activation": "relu"}, (5,)),
        ({"type": "dense", "units": 3}, (2, 5)),  # acts on the last axis, as in Keras
    ],
    "conv1d": [
        ({"type": "conv1d", "filters": 4, "kernel_size": 3}, (3, 10)),
        (
            {
                "type": "conv1d",
                "filters": 2,
                "kernel_size": 4,
                "strides": 3,
                "dilation": 2,
                "padding": "same",
            },
            (3, 10),
        ),
    ],
    "conv2d": [
        ({"type": "conv2d", "filters": 4, "kernel_size": 3}, (3, 8, 8)),
        (
            {
                "type": "conv2d",
                "filters": 2,
                "kernel_size": [4, 2],
                "strides": [2, 1],
                "dilation": [1, 3],
                "padding": "same",
            },
            (3, 7, 9),
        ),
        ({"type": "conv2d", "filters": 2, "kernel_size": 3, "use_bias": False}, (1, 5, 5)),
    ],
    "maxpool1d": [
        ({"type": "maxpool1d"}, (3, 10)),
        ({"type": "maxpool1d", "pool_size": 3, "strides": 2, "padding": "same"}, (3, 9)),
    ],
    "maxpool2d": [
        ({"type": "maxpool2d"}, (3, 8, 8)),
        (
            {"type": "maxpool2d", "pool_size": [3, 2], "strides": [1, 3], "padding": "same"},
            (3, 7, 9),
        ),
    ],
    "avgpool2d": [
        ({"type": "avgpool2d"}, (3, 8, 8)),
        ({"type": "avgpool2d", "pool_size": 3, "strides": 4, "padding": "same"}, (3, 7, 9)),
    ],
    "global_avgpool": [
        ({"type": "global_avgpool"}, (3, 8, 8)),
        ({"type": "global_avgpool"}, (3, 10)),
    ],
    "batchnorm": [
        ({"type": "batchnorm"}, (3, 8, 8)),
        ({"type": "batchnorm", "momentum": 0.9, "epsilon": 1e-5}, (3, 10)),
        ({"type": "batchnorm"}, (5,)),
    ],
    "layernorm": [
        ({"type": "layernorm"}, (5,)),
        ({"type": "layernorm", "epsilon": 1e-5}, (3, 8)),
    ],
    "dropout": [
        ({"type": "dropout", "rate": 0.5}, (5,)),
        ({"type": "dropout", "rate": 0.0}, (3, 4)),
    ],
    "flatten": [
        ({"type": "flatten"}, (3, 4, 4)),
    ],
    "reshape": [
        ({"type": "reshape", "target_shape": [3, 4]}, (12,)),
        ({"type": "reshape", "target_shape": [2, -1, 3]}, (3, 4)),
        ({"type": "reshape", "target_shape": [-1]}, (2, 3, 2)),
    ],
    "activation": [
        ({"type": "activation", "activation": "relu"}, (5,)),
        ({"type": "activation", "activation": "leaky_relu", "alpha": 0.2}, (2, 5)),
    ],
    "embedding": [
        ({"type": "embedding", "input_dim": 10, "output_dim": 4}, (6,)),
    ],
    "conv2d_transpose": [
        (
            {
                "type": "conv2d_transpose",
                "filters": 4,
                "kernel_size": 3,
                "strides": 2,
                "padding": "same",
            },
            (3, 5, 5),
        ),
        ({"type": "conv2d_transpose", "filters": 2, "kernel_size": 3, "strides": 2}, (3, 5, 5)),
        (
            {
                "type": "conv2d_transpose",
                "filters": 2,
                "kernel_size": [4, 1],
                "strides": [2, 3],
                "padding": "same",
                "use_bias": False,
            },
            (3, 4, 5),
        ),
        (
            {"type": "conv2d_transpose", "filters": 2, "kernel_size": [2, 1], "strides": [3, 2]},
            (1, 4, 5),
        ),
    ],
    "upsample2d": [
        ({"type": "upsample2d"}, (3, 4, 5)),
        ({"type": "upsample2d", "size": [2, 3], "interpolation": "bilinear"}, (3, 4, 5)),
    ],
    "rnn": [
        ({"type": "rnn", "units": 4}, (6, 3)),
        ({"type": "rnn", "units": 3, "nonlinearity": "relu", "return_sequences": True}, (6, 3)),
    ],
    "lstm": [
        ({"type": "lstm", "units": 4}, (6, 3)),
        ({"type": "lstm", "units": 3, "bidirectional": True}, (6, 3)),
        (
            {"type": "lstm", "units": 3, "num_layers": 2, "dropout": 0.5, "return_sequences": True},
            (6, 3),
        ),
        (
            {
                "type": "lstm",
                "units": 2,
                "num_layers": 3,
                "bidirectional": True,
                "return_sequences": True,
            },
            (5, 4),
        ),
    ],
    "gru": [
        ({"type": "gru", "units": 4}, (6, 3)),
        (
            {
                "type": "gru",
                "units": 3,
                "num_layers": 2,
                "bidirectional": True,
                "initializer": "he_normal",
            },
            (6, 3),
        ),
        ({"type": "gru", "units": 3, "return_sequences": True}, (2, 3)),
    ],
    "positional_encoding": [
        ({"type": "positional_encoding"}, (6, 8)),
        ({"type": "positional_encoding", "kind": "learned"}, (6, 8)),
        ({"type": "positional_encoding", "kind": "learned", "max_length": 10}, (6, 5)),
        ({"type": "positional_encoding", "max_length": 6}, (6, 5)),
    ],
    "multi_head_attention": [
        ({"type": "multi_head_attention", "num_heads": 2}, (6, 8)),
        ({"type": "multi_head_attention", "num_heads": 4, "causal": True, "dropout": 0.1}, (5, 8)),
        ({"type": "multi_head_attention", "num_heads": 1, "use_bias": False}, (3, 5)),
    ],
    "transformer_encoder": [
        ({"type": "transformer_encoder", "num_heads": 2, "ff_dim": 16}, (6, 8)),
        (
            {
                "type": "transformer_encoder",
                "num_heads": 4,
                "ff_dim": 8,
                "norm_first": True,
                "ff_activation": "gelu",
                "dropout": 0.1,
                "causal": True,
            },
            (5, 8),
        ),
    ],
    "sequence_pool": [
        ({"type": "sequence_pool"}, (6, 8)),
        ({"type": "sequence_pool", "mode": "max"}, (6, 8)),
        ({"type": "sequence_pool", "mode": "last"}, (1, 3)),
    ],
}

LAYER_TYPES = registry.list_registered()
CASES = [
    pytest.param(layer_type, spec, shape, id=f"{layer_type}-{i}")
    for layer_type in LAYER_TYPES
    for i, (spec, shape) in enumerate(EXAMPLES.get(layer_type, [({"type": layer_type}, ())]))
]


def _sample(spec: typing.Any, shape: tuple[int, ...]) -> torch.Tensor:
    if spec.type == "embedding":
        return torch.randint(0, spec.input_dim, (BATCH, *shape), dtype=torch.long)
    return torch.randn(BATCH, *shape)


def _build(
    spec_dict: dict[str, typing.Any], shape: tuple[int, ...]
) -> tuple[typing.Any, registry.Built]:
    spec = ADAPTER.validate_python(spec_dict)
    return spec, registry.get(spec.type).build(spec, shape)


# -- the registry ---------------------------------------------------------------------------


def test_registry_matches_layer_spec_union():
    assert set(registry.list_registered()) == _union_types()


def test_registry_has_an_example_for_every_layer_type():
    assert set(EXAMPLES) == set(registry.list_registered())


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_registry_entry_uses_union_spec_class(layer_type):
    assert registry.get(layer_type).spec_class is _union_classes()[layer_type]


def test_register_rejects_duplicate_type():
    with pytest.raises(ValueError, match="layer type 'dense' is registered twice"):
        registry.register(L.DenseLayer)(models.layers.build_dense)
    assert registry.get("dense").build is models.layers.build_dense


# -- the per-layer harness ------------------------------------------------------------------


@pytest.mark.parametrize(("layer_type", "spec_dict", "shape"), CASES)
def test_validate_spec_gives_registered_class(layer_type, spec_dict, shape):
    spec = ADAPTER.validate_python(spec_dict)
    assert type(spec) is registry.get(layer_type).spec_class
    assert spec.type == layer_type


@pytest.mark.parametrize(("layer_type", "spec_dict", "shape"), CASES)
def test_roundtrip_spec_dump_revalidates_equal(layer_type, spec_dict, shape):
    spec = ADAPTER.validate_python(spec_dict)
    assert ADAPTER.validate_python(spec.model_dump()) == spec
    assert ADAPTER.validate_python(spec.model_dump(mode="json")) == spec
    assert ADAPTER.validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(("layer_type", "spec_dict", "shape"), CASES)
def test_forward_output_matches_inferred_shape(layer_type, spec_dict, shape):
    torch.manual_seed(0)
    spec, built = _build(spec_dict, shape)
    assert all(d >= 1 for d in built.shape)
    for mode in ("train", "eval"):
        built.module.train(mode == "train")
        out = built.module(_sample(spec, shape))
        assert tuple(out.shape) == (BATCH, *built.shape), mode
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(("layer_type", "spec_dict", "shape"), CASES)
def test_sgd_step_changes_every_parameter(layer_type, spec_dict, shape):
    torch.manual_seed(0)
    spec, built = _build(spec_dict, shape)
    named = dict(built.module.named_parameters())
    params = list(named.values())
    if not params:
        assert layer_type in {
            "maxpool1d",
            "maxpool2d",
            "avgpool2d",
            "global_avgpool",
            "dropout",
            "flatten",
            "reshape",
            "activation",
            "upsample2d",
            "positional_encoding",
            "sequence_pool",
        }
        return
    before = {name: p.detach().clone() for name, p in named.items()}
    built.module.train()
    out = built.module(_sample(spec, shape))
    # A sum weighted by fixed random numbers: a plain sum of a normalised output (batchnorm,
    # layernorm) has a zero gradient in its scale, which would hide a disconnected parameter.
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    loss = (out * weights).sum()
    optimizer = torch.optim.SGD(params, lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    for p in params:
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
    optimizer.step()
    for name, p in named.items():
        assert not torch.equal(before[name], p.detach()), (
            f"{layer_type}: parameter {name} did not change"
        )


def test_dense_use_bias_false_has_no_bias():
    _, built = _build({"type": "dense", "units": 3, "use_bias": False}, (5,))
    assert [n for n, _ in built.module.named_parameters()] == ["weight"]


def test_embedding_builds_vectors_per_token():
    _, built = _build({"type": "embedding", "input_dim": 10, "output_dim": 4}, (6,))
    tokens = torch.tensor([[0, 1, 2, 3, 9, 9]])
    out = built.module(tokens)
    assert built.shape == (6, 4)
    assert torch.equal(out[0, 4], out[0, 5])
    assert torch.equal(out[0, 0], built.module.weight[0])


def test_reshape_keeps_values_in_order():
    _, built = _build({"type": "reshape", "target_shape": [2, -1, 3]}, (3, 4))
    x = torch.arange(2 * 12, dtype=torch.float32).reshape(2, 3, 4)
    assert built.shape == (2, 2, 3)
    assert torch.equal(built.module(x), x.reshape(2, 2, 2, 3))


def test_global_avgpool_averages_spatial_axes():
    _, built = _build({"type": "global_avgpool"}, (3, 4, 5))
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(built.module(x), x.mean(dim=(2, 3)))


def test_batchnorm_momentum_follows_keras_convention():
    _, built = _build({"type": "batchnorm", "momentum": 0.9, "epsilon": 0.01}, (3, 10))
    assert isinstance(built.module, nn.BatchNorm1d)
    assert built.module.momentum == pytest.approx(0.1)
    assert built.module.eps == 0.01


# -- window sizes ---------------------------------------------------------------------------

WINDOW_2D = [
    {"type": "conv2d", "filters": 2, "kernel_size": 3},
    {"type": "maxpool2d", "pool_size": 3},
    {"type": "avgpool2d", "pool_size": 3},
]
WINDOW_1D = [
    {"type": "conv1d", "filters": 2, "kernel_size": 3},
    {"type": "maxpool1d", "pool_size": 3},
]


def _expected_size(size: int, k: int, s: int, padding: str) -> int:
    return math.ceil(size / s) if padding == "same" else (size - k) // s + 1


@pytest.mark.parametrize("spec_dict", WINDOW_2D, ids=lambda d: d["type"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2, 3])
@pytest.mark.parametrize("hw", [(7, 7), (9, 9), (7, 9)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_window2d_output_size_follows_padding_formula(spec_dict, padding, strides, hw):
    _, built = _build({**spec_dict, "strides": strides, "padding": padding}, (3, *hw))
    expected = tuple(_expected_size(size, 3, strides, padding) for size in hw)
    channels = spec_dict.get("filters", 3)
    assert built.shape == (channels, *expected)
    assert tuple(built.module(torch.randn(2, 3, *hw)).shape) == (2, channels, *expected)


@pytest.mark.parametrize("spec_dict", WINDOW_1D, ids=lambda d: d["type"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2, 3])
@pytest.mark.parametrize("length", [7, 9])
def test_window1d_output_size_follows_padding_formula(spec_dict, padding, strides, length):
    _, built = _build({**spec_dict, "strides": strides, "padding": padding}, (3, length))
    expected = _expected_size(length, 3, strides, padding)
    channels = spec_dict.get("filters", 3)
    assert built.shape == (channels, expected)
    assert tuple(built.module(torch.randn(2, 3, length)).shape) == (2, channels, expected)


@pytest.mark.parametrize("pool_type", ["maxpool1d", "maxpool2d"])
def test_maxpool_same_never_picks_padding(pool_type):
    shape = (2, 9) if pool_type == "maxpool1d" else (2, 7, 9)
    _, built = _build({"type": pool_type, "pool_size": 3, "strides": 2, "padding": "same"}, shape)
    out = built.module(
        -1.0 - torch.rand(2, *shape)
    )  # every value below zero, the padding fill of a conv
    assert (out < -1.0).all()


def test_avgpool2d_same_excludes_padding_from_average():
    _, built = _build({"type": "avgpool2d", "pool_size": 2, "padding": "same"}, (1, 3, 3))
    out = built.module(torch.ones(1, 1, 3, 3))
    torch.testing.assert_close(out, torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize(
    ("spec_dict", "shape", "message"),
    [
        (
            {"type": "conv2d", "filters": 2, "kernel_size": 9},
            (1, 8, 8),
            "window (9, 9) does not fit the input (1, 8, 8) with padding 'valid'",
        ),
        (
            {"type": "conv2d", "filters": 2, "kernel_size": 3},
            (64,),
            "expected 3-D (C, H, W) input, received (64,)",
        ),
        (
            {"type": "conv1d", "filters": 2, "kernel_size": 3},
            (1, 8, 8),
            "expected 2-D (C, L) input, received (1, 8, 8)",
        ),
        (
            {"type": "maxpool1d", "pool_size": 4},
            (2, 3),
            "window (4,) does not fit the input (2, 3) with padding 'valid'",
        ),
        (
            {"type": "embedding", "input_dim": 5, "output_dim": 2},
            (2, 3),
            "expected 1-D (L,) token-id input, received (2, 3)",
        ),
        (
            {"type": "global_avgpool"},
            (5,),
            "expected (C, ...) input with spatial axes, received (5,)",
        ),
        (
            {"type": "batchnorm"},
            (1, 2, 3, 4),
            "expected (C,), (C, L) or (C, H, W) input, received (1, 2, 3, 4)",
        ),
        (
            {"type": "reshape", "target_shape": [5, 3]},
            (12,),
            "cannot reshape (12,) (12 values) into (5, 3)",
        ),
        (
            {"type": "reshape", "target_shape": [-1, 5]},
            (12,),
            "cannot reshape (12,) (12 values) into (-1, 5)",
        ),
        (
            {"type": "reshape", "target_shape": [-1, 0]},
            (12,),
            "target_shape (-1, 0) may hold one -1 and otherwise positive sizes",
        ),
        ({"type": "lstm", "units": 4}, (64,), "expected 2-D (L, F) sequence input, received (64,)"),
        (
            {"type": "gru", "units": 4},
            (3, 8, 8),
            "expected 2-D (L, F) sequence input, received (3, 8, 8)",
        ),
        ({"type": "rnn", "units": 4}, (64,), "expected 2-D (L, F) sequence input, received (64,)"),
        (
            {"type": "multi_head_attention", "num_heads": 3},
            (5, 10),
            "the model dimension 10 (the input's last axis) does not divide by num_heads 3",
        ),
        (
            {"type": "transformer_encoder", "num_heads": 4, "ff_dim": 8},
            (5, 6),
            "the model dimension 6 (the input's last axis) does not divide by num_heads 4",
        ),
        (
            {"type": "transformer_encoder", "num_heads": 2, "ff_dim": 8},
            (10,),
            "expected 2-D (L, D) sequence input, received (10,)",
        ),
        (
            {"type": "positional_encoding", "kind": "learned", "max_length": 4},
            (6, 8),
            "the sequence has 6 positions, more than max_length 4",
        ),
        (
            {"type": "sequence_pool"},
            (3, 4, 4),
            "expected 2-D (L, D) sequence input, received (3, 4, 4)",
        ),
        (
            {"type": "conv2d_transpose", "filters": 2, "kernel_size": 3},
            (64,),
            "expected 3-D (C, H, W) input, received (64,)",
        ),
        ({"type": "upsample2d"}, (3, 8), "expected 3-D (C, H, W) input, received (3, 8)"),
    ],
)
def test_build_rejects_bad_input_shape(spec_dict, shape, message):
    spec = ADAPTER.validate_python(spec_dict)
    with pytest.raises(registry.ShapeError) as info:
        registry.get(spec.type).build(spec, shape)
    assert str(info.value) == message


# -- activations ----------------------------------------------------------------------------

ACTIVATIONS = list(typing.get_args(L.Activation))
REFERENCE: dict[str, typing.Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "softplus": F.softplus,
    "linear": lambda x: x,
}


def test_reference_covers_every_activation():
    assert set(REFERENCE) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_layer_matches_reference(name):
    _, built = _build({"type": "activation", "activation": name}, (3, 5))
    x = torch.randn(BATCH, 3, 5) * 3
    assert built.shape == (3, 5)
    torch.testing.assert_close(built.module(x), REFERENCE[name](x))


@pytest.mark.parametrize(
    ("name", "alpha", "reference"),
    [
        ("leaky_relu", 0.2, lambda x: F.leaky_relu(x, 0.2)),
        ("elu", 0.5, lambda x: F.elu(x, 0.5)),
    ],
)
def test_activation_layer_uses_alpha(name, alpha, reference):
    _, built = _build({"type": "activation", "activation": name, "alpha": alpha}, (5,))
    x = torch.randn(BATCH, 5) * 3
    torch.testing.assert_close(built.module(x), reference(x))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_dense_activation_applies_inside_body(name):
    torch.manual_seed(0)
    layers = [
        L.DenseLayer(type="dense", units=4, activation=name),
        L.DenseLayer(type="dense", units=1),
    ]
    body, shape, summary = build_layers(layers, (5,), "glorot_uniform")
    first = body[0]
    linear = first if isinstance(first, nn.Linear) else first[0]
    assert isinstance(linear, nn.Linear)
    x = torch.randn(BATCH, 5) * 3
    torch.testing.assert_close(first(x), REFERENCE[name](linear(x)))
    assert shape == (1,)
    assert [s.parameters for s in summary] == [5 * 4 + 4, 4 + 1]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_dense_activation_on_last_layer_stays_out_of_body(name):
    torch.manual_seed(0)
    body, _, _ = build_layers(
        [L.DenseLayer(type="dense", units=3, activation=name)], (5,), "glorot_uniform"
    )
    assert len(body) == 1
    assert isinstance(body[0], nn.Linear)  # the network's head applies it


# -- initializers ---------------------------------------------------------------------------

INITIALIZERS = list(typing.get_args(L.Initializer))
FAN_IN, FAN_OUT = 256, 128
# Keras' variance for each variance-scaling initializer: scale / fan.
VARIANCE = {
    "glorot_normal": 2.0 / (FAN_IN + FAN_OUT),
    "xavier_normal": 2.0 / (FAN_IN + FAN_OUT),
    "glorot_uniform": 2.0 / (FAN_IN + FAN_OUT),
    "xavier_uniform": 2.0 / (FAN_IN + FAN_OUT),
    "he_normal": 2.0 / FAN_IN,
    "kaiming_normal": 2.0 / FAN_IN,
    "he_uniform": 2.0 / FAN_IN,
    "kaiming_uniform": 2.0 / FAN_IN,
    "lecun_normal": 1.0 / FAN_IN,
    "random_normal": 0.05**2,
    "random_uniform": 0.05**2 / 3,
}


def _dense_weights(name: str, via: str) -> nn.Linear:
    torch.manual_seed(0)
    if via == "layer":
        layer = L.DenseLayer(type="dense", units=FAN_OUT, initializer=name)
        body, _, _ = build_layers(
            [layer], (FAN_IN,), "zeros" if name != "zeros" else "glorot_uniform"
        )
    else:
        body, _, _ = build_layers([L.DenseLayer(type="dense", units=FAN_OUT)], (FAN_IN,), name)
    linear = body[0]
    assert isinstance(linear, nn.Linear)
    return linear


def test_variance_table_covers_every_initializer():
    assert set(VARIANCE) | {"zeros"} == set(INITIALIZERS)


@pytest.mark.parametrize("via", ["layer", "default"])
@pytest.mark.parametrize("name", INITIALIZERS)
def test_initializer_sets_weights_and_zero_bias(name, via):
    linear = _dense_weights(name, via)
    weight = linear.weight.detach()
    assert torch.isfinite(weight).all()
    assert torch.equal(linear.bias.detach(), torch.zeros(FAN_OUT))
    if name == "zeros":
        assert torch.equal(weight, torch.zeros_like(weight))
        return
    assert weight.abs().max() > 0
    assert weight.std().item() == pytest.approx(math.sqrt(VARIANCE[name]), rel=0.05)
    assert abs(weight.mean().item()) < 0.1 * math.sqrt(VARIANCE[name])
    if name == "random_uniform":
        assert weight.min() >= -0.05
        assert weight.max() <= 0.05
    elif name.endswith("_uniform"):
        limit = math.sqrt(3.0 * VARIANCE[name])  # sqrt(6 / (fan_in + fan_out)) for glorot
        if name in ("glorot_uniform", "xavier_uniform"):
            assert limit == pytest.approx(math.sqrt(6.0 / (FAN_IN + FAN_OUT)))
        assert weight.abs().max() <= limit
        assert weight.abs().max() > 0.95 * limit
    elif name != "random_normal":  # a truncated normal: nothing past 2 of its (pre-truncation) std
        bound = 2 * math.sqrt(VARIANCE[name]) / 0.87962566103423978
        assert weight.abs().max() <= bound


def test_embedding_defaults_to_random_uniform():
    torch.manual_seed(0)
    layer = L.EmbeddingLayer(type="embedding", input_dim=1000, output_dim=64)
    body, _, _ = build_layers([layer], (6,), "zeros")
    weight = body[0].weight.detach()
    assert weight.abs().max() <= 0.05
    assert weight.std().item() == pytest.approx(0.05 / math.sqrt(3), rel=0.05)


@pytest.mark.parametrize(
    "layer_type", ["conv1d", "conv2d", "embedding", "conv2d_transpose", "multi_head_attention"]
)
def test_initializer_applies_to_every_weighted_layer(layer_type):
    spec_dict, shape = EXAMPLES[layer_type][0]
    layer = ADAPTER.validate_python({**spec_dict, "initializer": "zeros"})
    body, _, _ = build_layers([layer], shape, "glorot_uniform")
    for p in body.parameters():
        assert torch.equal(p.detach(), torch.zeros_like(p))


# -- sequence and upsampling layers ---------------------------------------------------------


def test_recurrent_dropout_needs_a_stack():
    with pytest.raises(
        ValueError, match="dropout applies between stacked layers: it needs num_layers >= 2"
    ):
        ADAPTER.validate_python({"type": "lstm", "units": 4, "dropout": 0.2})


@pytest.mark.parametrize("layer_type", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_many_to_one_gives_the_final_states(layer_type, bidirectional):
    torch.manual_seed(0)
    spec = {"type": layer_type, "units": 3, "num_layers": 2, "bidirectional": bidirectional}
    _, built = _build(spec, (5, 4))
    x = torch.randn(BATCH, 5, 4)
    sequence, _ = built.module.rnn(x)
    # The backward direction ends at time 0: Keras' Bidirectional concatenates that state, not step L - 1's.
    expected = (
        torch.cat([sequence[:, -1, :3], sequence[:, 0, 3:]], dim=1)
        if bidirectional
        else sequence[:, -1]
    )
    assert built.shape == (6 if bidirectional else 3,)
    torch.testing.assert_close(built.module(x), expected)


def test_lstm_starts_as_keras_does():
    torch.manual_seed(0)
    units, features = 16, 8
    body, _, _ = build_layers(
        [ADAPTER.validate_python({"type": "lstm", "units": units})], (5, features), "glorot_uniform"
    )
    rnn = body[0].rnn
    recurrent = rnn.weight_hh_l0.detach()
    torch.testing.assert_close(recurrent.T @ recurrent, torch.eye(units), atol=1e-5, rtol=0)
    assert rnn.weight_ih_l0.abs().max() <= math.sqrt(6.0 / (features + 4 * units))
    forget = torch.zeros(4 * units)
    forget[units : 2 * units] = 1.0
    assert torch.equal(rnn.bias_ih_l0.detach(), forget)
    assert torch.equal(rnn.bias_hh_l0.detach(), torch.zeros(4 * units))


def test_sinusoidal_encoding_is_fixed_and_adds_sin_cos():
    _, built = _build({"type": "positional_encoding"}, (6, 5))
    out = built.module(torch.zeros(1, 6, 5))[0]
    assert list(built.module.parameters()) == [] and built.module.state_dict() == {}
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(out[:, 0], torch.sin(torch.arange(6.0)))
    torch.testing.assert_close(out[:, 1], torch.cos(torch.arange(6.0)))
    x = torch.randn(2, 6, 5)
    torch.testing.assert_close(built.module(x), x + out)


@pytest.mark.parametrize(
    "spec_dict",
    [
        {"type": "multi_head_attention", "num_heads": 2},
        {"type": "transformer_encoder", "num_heads": 2, "ff_dim": 8},
        {"type": "transformer_encoder", "num_heads": 2, "ff_dim": 8, "norm_first": True},
    ],
    ids=lambda d: d["type"] + ("-norm-first" if d.get("norm_first") else ""),
)
def test_causal_attention_ignores_later_positions(spec_dict):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    later = x.clone()
    later[:, 4:] = torch.randn(2, 2, 8)
    for causal in (True, False):
        _, built = _build({**spec_dict, "causal": causal}, (6, 8))
        built.module.eval()
        a, b = built.module(x), built.module(later)
        assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6) is causal
        assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("mean", lambda x: x.mean(dim=1)),
        ("max", lambda x: x.max(dim=1).values),
        ("last", lambda x: x[:, -1]),
    ],
)
def test_sequence_pool_reduces_the_time_axis(mode, reference):
    _, built = _build({"type": "sequence_pool", "mode": mode}, (6, 3))
    x = torch.randn(BATCH, 6, 3)
    torch.testing.assert_close(built.module(x), reference(x))


def _only(module: nn.Module, kind: type[nn.Module]) -> typing.Any:
    (found,) = [m for m in module.modules() if isinstance(m, kind)]
    return found


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4])
def test_conv2d_transpose_is_the_adjoint_of_keras_conv2d(kernel, strides, padding):
    """Keras' transposed convolution is the gradient of its convolution with the same settings: the
    output size and the cropped border of 'same' follow from that, and so does <conv(x), y> = <x, convT(y)>."""
    torch.manual_seed(0)
    h, w = 4, 5
    spec = {"kernel_size": kernel, "strides": strides, "padding": padding, "use_bias": False}
    _, up = _build({"type": "conv2d_transpose", "filters": 2, **spec}, (3, h, w))
    extra = 0 if padding == "same" else max(kernel - strides, 0)
    assert up.shape == (2, h * strides + extra, w * strides + extra)
    _, down = _build({"type": "conv2d", "filters": 3, **spec}, up.shape)
    assert down.shape == (3, h, w)
    with torch.no_grad():
        _only(down.module, nn.Conv2d).weight.copy_(_only(up.module, nn.ConvTranspose2d).weight)
        y, x = torch.randn(2, 3, h, w), torch.randn(2, *up.shape)
        torch.testing.assert_close(
            (down.module(x) * y).sum(), (x * up.module(y)).sum(), rtol=1e-4, atol=1e-4
        )


def test_upsample2d_nearest_repeats_pixels():
    _, built = _build({"type": "upsample2d", "size": [2, 3]}, (3, 4, 5))
    x = torch.randn(BATCH, 3, 4, 5)
    assert built.shape == (3, 8, 15)
    torch.testing.assert_close(
        built.module(x), x.repeat_interleave(2, dim=2).repeat_interleave(3, dim=3)
    )

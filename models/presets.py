"""Presets: named architectures from the lecture notes, expanded to plain layer specs."""

from __future__ import annotations

import math
from typing import Any

from core.spec import AlvinnPreset, DataInfo, MlpPreset, ShallowVggPreset
from core.spec import layers as L
from models.errors import SpecError

Layer = Any  # one of core.spec.layers' spec classes


def output_units(info: DataInfo, loss: str) -> int:
    """Units the last layer needs for this dataset and loss."""
    if info.task == "regression":
        return info.target_dim
    classes = info.num_classes or 2
    return 1 if loss == "binary_crossentropy" and classes == 2 else classes


def output_activation(loss: str) -> str:
    return {
        "binary_crossentropy": "sigmoid",
        "categorical_crossentropy": "softmax",
        "sparse_categorical_crossentropy": "softmax",
    }.get(loss, "linear")


def _dense(units: int, activation: str = "linear") -> Layer:
    return L.DenseLayer(type="dense", units=units, activation=activation)


def _mlp(p: MlpPreset, info: DataInfo, loss: str) -> list[Layer]:
    layers: list[Layer] = [L.FlattenLayer(type="flatten")] if len(info.input_shape) > 1 else []
    for units in p.hidden_units:
        layers.append(_dense(units, p.activation))
        if p.batchnorm:
            layers.append(L.BatchNormLayer(type="batchnorm"))
        if p.dropout > 0:
            layers.append(L.DropoutLayer(type="dropout", rate=p.dropout))
    units = p.output_units or output_units(info, loss)
    layers.append(_dense(units, p.output_activation or output_activation(loss)))
    return layers


def _shallow_vggnet(p: ShallowVggPreset, info: DataInfo, loss: str) -> list[Layer]:
    if len(info.input_shape) != 3:
        raise SpecError(
            f"shallow_vggnet takes (C, H, W) images; this dataset's samples are {info.input_shape}",
            ("model", "preset"),
        )

    def block(filters: int) -> list[Layer]:
        conv = {
            "type": "conv2d",
            "filters": filters,
            "kernel_size": 3,
            "padding": "same",
            "activation": "relu",
        }
        return [
            L.Conv2DLayer(**conv),
            L.BatchNormLayer(type="batchnorm"),
            L.Conv2DLayer(**conv),
            L.BatchNormLayer(type="batchnorm"),
            L.MaxPool2DLayer(type="maxpool2d", pool_size=2),
            L.DropoutLayer(type="dropout", rate=0.25),
        ]

    classes = p.classes or output_units(info, loss)
    return [
        *block(32),
        *block(64),
        L.FlattenLayer(type="flatten"),
        _dense(512, "relu"),
        L.BatchNormLayer(type="batchnorm"),
        L.DropoutLayer(type="dropout", rate=0.5),
        _dense(classes, "softmax"),
    ]


def _alvinn(p: AlvinnPreset, info: DataInfo, loss: str) -> list[Layer]:
    shape = info.input_shape
    if not (shape == (960,) or (shape[-2:] == (30, 32) and math.prod(shape) == 960)):
        raise SpecError(
            f"alvinn takes 30x32 images; this dataset's samples are {info.input_shape}",
            ("model", "preset"),
        )
    return [L.FlattenLayer(type="flatten"), _dense(4, p.hidden_activation), _dense(30, "linear")]


def expand(
    preset: MlpPreset | ShallowVggPreset | AlvinnPreset, info: DataInfo, loss: str
) -> list[Layer]:
    if isinstance(preset, MlpPreset):
        return _mlp(preset, info, loss)
    if isinstance(preset, ShallowVggPreset):
        return _shallow_vggnet(preset, info, loss)
    return _alvinn(preset, info, loss)

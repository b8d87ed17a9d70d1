"""Layer registry: each layer `type` maps to its pydantic spec class and its builder.

A builder takes the layer's spec and the shape of one input sample and returns the
module and the shape of one output sample, so shapes are inferred while building.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from core.spec import StrictModel

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """A layer that cannot take the shape it is given; the network prefixes the layer index."""


@dataclass(frozen=True)
class Built:
    module: nn.Module
    shape: Shape


Builder = Callable[[Any, Shape], Built]


@dataclass(frozen=True)
class Entry:
    spec_class: type[StrictModel]
    build: Builder


_REGISTRY: dict[str, Entry] = {}


def layer_type(spec_class: type[StrictModel]) -> str:
    annotation = spec_class.model_fields["type"].annotation
    (name,) = typing.get_args(annotation)
    return str(name)


def register(spec_class: type[StrictModel]) -> Callable[[Builder], Builder]:
    def decorate(build: Builder) -> Builder:
        name = layer_type(spec_class)
        if name in _REGISTRY:
            raise ValueError(f"layer type {name!r} is registered twice")
        _REGISTRY[name] = Entry(spec_class, build)
        return build

    return decorate


def get(name: str) -> Entry:
    return _REGISTRY[name]


def list_registered() -> list[str]:
    return sorted(_REGISTRY)


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)

"""A sweep's search space: distributions, each at a dotted path of the base job spec
(`compile.optimizer.learning_rate`, `model.layers.1.units`: list indices are path parts); where
such a path leads in a job spec, and the kinds of value the field there takes.

A trial's job spec is the base, dumped with its defaults, with each path set to the trial's value
(`apply`). So a path may name any field the base spec holds, a default one too (`fit.batch_size`
where the base gave none), but not a field inside a section the base left null
(`fit.early_stopping.patience` without `early_stopping`): give that section in the base to search
inside it. A whole section is a path too (`compile.optimizer`, with a choice of optimizers).
"""

from __future__ import annotations

import json
from copy import deepcopy
from types import UnionType
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    JsonValue,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.spec.base import StrictModel, named

# The kinds of value each distribution draws a field must take; a choice's values are checked
# by validating them (the corners), so it fits any field.
DRAWS = {
    "choice": frozenset(),
    "uniform": frozenset({"float"}),
    "loguniform": frozenset({"float"}),
    "int": frozenset({"int", "float"}),
}
_TYPE_KINDS: dict[Any, str] = {bool: "bool", int: "int", float: "float", str: "string"}
MAX_CHOICES = 100
Path = Annotated[
    str,
    StringConstraints(
        max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$"
    ),
]


class Choice(StrictModel):
    """One of `values`, any JSON (numbers, names, whole sections such as an optimizer object)."""

    type: Literal["choice"]
    values: list[JsonValue] = Field(min_length=1, max_length=MAX_CHOICES)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        encoded = [json.dumps(v, sort_keys=True) for v in self.values]
        if len(set(encoded)) != len(encoded):
            raise ValueError("choice values must not repeat")
        return self

    def corners(self) -> list[Any]:
        return list(self.values)


class Uniform(StrictModel):
    """A float drawn evenly from [low, high]."""

    type: Literal["uniform"]
    low: float = Field(ge=-1e12, le=1e12)
    high: float = Field(ge=-1e12, le=1e12)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def corners(self) -> list[Any]:
        return [self.low, self.high]


class LogUniform(Uniform):
    """A float drawn evenly in log space from [low, high]: learning rates, weight decays."""

    type: Literal["loguniform"]  # type: ignore[assignment]
    low: float = Field(gt=0.0, le=1e12)


class IntRange(StrictModel):
    """An integer from low, low + step, ..., high; `log` draws evenly in log space (step 1)."""

    type: Literal["int"]
    low: int = Field(ge=-(2**31), le=2**31)
    high: int = Field(ge=-(2**31), le=2**31)
    step: int = Field(1, ge=1, le=2**31)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low ({self.high - self.low}) must be a multiple of step")
        if self.log and (self.step != 1 or self.low < 1):
            raise ValueError("log needs step 1 and low >= 1")
        return self

    def corners(self) -> list[Any]:
        return [self.low, self.high]

    def grid(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


Distribution = Choice | Uniform | LogUniform | IntRange


def tagged(*classes: type[StrictModel]) -> WrapValidator:
    """Validation by the class `type` names, so an error's loc reads as the body does
    (`space.fit.batch_size.low`) without the tag a discriminated union adds (as JobSpec does).
    A missing or unknown `type` falls to the union's own error."""
    by_type = {get_args(c.model_fields["type"].annotation)[0]: c for c in classes}

    def dispatch(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        value = named(value, "type")
        tag = value.get("type") if isinstance(value, dict) else None
        chosen = by_type.get(tag) if isinstance(tag, str) else None  # a {} or [] tag: no class
        return handler(value) if chosen is None else chosen.model_validate(value)

    return WrapValidator(dispatch)


AnyDistribution = Annotated[
    Distribution, Field(discriminator="type"), tagged(Choice, Uniform, LogUniform, IntRange)
]


def apply(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` (a job spec as a dict) with each dotted path of `params` set to its value;
    the caller validates the result as a job spec. A path's parents must exist in `base`."""
    spec = deepcopy(base)
    for path, value in params.items():
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = deepcopy(value)
        else:
            node[last] = deepcopy(value)
    return spec


def kinds_at(spec: BaseModel, path: str, distribution: str) -> str | None:
    """None when `path` names a field of `spec` a `distribution` may set; else why not."""
    try:
        kinds = field_kinds(spec, path.split("."))
    except LookupError as exc:
        return str(exc.args[0])
    if DRAWS[distribution] and not kinds & DRAWS[distribution]:
        fits = "`int`, `uniform`, `loguniform` or `choice`" if "float" in kinds else "`choice`"
        if "int" in kinds and "bool" not in kinds:
            fits = "`int` or `choice`"
        held = " or ".join(sorted(kinds - {"null"})) or "null"
        return f"{path} holds {held} values: a distribution of type `{distribution}` does not fit; use {fits}"
    return None


def field_kinds(spec: BaseModel, parts: list[str]) -> set[str]:
    """The kinds of value (bool, int, float, string, null, other) the field at `parts` takes, from
    its declared type; a list item's from its value. Raises LookupError saying where the path
    leaves the spec."""
    node: Any = spec
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the job spec"
        last = depth == len(parts) - 1
        if isinstance(node, BaseModel):
            fields = type(node).model_fields
            if part not in fields:
                raise LookupError(f"{where}{_described(node)} has no field `{part}`")
            if last:
                return _kinds(fields[part].annotation)
            node = getattr(node, part)
        elif isinstance(node, list | tuple):
            if not part.isdigit() or int(part) >= len(node):
                raise LookupError(f"{where} holds {len(node)} items: there is no item {part}")
            node = node[int(part)]
            if last:
                return {"other"} if isinstance(node, BaseModel) else {_value_kind(node)}
        elif node is None:
            raise LookupError(
                f"{where} is null in the base spec: give it there to search inside it"
            )
        else:
            raise LookupError(f"{where} is a single value, with no `{part}` inside")
    raise LookupError("an empty path")  # pragma: no cover - the path pattern needs a part


def space_error(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    """One error of a sweep spec, at `loc`. The message rides in the context: a template would
    read the braces of a JSON value in it as placeholders."""
    kind = PydanticCustomError("sweep_space", "{reason}", {"reason": message})
    return InitErrorDetails(type=kind, loc=loc, input=value)


def _described(node: BaseModel) -> str:
    kind = getattr(node, "type", None)
    return f" (type {kind!r})" if isinstance(kind, str) else ""


def _kinds(annotation: Any) -> set[str]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return set().union(*(_kinds(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {_value_kind(value) for value in get_args(annotation)}
    if annotation is type(None):
        return {"null"}
    return {_TYPE_KINDS.get(annotation, "other")}


def _value_kind(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_KINDS.get(type(value), "other")

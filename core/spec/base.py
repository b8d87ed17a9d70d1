"""What every part of the job spec shares: strictness, and Keras' shorthand of a name for its
defaults."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are an error (a typo must not become a silent default); NaN/inf too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def named(value: Any, key: str) -> Any:
    """Keras lets `"adam"` stand for `{"type": "adam"}`; so do we."""
    return {key: value} if isinstance(value, str) else value

"""The errors of models: a spec that cannot be built, a predict request that cannot be served, a
checkpoint that cannot be read."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec that parses but cannot be built or trained on its dataset.

    `loc` is the JSON path of the field at fault, as in pydantic's errors, so the API
    can answer 422 pointing at the same place.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc


class PredictError(ValueError):
    """A predict request the model cannot serve: instances that do not fit (the message names the
    expected shape), a wrong operation for the family, missing inputs. The API answers 422
    pointing at `field` of the request body."""

    def __init__(self, message: str, field: str = "instances") -> None:
        super().__init__(message)
        self.field = field


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or not ours (or of a format this code does not read)."""

"""The sweep spec: a base job spec, a search space over its fields, a sampler, a pruner and the
objective to optimise (docs/sweeps.md).

A search space maps a dotted path of the base spec to a distribution (core/spec/space.py).
Validation refuses what can be refused before a trial runs, each error at `["space", path]`: a
path the base has not, a distribution of the wrong kind for the field, grid over a continuous
range, and a corner of the space (each choice, each range's ends, one path at a time) that is
not a valid job spec or does not report the objective.
"""

from __future__ import annotations

import json
from functools import reduce
from operator import mul
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationError, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails

from core.spec.base import StrictModel
from core.spec.job import AnyJob, JobSpec
from core.spec.space import (
    AnyDistribution,
    Choice,
    IntRange,
    Path,
    apply,
    kinds_at,
    space_error,
    tagged,
)

MAX_PATHS = 32
MAX_GRID = 10_000  # GridSampler lists every point: the product of the grid's values
STORED = "fitserve.sweep.stored"  # the validation context of `SweepSpec.stored`


class GridSearch(StrictModel):
    """Every combination of the `choice` and `int` values, in an order shuffled by `seed`."""

    type: Literal["grid"]
    seed: int = Field(0, ge=0, le=2**31 - 1)


class RandomSearch(StrictModel):
    type: Literal["random"]
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="default: unseeded")


class TPESearch(StrictModel):
    """Tree-structured Parzen estimator: random for `n_startup_trials`, then guided by them."""

    type: Literal["tpe"]
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="default: unseeded")
    n_startup_trials: int = Field(10, ge=0, le=1000)


SamplerSpec = Annotated[
    GridSearch | RandomSearch | TPESearch,
    Field(discriminator="type"),
    tagged(GridSearch, RandomSearch, TPESearch),
]


class NoPruning(StrictModel):
    type: Literal["none"]


class MedianPruning(StrictModel):
    """Stop a trial whose objective at an epoch is worse than the median of earlier trials'."""

    type: Literal["median"]
    n_startup_trials: int = Field(
        5, ge=0, le=1000, description="trials completed before any pruning"
    )
    warmup_epochs: int = Field(
        0, ge=0, le=10_000, description="each trial's first epochs, never pruned"
    )
    interval_epochs: int = Field(1, ge=1, le=10_000, description="epochs between checks")


class AshaPruning(StrictModel):
    """Asynchronous successive halving: at epochs min_resource * reduction_factor^k, a trial
    goes on only within the best 1/reduction_factor of the trials that reached that epoch."""

    type: Literal["asha"]
    min_resource: int = Field(1, ge=1, le=10_000, description="epochs before the first rung")
    reduction_factor: int = Field(3, ge=2, le=100)
    min_early_stopping_rate: int = Field(0, ge=0, le=100)


class HyperbandPruning(StrictModel):
    """Several ASHA brackets of different aggressiveness, trials spread among them."""

    type: Literal["hyperband"]
    min_resource: int = Field(1, ge=1, le=10_000)
    max_resource: int | None = Field(
        None, ge=1, le=10_000, description="epochs; default the most any trial trains"
    )
    reduction_factor: int = Field(3, ge=2, le=100)


PrunerSpec = Annotated[
    NoPruning | MedianPruning | AshaPruning | HyperbandPruning,
    Field(discriminator="type"),
    tagged(NoPruning, MedianPruning, AshaPruning, HyperbandPruning),
]


class Objective(StrictModel):
    metric: str = Field(max_length=64, description="a per-epoch metric of the base job")
    direction: Literal["min", "max"]


class SweepSpec(StrictModel):
    name: str | None = Field(
        None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$"
    )
    base: AnyJob
    space: dict[Path, AnyDistribution] = Field(min_length=1, max_length=MAX_PATHS)
    sampler: SamplerSpec = Field(default_factory=lambda: TPESearch(type="tpe"))
    pruner: PrunerSpec = Field(default_factory=lambda: NoPruning(type="none"))
    objective: Objective
    max_trials: int = Field(10, ge=1, le=1000)
    parallelism: int = Field(1, ge=1, le=64, description="trials queued or running at once")

    @classmethod
    def stored(cls, data: Any) -> SweepSpec:
        """A spec read back from its sweep's row: its space was checked against its base when it
        was submitted, so the corners (a job spec's validation each) are not checked again."""
        return cls.model_validate(data, context={STORED: True})

    @model_validator(mode="after")
    def _space_fits_base(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get(STORED):
            return self
        errors = [*self._path_errors(), *self._grid_errors()]
        reported = self.objective.metric in self.base.metric_names()
        if not errors:  # corners only of a space whose paths and kinds are right
            errors = self._corner_errors(self.objective.metric if reported else None)
        if not reported:
            errors.append(
                space_error(
                    ("objective", "metric"),
                    f"the base job does not report {self.objective.metric!r}; "
                    f"choose one of {sorted(self.base.metric_names())}",
                    self.objective.metric,
                )
            )
        errors += self._pruner_errors()
        if errors:
            raise ValidationError.from_exception_data("SweepSpec", errors)
        return self

    def _path_errors(self) -> list[InitErrorDetails]:
        errors = []
        for path, distribution in self.space.items():
            inner = [p for p in self.space if p.startswith(path + ".")]
            problem = (
                "a sweep's trials are of the base's family"
                if path == "family"
                else f"{inner[0]} is inside {path}: search one or the other"
                if inner
                else kinds_at(self.base, path, distribution.type)
            )
            if problem:
                errors.append(space_error(("space", path), problem, path))
        return errors

    def _grid_errors(self) -> list[InitErrorDetails]:
        if not isinstance(self.sampler, GridSearch):
            return []
        errors = [
            space_error(
                ("space", path),
                f"grid search takes `choice` or `int` distributions, not `{d.type}`",
                d.type,
            )
            for path, d in self.space.items()
            if not isinstance(d, Choice | IntRange)
        ]
        if not errors and self.grid_size > MAX_GRID:
            message = f"the grid has {self.grid_size} points; at most {MAX_GRID}"
            errors.append(space_error(("space",), message, self.grid_size))
        return errors

    def _corner_errors(self, metric: str | None) -> list[InitErrorDetails]:
        base = self.base.model_dump(mode="json")
        errors = []
        for path, distribution in self.space.items():
            for value in distribution.corners():
                problem = _corner_problem(apply(base, {path: value}), metric)
                if problem:
                    message = f"{path} = {json.dumps(value)} gives an invalid job: {problem}"
                    errors.append(space_error(("space", path), message, value))
                    break  # one corner says enough of a path
        return errors

    def _pruner_errors(self) -> list[InitErrorDetails]:
        pruner = self.pruner
        if isinstance(pruner, HyperbandPruning) and self.max_resource <= pruner.min_resource:
            message = f"max_resource ({self.max_resource}) must be above min_resource"
            return [space_error(("pruner", "max_resource"), message, self.max_resource)]
        return []

    @property
    def grid(self) -> dict[str, list[Any]]:
        """Grid search's values per path: a choice's indices (see `value_of`), an int's range."""
        return {
            path: d.grid() if isinstance(d, IntRange) else list(range(len(d.corners())))
            for path, d in self.space.items()
            if isinstance(d, Choice | IntRange)
        }

    @property
    def grid_size(self) -> int:
        return reduce(mul, (len(values) for values in self.grid.values()), 1)

    @property
    def trial_budget(self) -> int:
        """Trials to run: max_trials, or fewer where a grid has fewer points."""
        if isinstance(self.sampler, GridSearch):
            return min(self.max_trials, self.grid_size)
        return self.max_trials

    @property
    def max_resource(self) -> int:
        """Hyperband's largest budget in epochs: the pruner's, else the most a trial trains."""
        if isinstance(self.pruner, HyperbandPruning) and self.pruner.max_resource is not None:
            return self.pruner.max_resource
        searched = self.space.get("fit.epochs")
        return int(max(searched.corners())) if searched is not None else self.base.fit.epochs

    def trial_spec(self, params: dict[str, Any]) -> JobSpec:
        """The job spec of a trial with `params` (path -> value); raises ValidationError."""
        return JobSpec.model_validate(apply(self.base.model_dump(mode="json"), params))


def _corner_problem(spec: dict[str, Any], metric: str | None) -> str | None:
    """Why `spec` is not a job that reports `metric` (None: any metric), or None."""
    try:
        job = JobSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the job"
        return f"{where}: {first['msg']}"
    if metric is not None and metric not in job.metric_names():
        return f"it does not report the objective {metric!r}"
    return None

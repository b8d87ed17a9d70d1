"""Sweeps on Optuna: a sweep is an Optuna study named by the sweep's id, kept by Optuna's RDB
storage in Fitserve's own database (SQLite or PostgreSQL).

Optuna's tables are made by Fitserve's migration 0011, not by Optuna: Optuna records its schema
revision in `alembic_version`, the table Fitserve's own revision is in, so the storage here skips
Optuna's table creation and its compatibility check (both read or stamp that table). The storage
must therefore never be opened on a database the migrations have not built: Optuna would stamp
its revision over an empty `alembic_version` (`storage` refuses that).

Every call is short and stateless: it loads the study with the sampler and pruner rebuilt from the
sweep's spec (Optuna stores neither), does one thing and returns. The API process creates the
study and asks for trials; a trial's training process reports each epoch's objective and learns
whether to stop; the worker tells each trial's outcome. Storages (an engine each) are cached per
process and database URL, never per sweep.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    SuccessiveHalvingPruner,
)
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from core.db import get_engine
from core.settings import get_settings
from core.spec.space import Choice, IntRange, LogUniform
from core.spec.sweep import (
    AshaPruning,
    GridSearch,
    HyperbandPruning,
    MedianPruning,
    RandomSearch,
    SweepSpec,
)

# Optuna logs through a stderr handler of its own, a text line per trial: its records go through
# Fitserve's logging instead (JSON or text, as configured), warnings and worse only.
optuna.logging.disable_default_handler()
optuna.logging.enable_propagation()
optuna.logging.set_verbosity(optuna.logging.WARNING)

Outcome = Literal["complete", "pruned", "fail"]
_STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}
_DIRECTIONS = {"min": "minimize", "max": "maximize"}
_storages: dict[tuple[int, str], RDBStorage] = {}
_storages_lock = threading.Lock()


@dataclass(frozen=True)
class Asked:
    """A new trial: its number in the sweep (from 0) and its value for each path of the space."""

    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialRecord:
    """A trial as Optuna knows it: state running, complete, pruned or fail; value its objective
    (a pruned trial's: the last one reported; none for a failed or running one)."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]


def storage(url: str | None = None) -> RDBStorage:
    """Optuna's storage on Fitserve's database, one per process (a forked child makes its own)."""
    url = url or get_settings().database_url
    key = (os.getpid(), url)
    with _storages_lock:
        if key not in _storages:
            _storages[key] = _open_storage(url)
        return _storages[key]


def _open_storage(url: str) -> RDBStorage:
    from alembic.migration import MigrationContext  # here: importing alembic takes 0.3 s

    # Checked first: RDBStorage stamps its own revision into an empty `alembic_version`.
    with get_engine(url).connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() is None:
            raise RuntimeError(f"{url} has no Fitserve schema: run the migrations first")
    return RDBStorage(
        url,
        engine_kwargs=_engine_kwargs(url),
        skip_compatibility_check=True,
        skip_table_creation=True,
    )


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # sqlite3's timeout is its busy timeout: wait out another process's write (an ask or a
        # report) instead of failing; WAL is already set on the file by core.db's engines.
        return {"connect_args": {"timeout": 10, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 8}


def sampler_for(spec: SweepSpec, trial_number: int | None = None) -> BaseSampler:
    """The spec's sampler. A seeded random or TPE sampler is seeded per trial from the spec's
    seed and the trial's number: rebuilt on every call, one seed would draw the same values for
    every trial. Grid's seed only shuffles its points, alike in every process, so trial n takes
    point n of the same order and concurrent asks never pick the same point."""
    chosen = spec.sampler
    if isinstance(chosen, GridSearch):
        return GridSampler(spec.grid, seed=chosen.seed)
    seed = chosen.seed
    if seed is not None and trial_number is not None:
        seed = random.Random(f"{seed}:{trial_number}").getrandbits(32)  # noqa: S311 - not secret
    if isinstance(chosen, RandomSearch):
        return RandomSampler(seed=seed)
    return TPESampler(seed=seed, n_startup_trials=chosen.n_startup_trials)


def pruner_for(spec: SweepSpec) -> BasePruner:
    """The spec's pruner. Steps are epochs counted from 1 (the epochs trained so far), so ASHA's
    and Hyperband's resources are epochs."""
    chosen = spec.pruner
    if isinstance(chosen, MedianPruning):
        return MedianPruner(
            n_startup_trials=chosen.n_startup_trials,
            n_warmup_steps=chosen.warmup_epochs
            + 1,  # Optuna spares steps below it; ours start at 1
            interval_steps=chosen.interval_epochs,
        )
    if isinstance(chosen, AshaPruning):
        return SuccessiveHalvingPruner(
            min_resource=chosen.min_resource,
            reduction_factor=chosen.reduction_factor,
            min_early_stopping_rate=chosen.min_early_stopping_rate,
        )
    if isinstance(chosen, HyperbandPruning):
        return HyperbandPruner(
            min_resource=chosen.min_resource,
            max_resource=spec.max_resource,
            reduction_factor=chosen.reduction_factor,
        )
    return NopPruner()


def _study(
    sweep_id: str, spec: SweepSpec, url: str | None, trial_number: int | None = None
) -> optuna.Study:
    return optuna.load_study(
        study_name=sweep_id,
        storage=storage(url),
        sampler=sampler_for(spec, trial_number),
        pruner=pruner_for(spec),
    )


def create_study(sweep_id: str, spec: SweepSpec, *, url: str | None = None) -> None:
    """The sweep's study; again for the same sweep (a retried request) is no error."""
    optuna.create_study(
        storage=storage(url),
        study_name=sweep_id,
        direction=_DIRECTIONS[spec.objective.direction],
        load_if_exists=True,
    )


def ask(sweep_id: str, spec: SweepSpec, *, url: str | None = None) -> Asked | None:
    """A new trial and its values, drawn by the spec's sampler; concurrent asks get distinct
    numbers. None once a grid is spent (that trial is told failed). The trial is Optuna's from
    here: tell it failed if its job is never made."""
    study = _study(sweep_id, spec, url)
    trial = study.ask()
    if isinstance(spec.sampler, GridSearch) and trial.number >= spec.grid_size:
        study.tell(trial, state=TrialState.FAIL)  # GridSampler would run a point again
        return None
    if not isinstance(spec.sampler, GridSearch):
        study.sampler = sampler_for(spec, trial.number)  # draws happen at suggest
    drawn = {path: _suggest(trial, path, spec) for path in spec.space}
    return Asked(trial.number, decoded(spec, drawn))


def _suggest(trial: Trial, path: str, spec: SweepSpec) -> Any:
    distribution = spec.space[path]
    if isinstance(distribution, Choice):  # by index: Optuna's choices must be plain scalars
        return trial.suggest_categorical(path, list(range(len(distribution.values))))
    if isinstance(distribution, IntRange):
        return trial.suggest_int(
            path, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    log = isinstance(distribution, LogUniform)
    return trial.suggest_float(path, distribution.low, distribution.high, log=log)


def decoded(spec: SweepSpec, drawn: dict[str, Any]) -> dict[str, Any]:
    """Optuna's values as the spec's: a choice's index becomes its value."""
    values = {}
    for path, value in drawn.items():
        distribution = spec.space.get(path)
        values[path] = distribution.values[value] if isinstance(distribution, Choice) else value
    return values


def report(
    sweep_id: str, spec: SweepSpec, number: int, epoch: int, value: float, *, url: str | None = None
) -> bool:
    """Record trial `number`'s objective after `epoch` (from 1) and say whether the pruner stops
    it. An epoch reported again (a resumed attempt) keeps its first value. False for a trial
    already told: there is nothing left to decide."""
    study = _study(sweep_id, spec, url)
    backend = storage(url)
    trial_id = backend.get_trial_id_from_study_id_trial_number(
        backend.get_study_id_from_name(sweep_id), number
    )
    trial = Trial(study, trial_id)  # Optuna's own handle on a running trial, as ask returns
    try:
        trial.report(value, epoch)
    except UpdateFinishedTrialError:
        return False
    return trial.should_prune()


def tell(
    sweep_id: str,
    spec: SweepSpec,
    number: int,
    outcome: Outcome,
    value: float | None = None,
    *,
    url: str | None = None,
) -> None:
    """Trial `number` ended: complete with its objective `value`, pruned (its last reported value
    stands) or failed. A completed trial without a finite value (training diverged) is a failed
    one, as Optuna would have it. Telling a finished trial again does nothing (a retried end)."""
    if outcome == "complete" and (value is None or math.isnan(value)):
        outcome = "fail"
    study = _study(sweep_id, spec, url)
    told = value if outcome == "complete" else None
    study.tell(number, told, state=_STATES[outcome], skip_if_finished=True)


def best(sweep_id: str, spec: SweepSpec, *, url: str | None = None) -> TrialRecord | None:
    """The best completed trial (pruned ones never count), or None before any completed."""
    try:
        found = _study(sweep_id, spec, url).best_trial
    except ValueError:
        return None
    return _record(spec, found)


def trials(sweep_id: str, spec: SweepSpec, *, url: str | None = None) -> list[TrialRecord]:
    """Every trial of the sweep, by number."""
    found = _study(sweep_id, spec, url).get_trials(deepcopy=False)
    return [_record(spec, t) for t in sorted(found, key=lambda t: t.number)]


def delete_study(sweep_id: str, *, url: str | None = None) -> None:
    """The sweep's study and its trials (its jobs are the caller's); none is no error."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=sweep_id, storage=storage(url))


def _record(spec: SweepSpec, trial: FrozenTrial) -> TrialRecord:
    return TrialRecord(
        number=trial.number,
        state=trial.state.name.lower(),
        value=trial.value,
        params=decoded(spec, trial.params),
    )

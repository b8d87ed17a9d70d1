"""Sweeps on Optuna, on SQLite and PostgreSQL databases built by the migrations: what ask draws
makes valid job specs, grid covers its product once, the pruners stop a trial clearly worse than
earlier ones, and trial numbers stay distinct under concurrent asks from several processes."""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import secrets
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from optuna.storages._rdb.models import BaseModel as OptunaModel

from core import sweeps
from core.db import OPTUNA_TABLES, alembic_config, get_engine, ours
from core.spec.sweep import SweepSpec

DIGITS = json.loads((Path(__file__).parent.parent / "examples" / "digits_mlp.json").read_text())
SPACE = {
    "compile.optimizer": {"type": "choice", "values": ["sgd", {"type": "adamw"}]},
    "compile.regularization.l2": {"type": "uniform", "low": 0.0, "high": 0.01},
    "fit.batch_size": {"type": "int", "low": 16, "high": 128, "step": 16},
    "model.layers.1.units": {"type": "choice", "values": [32, 64, 128]},
}


def make_spec(**fields: Any) -> SweepSpec:
    body = {
        "base": DIGITS,
        "space": SPACE,
        "objective": {"metric": "val_accuracy", "direction": "max"},
    }
    return SweepSpec.model_validate({**body, **fields})


def new_sweep(url: str, spec: SweepSpec) -> str:
    sweep_id = f"swp_{secrets.token_hex(8)}"
    sweeps.create_study(sweep_id, spec, url=url)
    return sweep_id


def test_the_migrations_make_optunas_tables_as_its_models_declare_them(database_url: str) -> None:
    assert set(OptunaModel.metadata.tables) == OPTUNA_TABLES

    def optunas(name: str | None, type_: str, parents: Any) -> bool:
        return type_ != "table" or not ours(name, type_, parents)

    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": optunas, "compare_type": True}
        )
        assert compare_metadata(context, OptunaModel.metadata) == []


def test_asked_values_make_valid_job_specs_and_a_seed_repeats_them(database_url: str) -> None:
    spec = make_spec(sampler={"type": "random", "seed": 7})
    first, second = new_sweep(database_url, spec), new_sweep(database_url, spec)
    drawn = []
    for number in range(6):
        asked = sweeps.ask(first, spec, url=database_url)
        assert asked is not None and asked.number == number
        job = spec.trial_spec(asked.params)  # raises if a drawn value made no job
        assert job.fit.batch_size == asked.params["fit.batch_size"] and job.fit.batch_size % 16 == 0
        assert 0.0 <= asked.params["compile.regularization.l2"] <= 0.01
        drawn.append(asked.params)
    assert len({json.dumps(p, sort_keys=True) for p in drawn}) == 6  # a seed per trial, not one
    again = [sweeps.ask(second, spec, url=database_url) for _ in range(6)]
    assert [a.params for a in again if a is not None] == drawn  # the same seed, the same trials


def test_tpe_draws_valid_specs_after_its_startup_trials(database_url: str) -> None:
    spec = make_spec(sampler={"type": "tpe", "seed": 1, "n_startup_trials": 2})
    sweep_id = new_sweep(database_url, spec)
    for _ in range(5):
        asked = sweeps.ask(sweep_id, spec, url=database_url)
        assert asked is not None
        spec.trial_spec(asked.params)
        value = asked.params["fit.batch_size"] / 128
        sweeps.tell(sweep_id, spec, asked.number, "complete", value, url=database_url)


def test_grid_enumerates_the_product_once_then_stops(database_url: str) -> None:
    space = {
        "model.layers.1.activation": {"type": "choice", "values": ["relu", "tanh", "elu"]},
        "fit.epochs": {"type": "int", "low": 1, "high": 3, "step": 2},
    }
    spec = make_spec(space=space, sampler="grid", max_trials=100)
    sweep_id = new_sweep(database_url, spec)
    asked = [sweeps.ask(sweep_id, spec, url=database_url) for _ in range(spec.trial_budget)]
    points = sorted((a.params["model.layers.1.activation"], a.params["fit.epochs"]) for a in asked)  # type: ignore[union-attr]
    assert points == sorted(itertools.product(["relu", "tanh", "elu"], [1, 3]))
    assert sweeps.ask(sweep_id, spec, url=database_url) is None  # the grid is spent


def _report_all(url: str, sweep_id: str, spec: SweepSpec, number: int, values: list[float]) -> bool:
    """Report `values` for epochs 1, 2...; whether the pruner stopped the trial at the last."""
    pruned = False
    for epoch, value in enumerate(values, start=1):
        pruned = sweeps.report(sweep_id, spec, number, epoch, value, url=url)
    return pruned


@pytest.mark.parametrize(
    ("pruner", "direction"),
    [
        ({"type": "asha", "min_resource": 1, "reduction_factor": 2}, "max"),
        ({"type": "asha"}, "min"),
        ({"type": "median", "n_startup_trials": 2}, "max"),
    ],
)
def test_a_clearly_worse_trial_is_pruned(
    database_url: str, pruner: dict[str, Any], direction: str
) -> None:
    spec = make_spec(
        pruner=pruner,
        sampler={"type": "random", "seed": 0},
        objective={
            "metric": "val_loss" if direction == "min" else "val_accuracy",
            "direction": direction,
        },
    )
    sweep_id = new_sweep(database_url, spec)
    good = [0.80, 0.85, 0.90, 0.92] if direction == "max" else [0.5, 0.4, 0.3, 0.2]
    bad = 0.10 if direction == "max" else 5.0
    for _ in range(2):  # two good trials complete
        asked = sweeps.ask(sweep_id, spec, url=database_url)
        assert asked is not None
        assert not _report_all(database_url, sweep_id, spec, asked.number, good)
        sweeps.tell(sweep_id, spec, asked.number, "complete", good[-1], url=database_url)
    worse = sweeps.ask(sweep_id, spec, url=database_url)
    assert worse is not None
    assert sweeps.report(sweep_id, spec, worse.number, 1, bad, url=database_url)
    sweeps.tell(sweep_id, spec, worse.number, "pruned", url=database_url)
    states = {t.number: (t.state, t.value) for t in sweeps.trials(sweep_id, spec, url=database_url)}
    assert states[worse.number] == ("pruned", bad)  # its last reported value stands
    better = sweeps.ask(sweep_id, spec, url=database_url)  # as good as the best: goes on
    assert better is not None
    assert not sweeps.report(sweep_id, spec, better.number, 1, good[0], url=database_url)


def test_hyperband_and_no_pruner_decide_without_error(database_url: str) -> None:
    for pruner in ("hyperband", "none"):
        spec = make_spec(pruner=pruner)
        sweep_id = new_sweep(database_url, spec)
        for value in (0.9, 0.1):
            asked = sweeps.ask(sweep_id, spec, url=database_url)
            assert asked is not None
            pruned = _report_all(database_url, sweep_id, spec, asked.number, [value] * 5)
            assert pruner == "hyperband" or not pruned
            outcome = "pruned" if pruned else "complete"
            sweeps.tell(sweep_id, spec, asked.number, outcome, value, url=database_url)


def test_tell_and_best_round_trip(database_url: str) -> None:
    spec = make_spec(sampler={"type": "random", "seed": 3})
    sweep_id = new_sweep(database_url, spec)
    sweeps.create_study(sweep_id, spec, url=database_url)  # again: no error
    assert sweeps.best(sweep_id, spec, url=database_url) is None
    asked = [sweeps.ask(sweep_id, spec, url=database_url) for _ in range(5)]
    numbers = [a.number for a in asked if a is not None]
    sweeps.tell(sweep_id, spec, numbers[0], "complete", 0.7, url=database_url)
    sweeps.tell(sweep_id, spec, numbers[1], "complete", 0.9, url=database_url)
    sweeps.tell(sweep_id, spec, numbers[1], "complete", 0.1, url=database_url)  # a retry: kept
    sweeps.tell(sweep_id, spec, numbers[2], "fail", url=database_url)
    sweeps.tell(sweep_id, spec, numbers[3], "complete", math.nan, url=database_url)  # diverged
    assert not sweeps.report(sweep_id, spec, numbers[2], 1, 0.99, url=database_url)  # told
    found = sweeps.best(sweep_id, spec, url=database_url)
    assert found is not None and (found.number, found.value) == (numbers[1], 0.9)
    assert found.params == asked[1].params  # type: ignore[union-attr]
    states = [(t.state, t.value) for t in sweeps.trials(sweep_id, spec, url=database_url)]
    assert states == [
        ("complete", 0.7),
        ("complete", 0.9),
        ("fail", None),
        ("fail", None),
        ("running", None),
    ]
    sweeps.delete_study(sweep_id, url=database_url)
    sweeps.delete_study(sweep_id, url=database_url)  # gone already: no error


def _ask_many(
    url: str, sweep_id: str, body: dict[str, Any], count: int, ready: Any
) -> list[tuple[int, str]]:
    spec = SweepSpec.model_validate(body)
    sweeps.storage(url)  # opened before the start, so the asks overlap
    ready.wait(timeout=60)
    asked = [sweeps.ask(sweep_id, spec, url=url) for _ in range(count)]
    return [(a.number, json.dumps(a.params, sort_keys=True)) for a in asked if a is not None]


def test_concurrent_asks_from_processes_get_distinct_trials(database_url: str) -> None:
    """Three processes ask at once (a barrier starts them): distinct numbers, and with grid,
    whose point n is trial n's, distinct points."""
    space = {"fit.batch_size": {"type": "int", "low": 8, "high": 192, "step": 8}}  # 24 points
    spec = make_spec(space=space, sampler="grid", max_trials=24)
    sweep_id = new_sweep(database_url, spec)
    body = spec.model_dump(mode="json")
    context = multiprocessing.get_context("spawn")  # no copy of this process's engines
    with context.Manager() as manager, ProcessPoolExecutor(3, mp_context=context) as pool:
        ready = manager.Barrier(3)
        runs = [pool.submit(_ask_many, database_url, sweep_id, body, 8, ready) for _ in range(3)]
        asked = [trial for run in runs for trial in run.result(timeout=120)]
    assert sorted(number for number, _ in asked) == list(range(24))
    assert len({params for _, params in asked}) == 24


def test_the_storage_refuses_a_database_without_the_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(RuntimeError, match="run the migrations first"):
        sweeps.storage(url)
    with get_engine(url).connect() as connection:  # Optuna stamped nothing
        assert MigrationContext.configure(connection).get_current_revision() is None


def test_optuna_leaves_fitserves_revision_alone(database_url: str) -> None:
    sweeps.storage(database_url)
    with get_engine(database_url).connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert revision == head  # Fitserve's newest, not Optuna's

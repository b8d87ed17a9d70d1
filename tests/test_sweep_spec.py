"""The sweep spec: what it accepts, and each refusal at the path of the field at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from core.spec import JobSpec
from core.spec.space import apply
from core.spec.sweep import MAX_GRID, SweepSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = json.loads((EXAMPLES / "digits_mlp.json").read_text())
OBJECTIVE = {"metric": "val_accuracy", "direction": "max"}
SPACE = {
    "compile.optimizer.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
    "fit.batch_size": {"type": "int", "low": 16, "high": 128, "step": 16},
    "model.layers.1.units": {"type": "choice", "values": [32, 64, 128]},
    "model.layers.1.activation": {"type": "choice", "values": ["relu", "tanh"]},
    "fit.shuffle": {"type": "choice", "values": [True, False]},
    "compile.clip_grad_norm": {"type": "uniform", "low": 0.5, "high": 5.0},  # a null default
}


def sweep(space: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"base": DIGITS, "space": space or SPACE, "objective": OBJECTIVE, **fields}


def errors(body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as refused:
        SweepSpec.model_validate(body)
    return [(tuple(e["loc"]), e["msg"]) for e in refused.value.errors()]


def test_a_good_spec_validates_with_its_defaults() -> None:
    spec = SweepSpec.model_validate(sweep())
    assert (spec.sampler.type, spec.pruner.type, spec.max_trials, spec.parallelism) == (
        "tpe",
        "none",
        10,
        1,
    )
    assert spec.base == JobSpec.model_validate(DIGITS) and spec.trial_budget == 10
    assert SweepSpec.stored(spec.model_dump(mode="json")) == spec  # the row's copy reads back


def test_shorthands_and_knobs() -> None:
    spec = SweepSpec.model_validate(
        sweep(sampler="random", pruner={"type": "asha", "reduction_factor": 2}, max_trials=8)
    )
    assert (spec.sampler.type, spec.sampler.seed, spec.pruner.reduction_factor) == (  # type: ignore[union-attr]
        "random",
        None,
        2,
    )


def test_apply_sets_each_path_on_a_copy() -> None:
    base = JobSpec.model_validate(DIGITS).model_dump(mode="json")
    params = {"model.layers.1.units": 7, "compile.optimizer": {"type": "sgd"}, "fit.epochs": 2}
    applied = apply(base, params)
    assert applied["model"]["layers"][1]["units"] == 7 and applied["fit"]["epochs"] == 2
    assert applied["compile"]["optimizer"] == {"type": "sgd"}
    assert base["model"]["layers"][1]["units"] == 512  # untouched
    job = SweepSpec.model_validate(sweep()).trial_spec(params)
    assert job.supervised_model.layers[1].units == 7  # type: ignore[index, union-attr]


def test_a_whole_section_may_be_a_choice() -> None:
    optimizers = ["sgd", {"type": "adam", "learning_rate": 0.01}, {"type": "rmsprop"}]
    spec = SweepSpec.model_validate(
        sweep({"compile.optimizer": {"type": "choice", "values": optimizers}})
    )
    assert spec.trial_spec({"compile.optimizer": "sgd"}).compiled.optimizer.type == "sgd"


@pytest.mark.parametrize(
    ("space", "fields", "loc", "message"),
    [
        (  # an index past the list
            {"model.layers.9.units": {"type": "int", "low": 8, "high": 64}},
            {},
            ("space", "model.layers.9.units"),
            "model.layers holds 3 items: there is no item 9",
        ),
        (  # a field its layer has not
            {"model.layers.0.units": {"type": "int", "low": 8, "high": 64}},
            {},
            ("space", "model.layers.0.units"),
            "model.layers.0 (type 'flatten') has no field `units`",
        ),
        (
            {"fit.batch_sise": {"type": "int", "low": 8, "high": 64}},
            {},
            ("space", "fit.batch_sise"),
            "fit has no field `batch_sise`",
        ),
        (  # inside a section the base left null
            {"fit.early_stopping.patience": {"type": "int", "low": 1, "high": 5}},
            {},
            ("space", "fit.early_stopping.patience"),
            "fit.early_stopping is null in the base spec",
        ),
        (  # floats for an integer field
            {"fit.batch_size": {"type": "uniform", "low": 8, "high": 64}},
            {},
            ("space", "fit.batch_size"),
            "fit.batch_size holds int values: a distribution of type `uniform` does not fit; "
            "use `int` or `choice`",
        ),
        (
            {"fit.shuffle": {"type": "int", "low": 0, "high": 1}},
            {},
            ("space", "fit.shuffle"),
            "a distribution of type `int` does not fit; use `choice`",
        ),
        (
            {"model.layers.1.activation": {"type": "loguniform", "low": 1, "high": 2}},
            {},
            ("space", "model.layers.1.activation"),
            "holds string values",
        ),
        (  # grid over a continuous range
            {"compile.optimizer.learning_rate": {"type": "uniform", "low": 0.01, "high": 0.1}},
            {"sampler": "grid"},
            ("space", "compile.optimizer.learning_rate"),
            "grid search takes `choice` or `int` distributions, not `uniform`",
        ),
        (
            {"fit.batch_size": {"type": "int", "low": 64, "high": 8}},
            {},
            ("space", "fit.batch_size"),
            "low (64) must be below high (8)",
        ),
        (
            {"compile.optimizer.learning_rate": {"type": "uniform", "low": 0.1, "high": 0.1}},
            {},
            ("space", "compile.optimizer.learning_rate"),
            "low (0.1) must be below high (0.1)",
        ),
        (
            {"compile.optimizer.learning_rate": {"type": "loguniform", "low": 0, "high": 0.1}},
            {},
            ("space", "compile.optimizer.learning_rate", "low"),
            "greater than 0",
        ),
        (
            {"fit.batch_size": {"type": "int", "low": 8, "high": 60, "step": 8}},
            {},
            ("space", "fit.batch_size"),
            "high - low (52) must be a multiple of step",
        ),
        (  # a corner that is no job: the job spec's own words
            {"fit.batch_size": {"type": "int", "low": 0, "high": 64}},
            {},
            ("space", "fit.batch_size"),
            "fit.batch_size = 0 gives an invalid job: fit.batch_size: Input should be greater "
            "than or equal to 1",
        ),
        (
            {"compile.optimizer.learning_rate": {"type": "uniform", "low": 0, "high": 0.1}},
            {},
            ("space", "compile.optimizer.learning_rate"),
            "compile.optimizer.learning_rate = 0.0 gives an invalid job",
        ),
        (  # another optimizer's type keeps adam's fields: refused before any trial runs
            {"compile.optimizer.type": {"type": "choice", "values": ["adam", "sgd"]}},
            {},
            ("space", "compile.optimizer.type"),
            'compile.optimizer.type = "sgd" gives an invalid job: compile.optimizer.sgd.beta_1',
        ),
        (  # a JSON object in the message: braces are not placeholders
            {"compile.optimizer": {"type": "choice", "values": [{"type": "sgd", "lr": 1}]}},
            {},
            ("space", "compile.optimizer"),
            'compile.optimizer = {"type": "sgd", "lr": 1} gives an invalid job',
        ),
        (  # a corner without the objective
            {"fit.validation_split": {"type": "choice", "values": [0.0, 0.2]}},
            {},
            ("space", "fit.validation_split"),
            "it does not report the objective 'val_accuracy'",
        ),
        (
            {"family": {"type": "choice", "values": ["vae"]}},
            {},
            ("space", "family"),
            "a sweep's trials are of the base's family",
        ),
        (
            {
                "fit": {"type": "choice", "values": [{"epochs": 2}]},
                "fit.epochs": {"type": "int", "low": 1, "high": 3},
            },
            {},
            ("space", "fit"),
            "fit.epochs is inside fit: search one or the other",
        ),
        (
            {"fit.batch_size": {"type": "choice", "values": [32, 32]}},
            {},
            ("space", "fit.batch_size"),
            "choice values must not repeat",
        ),
        (
            {"fit.epochs": {"type": "int", "low": 1, "high": 3}},
            {"objective": {"metric": "val_f1", "direction": "max"}},
            ("objective", "metric"),
            "the base job does not report 'val_f1'; choose one of "
            "['accuracy', 'loss', 'val_accuracy', 'val_loss']",
        ),
        (
            {"fit.epochs": {"type": "int", "low": 1, "high": 3}},
            {"pruner": {"type": "hyperband", "min_resource": 3}},
            ("pruner", "max_resource"),
            "max_resource (3) must be above min_resource",
        ),
        (
            {"fit.epochs": {"type": "int", "low": 1, "high": MAX_GRID + 1}},
            {"sampler": "grid"},
            ("space",),
            f"the grid has {MAX_GRID + 1} points; at most {MAX_GRID}",
        ),
    ],
)
def test_each_bad_space_is_refused_at_its_path(
    space: dict[str, Any], fields: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    found = errors(sweep(space, **fields))
    assert any(where == loc and message in said for where, said in found), found


def test_every_bad_path_is_reported_at_once() -> None:
    space = {
        "fit.nope": {"type": "int", "low": 1, "high": 2},
        "model.layers.5.units": {"type": "int", "low": 1, "high": 2},
    }
    assert [loc for loc, _ in errors(sweep(space))] == [
        ("space", "fit.nope"),
        ("space", "model.layers.5.units"),
    ]


def test_bad_keys_and_budgets_are_refused() -> None:
    assert errors(sweep({"fit..epochs": {"type": "int", "low": 1, "high": 2}}))[0][0] == (
        "space",
        "fit..epochs",
        "[key]",
    )
    assert errors(sweep(max_trials=0))[0][0] == ("max_trials",)
    assert errors(sweep(parallelism=65))[0][0] == ("parallelism",)
    assert errors(sweep(sampler={"type": "anneal"}))[0][0] == ("sampler",)
    assert errors({**sweep(), "base": {**DIGITS, "fit": {"epochs": 0}}})[0][0] == (
        "base",
        "fit",
        "epochs",
    )


def test_grid_budget_and_hyperband_resource() -> None:
    space = {
        "model.layers.1.units": {"type": "choice", "values": [32, 64, 128]},
        "fit.epochs": {"type": "int", "low": 2, "high": 6, "step": 2},
    }
    spec = SweepSpec.model_validate(sweep(space, sampler="grid", max_trials=100))
    assert spec.grid == {"model.layers.1.units": [0, 1, 2], "fit.epochs": [2, 4, 6]}
    assert (spec.grid_size, spec.trial_budget) == (9, 9)
    assert SweepSpec.model_validate(sweep(space, sampler="grid", max_trials=4)).trial_budget == 4
    hyperband = SweepSpec.model_validate(sweep(space, pruner="hyperband"))
    assert hyperband.max_resource == 6  # the most epochs a trial trains
    assert (
        SweepSpec.model_validate(sweep(pruner="hyperband")).max_resource == DIGITS["fit"]["epochs"]
    )


def test_other_families_search_their_own_sections() -> None:
    vae = json.loads((EXAMPLES / "digits_vae.json").read_text())
    spec = SweepSpec.model_validate(
        {
            "base": vae,
            "space": {
                "vae.latent_dim": {"type": "int", "low": 2, "high": 16},
                "vae.beta": {"type": "loguniform", "low": 0.01, "high": 1.0},
            },
            "objective": {"metric": "val_reconstruction", "direction": "min"},
        }
    )
    assert spec.trial_spec({"vae.latent_dim": 3, "vae.beta": 0.5}).family == "vae"
    gan = json.loads((EXAMPLES / "gaussian_mixture_gan.json").read_text())
    path = "gan.generator.optimizer.learning_rate"
    spec = SweepSpec.model_validate(
        {
            "base": gan,
            "space": {path: {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
            "objective": {"metric": "fd", "direction": "min"},  # computed once per epoch
        }
    )
    assert spec.objective.metric == "fd"


def test_the_schema_is_published() -> None:
    schema = TypeAdapter(SweepSpec).json_schema()
    assert {"base", "space", "sampler", "pruner", "objective"} <= set(schema["properties"])


@pytest.mark.parametrize("tag", [{}, [], 3, None])
def test_a_type_tag_that_is_no_string_is_a_validation_error(tag: object) -> None:
    """The fuzzer's find: `"pruner": {"type": {}}` was a TypeError (a 500), not a 422."""
    for field in ("pruner", "sampler"):
        assert errors(sweep(**{field: {"type": tag}}))[0][0][0] == field
    assert errors(sweep({"fit.epochs": {"type": tag}}))[0][0][:2] == ("space", "fit.epochs")

"""The job spec as one variant per family: each example validates to its family's class, errors
name the body's own fields (no union tag in `loc`), a spec stored before the variants (every
other family's section dumped as null) still validates, and the OpenAPI body shows one variant
per registered family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from api.main import create_app
from core.spec import AnyJob, CompiledJob, JobSpec, SupervisedJob, VAEJob, variant_of
from core.spec.families import REGISTRY
from core.spec.job import VARIANTS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = {"name": "digits"}
VAE_SECTION = {
    "encoder": [{"type": "flatten"}, {"type": "dense", "units": 8}],
    "decoder": [{"type": "dense", "units": 64, "activation": "sigmoid"}],
}


def refusal(payload: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(payload)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_each_family_example_is_its_own_variant(family: str) -> None:
    payload = json.loads((EXAMPLES / f"{REGISTRY[family].example}.json").read_text())
    spec = JobSpec.model_validate(payload)
    assert type(spec) is VARIANTS[family] and spec.family == family
    assert getattr(spec, REGISTRY[family].section) is not None
    assert isinstance(spec, CompiledJob) == REGISTRY[family].compiles
    # the posted body's type (the API's) gives the same object
    assert TypeAdapter(AnyJob).validate_python(payload) == spec


def test_family_defaults_to_supervised() -> None:
    payload = json.loads((EXAMPLES / "digits_mlp.json").read_text())
    payload.pop("family", None)
    assert variant_of(payload) is SupervisedJob
    assert isinstance(JobSpec.model_validate(payload), SupervisedJob)


def test_an_unknown_family_is_refused_on_its_field() -> None:
    error = refusal({"family": "transformer", "dataset": DIGITS})
    assert error["loc"] == ("family",) and error["type"] == "literal_error"
    assert "'supervised'" in error["msg"] and "'seq2seq'" in error["msg"]


def test_errors_inside_a_family_section_name_the_body_path() -> None:
    bad = {**VAE_SECTION, "latent_dim": 0}
    error = refusal({"family": "vae", "dataset": DIGITS, "vae": bad, "compile": {"loss": "mse"}})
    assert error["loc"] == ("vae", "latent_dim") and error["type"] == "greater_than_equal"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(
            {"family": "vae", "compile": {"loss": "mse"}},
            "family 'vae' needs its `vae` section",
            id="own",
        ),
        pytest.param(
            {"family": "vae", "vae": VAE_SECTION, "compile": {"loss": "mse"}, "gan": {}},
            "`gan` is for family 'gan'; this job's family is 'vae'",
            id="foreign",
        ),
        pytest.param(
            {
                "family": "vae",
                "vae": VAE_SECTION,
                "compile": {"loss": "mse"},
                "model": {"preset": "mlp"},
            },
            "`model` is for the supervised family; family 'vae' describes its networks in `vae`",
            id="model",
        ),
        pytest.param(
            {"family": "vae", "vae": VAE_SECTION}, "family 'vae' needs `compile`", id="no-compile"
        ),
        pytest.param(
            {"family": "rbm", "rbm": {"hidden_units": 4}, "compile": {"loss": "mse"}},
            "family 'rbm' takes no `compile`: its optimizers are in `rbm`",
            id="compile",
        ),
    ],
)
def test_sections_are_refused_in_words(payload: dict[str, Any], message: str) -> None:
    error = refusal({"dataset": DIGITS, **payload})
    assert error["loc"] == () and message in error["msg"]


def test_a_spec_stored_before_the_variants_still_validates() -> None:
    """Stored jobs and version 1 checkpoints dumped every family's section, the others as null."""
    stored = {
        "family": "vae",
        "dataset": DIGITS,
        "vae": VAE_SECTION,
        "compile": {"loss": "mse"},
        **{r.section: None for r in REGISTRY.values() if r.name != "vae"},
    }
    spec = JobSpec.model_validate(stored)
    assert isinstance(spec, VAEJob) and spec.vae.latent_dim == 2
    assert "model" not in spec.model_dump() and "gan" not in spec.model_dump()
    assert JobSpec.model_validate_json(json.dumps(stored)) == spec


def test_openapi_shows_one_variant_per_family() -> None:
    schema = create_app().openapi()
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body["discriminator"]["propertyName"] == "family"
    assert set(body["discriminator"]["mapping"]) == set(REGISTRY)
    assert len(body["oneOf"]) == len(REGISTRY)
    components = schema["components"]["schemas"]
    for family, ref in body["discriminator"]["mapping"].items():
        variant = components[ref.rsplit("/", 1)[-1]]
        assert variant["properties"]["family"]["const"] == family
        assert REGISTRY[family].section in variant["required"]
        assert ("compile" in variant["properties"]) == REGISTRY[family].compiles

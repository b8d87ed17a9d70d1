"""Every spec in examples/ parses and passes the dry-run for its built-in dataset, as
`POST /v1/jobs` would check it: a documented example never answers 422."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from core.datasets import builtin_info
from core.spec import JobSpec
from core.spec.families import Family
from models.errors import SpecError
from models.validation import dry_run
from tests.helpers import EXAMPLES

FILES = sorted(EXAMPLES.glob("*.json"))


def test_there_is_an_example_per_family() -> None:
    families = {JobSpec.model_validate(json.loads(p.read_text())).family for p in FILES}
    assert families == set(typing.get_args(Family))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_an_example_validates_for_its_dataset(path: Path) -> None:
    spec = JobSpec.model_validate(json.loads(path.read_text()))
    assert spec.dataset.name is not None, "examples use built-in datasets, so they run anywhere"
    report = dry_run(spec, builtin_info(spec.dataset))
    assert report.parameters > 0


@pytest.mark.parametrize(
    ("name", "update", "loc", "message"),
    [
        (
            "digits_vae",
            {"fit": {"epochs": 2, "augmentation": {"shift": 0.1}}},
            ("fit", "augmentation"),
            "fit.augmentation applies to supervised training; the vae family takes none",
        ),
        (
            "digits_dbn",
            {"dataset": {"name": "sequence_reverse"}},
            ("dataset",),
            "the dataset's targets are token sequences, not one class per sample: the dbn family needs class labels",
        ),
        (
            "digits_mlp",
            {"dataset": {"name": "sequence_copy"}},
            ("dataset",),
            'the dataset\'s targets are token sequences, one class per step: train it with "family": "seq2seq"',
        ),
    ],
)
def test_what_a_family_cannot_honour_is_refused(
    name: str, update: dict[str, Any], loc: tuple[str, ...], message: str
) -> None:
    raw = json.loads((EXAMPLES / f"{name}.json").read_text())
    for section, fields in update.items():
        raw[section] = fields if section == "dataset" else {**raw[section], **fields}
    spec = JobSpec.model_validate(raw)
    with pytest.raises(SpecError) as caught:
        dry_run(spec, builtin_info(spec.dataset))
    assert (caught.value.message, caught.value.loc) == (message, loc)

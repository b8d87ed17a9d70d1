"""Every spec in examples/ parses and passes the dry-run for its built-in dataset, as
`POST /v1/jobs` would check it: a documented example never answers 422."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from core.datasets import builtin_info
from core.families import Family
from core.spec import JobSpec
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

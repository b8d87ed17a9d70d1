"""One harness for every family in core.spec.families.REGISTRY, as tests/test_layers.py is for layer
types: a family registered without its example, guide row, networks or task fails here.

Each family's example dry-runs, trains two epochs in-process, resumes exactly (a run broken in
its second epoch and resumed ends with the same weights as an unbroken one), serves each of its
predict operations and refuses another family's."""

from __future__ import annotations

import importlib
import json
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from core.datasets import load_dataset
from core.spec import GANJob, JobSpec
from core.spec.families import REGISTRY, Family, FamilyRecord
from core.spec.job import VARIANTS
from models.errors import PredictError, SpecError
from models.families import OperationRequest
from models.inference import Predictor
from models.validation import dry_run
from tests.helpers import EXAMPLES
from tests.test_engine import Recorder
from worker.datasource import load_train_data
from worker.training.engine import train

ROOT = Path(__file__).resolve().parent.parent
RECORDS = sorted(REGISTRY.values(), key=lambda r: r.name)
# what makes an example's two epochs meaningful: a DBN pretrains one RBM for one, then fine-tunes
SECTION_FOR_TWO_EPOCHS: dict[str, dict[str, Any]] = {
    "dbn": {"pretrain_epochs": 1, "hidden_units": [64]}
}


def test_the_registry_is_every_family_the_spec_accepts() -> None:
    assert set(typing.get_args(Family)) == set(REGISTRY)
    assert all(name == record.name for name, record in REGISTRY.items())


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_a_registered_family_has_its_pieces(record: FamilyRecord) -> None:
    """Its example, its row in its guide, its spec section, its model module and its task."""
    example = json.loads((EXAMPLES / f"{record.example}.json").read_text())
    assert example.get("family", "supervised") == record.name
    guide = (ROOT / record.guide).read_text()
    assert f"| `{record.name}` |" in guide or f'`"family": "{record.name}"`' in guide, record.guide
    assert record.section in VARIANTS[record.name].model_fields
    models = importlib.import_module(record.model_module)
    assert callable(models.build) and callable(models.dry_run)
    assert tuple(models.OPERATIONS) == record.operations
    assert importlib.import_module(record.trainer_module).TASK is not None
    assert record.operations and len(set(record.operations)) == len(record.operations)


def _spec(record: FamilyRecord, epochs: int) -> JobSpec:
    raw = json.loads((EXAMPLES / f"{record.example}.json").read_text())
    raw["fit"] = {
        **raw.get("fit", {}),
        "epochs": epochs,
        "early_stopping": None,
        "lr_schedule": None,
    }
    if record.name in SECTION_FOR_TWO_EPOCHS:
        raw[record.section] |= SECTION_FOR_TWO_EPOCHS[record.name]
    return JobSpec.model_validate(raw)


def _request(
    operation: str, spec: JobSpec, x: np.ndarray, codes: list[Any] | None
) -> OperationRequest:
    if operation in ("generate", "sample"):
        labelled = isinstance(spec, GANJob) and spec.gan.variant == "cgan"
        return OperationRequest(count=2, seed=1, labels=[0, 1] if labelled else None)
    if operation == "decode":
        return OperationRequest(instances=codes)
    return OperationRequest(instances=x[:2].tolist())


def _weights(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_every_family_dry_runs_trains_resumes_exactly_and_serves(
    record: FamilyRecord, tmp_path: Path
) -> None:
    spec = _spec(record, epochs=2)
    data = load_train_data(spec)
    report = dry_run(spec, data.info)
    assert report.parameters > 0 and report.estimated_memory_bytes > 0
    unbroken = train(spec, data, tmp_path / "unbroken")
    assert unbroken.status == "completed" and unbroken.epochs_done == 2
    epoch = unbroken.history[-1]
    for name in ("loss", *record.metrics):
        assert np.isfinite(epoch[name]), (name, epoch)
    # Broken off in its second epoch, then resumed from the first epoch's checkpoint.
    steps = -(-len(data.x_train) // spec.fit.batch_size)
    train(spec, data, tmp_path / "broken", [Recorder(stop_at_step=steps + 1)])
    resumed = train(spec, data, tmp_path / "broken", resume=True)
    assert resumed.epochs_done == 2
    assert unbroken.model_path is not None and resumed.model_path is not None
    a = _weights(unbroken.model_path.with_suffix(".safetensors"))
    b = _weights(resumed.model_path.with_suffix(".safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    # Every operation it serves, and another family's refused.
    predictor = Predictor.load(unbroken.model_path)
    x = load_dataset(spec.dataset, spec.fit.seed).x
    codes = None
    for operation in record.operations:
        answer = predictor.run(operation, _request(operation, spec, x, codes))
        assert answer["predictions"] is not None and len(answer["predictions"]) == 2, (
            operation,
            answer,
        )
        if operation == "encode":
            codes = answer["predictions"]
    foreign = next(op for r in RECORDS for op in r.operations if op not in record.operations)
    with pytest.raises(PredictError, match=repr(foreign)):
        predictor.run(foreign, _request(foreign, spec, x, codes))


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_mixed_precision_is_honoured_or_refused(record: FamilyRecord) -> None:
    """bf16/fp16 asked of a family that trains in fp32 is a 422 on the field, never ignored."""
    spec = _spec(record, epochs=2)  # dbn's example pretrains in its first epoch
    asked = spec.model_copy(update={"fit": spec.fit.model_copy(update={"mixed_precision": "bf16"})})
    info = load_train_data(spec).info
    if record.mixed_precision:
        assert dry_run(asked, info).parameters > 0
        return
    with pytest.raises(SpecError) as refused:
        dry_run(asked, info)
    assert refused.value.loc == ("fit", "mixed_precision") and "trains in fp32" in str(
        refused.value
    )
    assert dry_run(spec, info).parameters > 0  # "auto", the default, is fp32 for it

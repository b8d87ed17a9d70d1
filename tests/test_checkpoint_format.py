"""The checkpoint's JSON as a typed, versioned contract: version-1 checkpoints (the fixture, written
by the code before issue 12) still serve and resume; version 2 round-trips; newer ones are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from core.spec import JobSpec, Resources
from models.checkpoint import (
    CheckpointError,
    read_checkpoint,
    read_epoch_checkpoint,
    split_prefix,
    write_checkpoint,
)
from models.checkpoint_meta import (
    FORMAT_VERSION,
    EpochMeta,
    ModelMeta,
    dump_meta,
    parse_meta,
    upgrade_v1,
)
from models.families import OperationRequest
from models.inference import Predictor
from worker.datasource import load_train_data
from worker.training.callbacks import Callback, TrainStart
from worker.training.engine import train

V1 = Path(__file__).resolve().parent / "fixtures" / "checkpoint_v1"  # made by its make_fixture.py
DIGITS = [[(i * 7 + k * 3) % 17 for i in range(64)] for k in range(3)]  # raw pixel units, flat
# What the fixture's models answered when they were written (commit a3886d0).
DIGITS_PREDICTIONS = ["5", "8", "4"]
DIGITS_PROBABILITIES = [
    [
        0.062773,
        0.06932,
        0.180346,
        0.066239,
        0.169477,
        0.217036,
        0.015569,
        0.064126,
        0.046501,
        0.108613,
    ],
    [
        0.034601,
        0.012933,
        0.169962,
        0.018659,
        0.204091,
        0.103963,
        0.012497,
        0.089757,
        0.210244,
        0.143294,
    ],
    [
        0.022997,
        0.037611,
        0.167149,
        0.026234,
        0.448796,
        0.135847,
        0.019876,
        0.060809,
        0.037577,
        0.043102,
    ],
]
GAN_SAMPLES = [[0.25474116, 0.10603323], [0.82264346, -1.26323092], [-0.20493156, -0.38660711]]
GAN_SCORES = [0.49383843, 0.44175911]
TIMINGS = {"epoch_seconds", "samples_per_second"}


class StartedAt(Callback):
    def __init__(self) -> None:
        self.start: TrainStart | None = None

    def on_train_start(self, start: TrainStart) -> None:
        self.start = start


def v1_json(name: str, file: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((V1 / name / file).read_text())
    return raw


def test_the_fixture_is_version_1() -> None:
    for path in V1.rglob("*.json"):
        raw = json.loads(path.read_text())
        assert raw["format"] == "fitserve.checkpoint/1" and "format_version" not in raw, path


def test_a_version_1_model_serves_as_it_did() -> None:
    out = Predictor.load(V1 / "digits").predict(DIGITS)
    assert out["predictions"] == DIGITS_PREDICTIONS
    assert out["probabilities"] == [pytest.approx(row, abs=2e-6) for row in DIGITS_PROBABILITIES]
    gan = Predictor.load(V1 / "gan")
    samples = gan.run("generate", OperationRequest(count=3, seed=5))["predictions"]
    assert samples == [pytest.approx(row, abs=1e-6) for row in GAN_SAMPLES]
    scores = gan.run("discriminate", OperationRequest(instances=[[0.0, 0.0], [1.0, -1.0]]))[
        "predictions"
    ]
    assert scores == pytest.approx(GAN_SCORES, abs=1e-6)


def test_version_1_is_upgraded_on_reading() -> None:
    raw = v1_json("gan", "checkpoints/epoch-0001.json")
    _, meta = read_epoch_checkpoint(V1 / "gan" / "checkpoints" / "epoch-0001.json")
    assert isinstance(meta, EpochMeta) and meta.format_version == FORMAT_VERSION
    # "optimizer" and "optimizer1" (the generator's and the discriminator's) became a list, in that order
    assert [o.model_dump() for o in meta.optimizers] == [raw["optimizer"], raw["optimizer1"]]
    assert meta.task == raw["task"] and meta.sha256 == raw["sha256"] and meta.step == raw["step"]
    # The spec is the same; a variant per family no longer dumps the other families' sections as
    # null, and the fields added since (resources, priority) read as their defaults.
    assert meta.spec.model_dump(mode="json", exclude={"resources", "priority"}) == {
        k: v for k, v in raw["spec"].items() if v is not None
    }
    assert meta.spec.resources == Resources() and meta.spec.priority == 0
    _, model = read_checkpoint(V1 / "gan" / "model.json")
    assert isinstance(model, ModelMeta) and model.family == {
        "variant": "gan",
        "latent_dim": 4,
        "num_classes": None,
    }


def test_version_1_from_before_model_families_gets_the_defaults_its_readers_applied() -> None:
    epoch = {
        k: v
        for k, v in v1_json("digits", "checkpoints/epoch-0001.json").items()
        if k not in ("task", "class_names")
    }
    model = {
        k: v
        for k, v in v1_json("digits", "model.json").items()
        if k not in ("family", "preprocessing")
    }
    assert parse_meta(epoch, "epoch-0001.json").model_dump(include={"task", "class_names"}) == {
        "task": {},
        "class_names": None,
    }
    upgraded = parse_meta(model, "model.json")
    assert (
        isinstance(upgraded, ModelMeta) and upgraded.family == {} and upgraded.preprocessing == {}
    )
    assert upgrade_v1(epoch)["optimizers"] == [epoch["optimizer"]]


@pytest.mark.parametrize("name", ["digits", "gan"])
def test_a_version_1_checkpoint_resumes_as_the_unbroken_run_went_on(
    name: str, tmp_path: Path
) -> None:
    """The fixture holds epoch 1's checkpoints (and digits' best.json) of a two-epoch run, and that run's
    final model: resumed here, epoch 2 ends where the unbroken run did."""
    shutil.copytree(V1 / name / "checkpoints", tmp_path / "checkpoints")
    spec = JobSpec.model_validate(v1_json(name, "checkpoints/epoch-0001.json")["spec"])
    started = StartedAt()
    result = train(spec, load_train_data(spec), tmp_path, [started], resume=True)
    assert started.start is not None and started.start.start_epoch == 1
    assert (
        result.status == "completed" and result.epochs_done == 2 and result.model_path is not None
    )
    unbroken = v1_json(name, "model.json")
    history = [{k: v for k, v in epoch.items() if k not in TIMINGS} for epoch in result.history]
    expected = [
        {k: v for k, v in epoch.items() if k not in TIMINGS} for epoch in unbroken["history"]
    ]
    assert history == [pytest.approx(epoch, abs=1e-6) for epoch in expected]
    resumed = split_prefix(load_file(str(result.model_path.with_suffix(".safetensors"))), "model.")
    before = split_prefix(load_file(str(V1 / name / "model.safetensors")), "model.")
    assert resumed.keys() == before.keys()
    assert all(torch.allclose(resumed[k], before[k], atol=1e-6) for k in before)
    # what the resumed run wrote is version 2
    assert json.loads(result.model_path.read_text())["format_version"] == FORMAT_VERSION


def test_version_2_round_trips(tmp_path: Path) -> None:
    tensors, meta = read_epoch_checkpoint(V1 / "gan" / "checkpoints" / "epoch-0001.json")
    path, digest = write_checkpoint(tmp_path, "epoch-0001", tensors, meta)
    raw = json.loads(path.read_text())
    assert (
        raw["format"] == "fitserve.checkpoint"
        and raw["format_version"] == 2
        and raw["sha256"] == digest
    )
    assert len(raw["optimizers"]) == 2 and not {"optimizer", "optimizer1"} & raw.keys()
    assert path.read_text().startswith(
        '{\n "format": "fitserve.checkpoint",\n "format_version": 2,\n'
    )  # for people
    again_tensors, again = read_epoch_checkpoint(path)
    assert again == meta.model_copy(update={"sha256": digest})
    assert again_tensors.keys() == tensors.keys() and all(
        torch.equal(again_tensors[k], tensors[k]) for k in tensors
    )
    assert parse_meta(json.loads(dump_meta(again)), path.name) == again


def test_a_newer_or_foreign_format_is_refused_by_name() -> None:
    _, meta = read_checkpoint(V1 / "digits" / "model.json")
    raw = json.loads(dump_meta(meta))
    with pytest.raises(
        CheckpointError, match=r"^model.json: format_version 3 is written by a newer Fitserve"
    ):
        parse_meta(raw | {"format_version": 3}, "model.json")
    with pytest.raises(CheckpointError, match=r"^model.json: not a fitserve.checkpoint checkpoint"):
        parse_meta(raw | {"format": "fitserve.checkpoint/9"}, "model.json")
    with pytest.raises(
        CheckpointError, match=r"^model.json: invalid at history: Input should be a valid list"
    ):
        parse_meta(raw | {"history": "none"}, "model.json")
    with pytest.raises(CheckpointError, match=r"^model.json: a model checkpoint, not an epoch's"):
        read_epoch_checkpoint(V1 / "digits" / "model.json")

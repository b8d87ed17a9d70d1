"""Data-parallel training of one job: real rank processes on gloo (worker/training/distributed.py).

Each rank records a digest of its parameters after every step (a rank callback, running in the
rank process), so the tests compare what every rank holds, not only what the leader reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from core.spec import JobSpec
from models.checkpoint import split_prefix
from models.errors import SpecError
from tests.helpers import EXAMPLES, digits_mlp, example
from worker.datasource import load_train_data
from worker.training.callbacks import Callback, CheckpointInfo, TrainStart
from worker.training.data import TrainData, TrainingFailed
from worker.training.distributed import RankFailed, _free_port, train_distributed
from worker.training.engine import Trainer, TrainResult, train

STEPS = 23  # digits: 1438 training samples, batches of 64 or 65, the short last one kept


class Recorder(Callback):
    """The calling process's callbacks: what the leader forwarded."""

    def __init__(self, stop_at_step: int | None = None) -> None:
        self.stop_at_step = stop_at_step
        self.start: TrainStart | None = None
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.epochs: list[int] = []
        self.checkpoints: list[int] = []
        self.ends: list[str] = []

    def on_train_start(self, start: TrainStart) -> None:
        self.start = start

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        self.steps.append(step)

    def on_step_loss(self, epoch: int, step: int, loss: float) -> None:
        self.losses.append(loss)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(epoch)

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        self.checkpoints.append(info.epoch)

    def on_train_end(self, result: Any) -> None:
        self.ends.append(result.status)

    def should_stop(self) -> bool:
        return (
            self.stop_at_step is not None
            and bool(self.steps)
            and self.steps[-1] >= self.stop_at_step
        )


class Digests(Callback):
    """In a rank: after every step, a digest of the rank's parameters. At step `at` it SIGKILLs its
    own process (a real SIGKILL: the other ranks and the launcher see a dead rank) or, with
    `fail`, raises a TrainingFailed of its own, as a rank meeting a NaN loss would."""

    def __init__(
        self, directory: Path, rank: int, trainer: Trainer, at: int | None, fail: bool
    ) -> None:
        self.path, self.trainer = directory / f"digests-{rank}.txt", trainer
        self.pid_file, self.at, self.fail = directory / f"pid-{rank}", at, fail

    def on_train_start(self, start: TrainStart) -> None:
        self.pid_file.write_text(str(os.getpid()))

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        if step == self.at and self.fail:
            raise TrainingFailed(f"the loss became nan at epoch {epoch}, step {step}")
        if step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
        digest = hashlib.sha256()
        for p in self.trainer.model.parameters():
            digest.update(p.detach().cpu().numpy().tobytes())
        with self.path.open("a") as out:
            out.write(f"{step} {digest.hexdigest()}\n")


def digest_hooks(
    directory: Path,
    rank: int,
    trainer: Trainer,
    kill: tuple[int, int] | None = None,
    fail: tuple[int, int] | None = None,
) -> list[Callback]:
    """Digests for every rank; `kill` or `fail` (rank, step) break that rank at that step."""
    broken = kill or fail
    at = broken[1] if broken is not None and broken[0] == rank else None
    return [Digests(directory, rank, trainer, at, fail is not None)]


def digests(directory: Path, rank: int) -> list[str]:
    return (directory / f"digests-{rank}.txt").read_text().splitlines()


def weights(result: TrainResult) -> dict[str, torch.Tensor]:
    assert result.model_path is not None
    return split_prefix(load_file(str(result.model_path.with_suffix(".safetensors"))), "model.")


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def plain_mlp(**fit: Any) -> JobSpec:
    """No dropout, no batch norm: two ranks compute one process's gradients, up to rounding."""
    raw = json.loads(digits_mlp(**fit).model_dump_json())
    raw["model"]["layers"] = [
        {"type": "flatten"},
        {"type": "dense", "units": 32, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
    return JobSpec.model_validate(raw)


@pytest.fixture(scope="module")
def digits() -> TrainData:
    return load_train_data(digits_mlp())


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory, digits: TrainData) -> TrainResult:
    """A 2-rank run of the batch-norm and dropout classifier, for resumed runs to match."""
    out = tmp_path_factory.mktemp("unbroken")
    return train_distributed(digits_mlp(epochs=3), digits, out, processes=2)


def test_two_ranks_hold_the_same_weights_and_score_as_one_process(
    tmp_path: Path, digits: TrainData
) -> None:
    spec = plain_mlp(epochs=4, batch_size=65)  # shards of 33 and 32: weighted by their share
    one = train(spec, digits, tmp_path / "one")
    recorder = Recorder()
    two = train_distributed(
        spec, digits, tmp_path / "two", [recorder], processes=2,
        rank_callbacks=partial(digest_hooks, tmp_path),
    )  # fmt: skip
    assert two.status == "completed" and two.epochs_done == 4
    first, second = digests(tmp_path, 0), digests(tmp_path, 1)
    assert len(first) == 4 * STEPS and first == second
    assert abs(two.history[-1]["val_accuracy"] - one.history[-1]["val_accuracy"]) <= 0.01
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys()  # the plain module's names: predict and export are unchanged
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    # the leader forwarded every event once, in order; it alone wrote, what one process writes
    assert recorder.start is not None and recorder.start.steps_per_epoch == STEPS
    assert recorder.steps == list(range(1, 4 * STEPS + 1))
    assert recorder.epochs == recorder.checkpoints == [1, 2, 3, 4] and recorder.ends == [
        "completed"
    ]
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert recorder.losses and all(loss > 0 for loss in recorder.losses)


def test_a_cancelled_run_resumes_to_the_unbroken_runs_weights(
    tmp_path: Path, digits: TrainData, unbroken: TrainResult
) -> None:
    spec, out = digits_mlp(epochs=3), tmp_path / "job"
    hooks = partial(digest_hooks, tmp_path)
    stopped = train_distributed(
        spec, digits, out, [Recorder(stop_at_step=STEPS + 5)], processes=2, rank_callbacks=hooks
    )
    assert stopped.status == "cancelled" and stopped.epochs_done < 3
    first, second = digests(tmp_path, 0), digests(tmp_path, 1)
    assert first == second and len(first) > STEPS  # both ranks stopped after the same step
    resumed = train_distributed(spec, digits, out, processes=2, resume=True)
    assert resumed.status == "completed" and resumed.epochs_done == 3
    a, b = weights(unbroken), weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in unbroken.history]


def test_a_killed_rank_fails_the_attempt_and_the_job_resumes(
    tmp_path: Path, digits: TrainData, unbroken: TrainResult
) -> None:
    spec, out = digits_mlp(epochs=3), tmp_path / "job"
    hooks = partial(digest_hooks, tmp_path, kill=(1, STEPS + 5))  # rank 1, in epoch 2
    recorder = Recorder()
    started = time.monotonic()
    with pytest.raises(RankFailed, match=r"rank 1 of 2 died \(SIGKILL\)"):
        train_distributed(spec, digits, out, [recorder], processes=2, rank_callbacks=hooks)
    assert time.monotonic() - started < 60  # torn down, not hung
    with pytest.raises(ProcessLookupError):  # the survivor is gone too
        os.kill(int((tmp_path / "pid-0").read_text()), 0)
    assert recorder.checkpoints == [1] and recorder.ends == []
    resumed = train_distributed(spec, digits, out, processes=2, resume=True)
    assert resumed.status == "completed"
    a, b = weights(unbroken), weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_a_ranks_own_error_is_raised_as_it_was(tmp_path: Path, digits: TrainData) -> None:
    """Not RankFailed: a TrainingFailed on one rank fails the job with its reason."""
    hooks = partial(digest_hooks, tmp_path, fail=(1, 5))
    with pytest.raises(TrainingFailed, match=r"^the loss became nan at epoch 1, step 5$"):
        train_distributed(plain_mlp(epochs=1), digits, tmp_path / "job", processes=2,
                          rank_callbacks=hooks)  # fmt: skip


def small(name: str) -> JobSpec:
    """A family's example cut to one short epoch."""
    raw = json.loads((EXAMPLES / f"{name}.json").read_text())
    raw["fit"] |= {"epochs": 1}
    if name == "gaussian_mixture_gan":  # a critic with a gradient penalty: a double backward
        raw["dataset"]["n_samples"] = 600
        raw["gan"] |= {"variant": "wgan_gp", "n_critic": 2}
        raw["gan"]["discriminator"]["layers"][-1] = {"type": "dense", "units": 1}
    if name == "reverse_seq2seq":  # clips the averaged gradients' norm
        raw["dataset"]["n_samples"] = 400
    if name == "digits_autoencoder":
        raw["fit"]["batch_size"] = 101  # uneven shards
    return JobSpec.model_validate(raw)


@pytest.mark.parametrize(
    "name", ["digits_autoencoder", "digits_vae", "gaussian_mixture_gan", "reverse_seq2seq"]
)
def test_every_backprop_family_trains_on_two_ranks(tmp_path: Path, name: str) -> None:
    spec = small(name)
    result = train_distributed(
        spec, load_train_data(spec), tmp_path / "job", processes=2,
        rank_callbacks=partial(digest_hooks, tmp_path),
    )  # fmt: skip
    assert result.status == "completed" and result.model_path is not None
    assert all(torch.isfinite(torch.tensor(v)) for v in result.history[0].values())
    first, second = digests(tmp_path, 0), digests(tmp_path, 1)
    assert first and first == second


@pytest.mark.parametrize("name", ["digits_rbm", "digits_dbn"])
def test_contrastive_divergence_is_refused(tmp_path: Path, name: str) -> None:
    spec = example(name)
    with pytest.raises(SpecError, match=r"resources\.processes") as caught:
        train_distributed(spec, load_train_data(spec), tmp_path, processes=2)
    assert caught.value.loc == ("resources", "processes")
    assert "contrastive divergence" in str(caught.value)


def test_a_batch_too_small_to_share_out_is_refused(tmp_path: Path, digits: TrainData) -> None:
    with pytest.raises(SpecError, match=r"fit\.batch_size") as caught:
        train_distributed(digits_mlp(batch_size=7), digits, tmp_path, processes=4)
    assert caught.value.loc == ("fit", "batch_size")


def test_two_nodes_meet_at_one_endpoint(tmp_path: Path, digits: TrainData) -> None:
    """Two "workers" of one job, each a node of one rank, meeting at node 0's endpoint."""
    spec, out = plain_mlp(epochs=2), tmp_path / "job"

    endpoint, recorders = f"127.0.0.1:{_free_port()}", [Recorder(), Recorder()]
    results: dict[int, TrainResult | BaseException] = {}

    def node(rank: int) -> None:
        try:
            results[rank] = train_distributed(
                spec, digits, out, [recorders[rank]], processes=1, nnodes=2, node_rank=rank,
                rendezvous_endpoint=endpoint, run_id="job-1-attempt-1", local_addr="127.0.0.1",
                rank_callbacks=partial(digest_hooks, tmp_path),
            )  # fmt: skip
        except BaseException as exc:
            results[rank] = exc

    nodes = [threading.Thread(target=node, args=(rank,)) for rank in (1, 0)]
    for thread in nodes:
        thread.start()
    for thread in nodes:
        thread.join(timeout=120)
    leader, other = results[0], results[1]
    assert isinstance(leader, TrainResult) and isinstance(other, TrainResult), results
    assert leader.model_path is not None and other.model_path is None
    assert leader.history == other.history
    assert recorders[0].epochs == [1, 2] and recorders[1].epochs == []
    first, second = digests(tmp_path, 0), digests(tmp_path, 1)
    assert len(first) == 2 * STEPS and first == second

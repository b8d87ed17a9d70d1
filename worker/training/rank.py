"""One rank of a data-parallel job: the process `elastic_launch` starts, and its Trainer.

Every rank builds the same Trainer (the same seed, so the same initial weights; the leader's are
broadcast all the same), walks the same seeded shuffle and trains on its shard of each global
batch. What must agree is agreed on: the stop (a vote every step), the epoch's metrics (sums over
every rank's samples, then the leader's dict as the schedule and early stopping see them), the
checkpoint to resume from (the leader's choice). Only the leader (logical rank 0) reports
through the callbacks, forwarded to the calling process, and writes checkpoints and the model.

Batch norm is plain BatchNorm on each rank: statistics over the rank's shard (SyncBatchNorm runs
on GPUs only, and CPU ranks are the common case here). Running statistics are the leader's:
broadcast before every evaluation, and the only ones checkpointed.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

import core  # noqa: F401 - its allocator settings, as in the worker's training process
from core.spec import JobSpec
from models.checkpoint import latest_checkpoint
from worker.training.callbacks import Callback, CallbackList, CheckpointInfo, TrainStart
from worker.training.collective import Comm, GradientAverager, lost_peer, shard_bounds
from worker.training.data import TrainData
from worker.training.engine import Trainer, TrainResult, _derived_seed

# Samples per rank and step: batch norm needs two, as the engine's lone-sample rule says.
MIN_SHARD = 2
LINGER_SECONDS = 1.0  # ten of the launcher's monitor intervals
RankCallbacks = Callable[[int, Trainer], list[Callback]]  # (logical rank, its trainer) -> callbacks
Status = Literal["completed", "early_stopped", "cancelled"]


@dataclass(frozen=True)
class RankJob:
    """What every rank of one node is given (pickled to it by the launch)."""

    spec: JobSpec
    data: TrainData
    out_dir: Path
    resume: bool | Path
    device: str  # cpu or cuda: a CUDA rank takes the GPU of its LOCAL_RANK
    mixed_precision: str | None
    processes: int  # ranks per node
    nnodes: int
    node_rank: int
    timeout_s: float
    launcher: int  # the pid of the process that called train_distributed
    rank_callbacks: RankCallbacks | None = None

    @property
    def world(self) -> int:
        return self.processes * self.nnodes


def steps_per_epoch(n: int, batch_size: int, world: int) -> int:
    """Global batches an epoch trains on: those that give every rank MIN_SHARD samples."""
    return sum(
        1 for start in range(0, n, batch_size) if min(batch_size, n - start) >= MIN_SHARD * world
    )


class RankTrainer(Trainer):
    def __init__(self, job: RankJob, comm: Comm, device: torch.device) -> None:
        super().__init__(job.spec, job.data, job.out_dir, None, str(device), job.mixed_precision)
        self.comm = comm
        self.averager = GradientAverager(self.model, comm.world)
        self.seen = 0  # this rank's samples in the epoch so far
        # Evaluation is shared out over the ranks, until the leader finishes alone.
        self.gather = True

    def _batches(self, n: int, epoch: int) -> Iterator[torch.Tensor]:
        world = self.comm.world
        for idx in super()._batches(n, epoch):
            if len(idx) < MIN_SHARD * world:
                continue  # a short trailing batch: reshuffled into the next epoch
            lo, hi = shard_bounds(len(idx), self.comm.rank, world)
            self.averager.weight = (hi - lo) / len(idx)
            self.seen += hi - lo
            yield idx[lo:hi]

    def _seed_epoch(self, epoch: int) -> None:
        # Each rank draws its own dropout masks and latents (the same ones would make a GAN's
        # ranks generate the same fakes); rank 0 draws what one process would.
        seed = _derived_seed(self.spec.fit.seed, epoch, 2) + self.comm.rank * 2**32
        torch.manual_seed(seed % (2**63 - 1))

    def _run_epoch(self, epoch: int) -> dict[str, float] | None:
        self.seen = 0
        means = super()._run_epoch(epoch)
        return None if means is None else self.comm.mean_over_ranks(means, self.seen)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        if not self.gather:
            return super().evaluate(x, y)
        self.comm.share_tensors(list(self.model.buffers()))
        lo, hi = shard_bounds(len(x), self.comm.rank, self.comm.world)
        means = super().evaluate(x[lo:hi], y[lo:hi]) if hi > lo else None
        return self.comm.mean_over_ranks(means, hi - lo)

    def _settle(self, metrics: dict[str, float]) -> dict[str, float]:
        return self.comm.share(metrics)  # the leader's timings too: every rank decides alike

    def _keep_best(self, epoch: int) -> None:
        if self.comm.is_leader:  # the others never restore it: only the leader finishes
            super()._keep_best(epoch)

    def save_checkpoint(self, epoch: int) -> None:
        if self.comm.is_leader:
            super().save_checkpoint(epoch)

    def _finish(self, status: Status) -> TrainResult:
        self.gather = False  # no collective after the last epoch: the leader tests and writes alone
        if self.comm.is_leader:
            return super()._finish(status)
        best = self.stopper.state.best_epoch if self.spec.fit.early_stopping else None
        result = TrainResult(status, len(self.history), self.history, {}, None, best)
        self.callbacks.on_train_end(result)  # the rank's own callbacks hear of it (not forwarded)
        return result


class RankCallback(Callback):
    """In every rank: votes on the stop each step and sums the logged step loss over the ranks;
    in the leader, forwards every event to the calling process through `events`. `local` are the
    rank's own callbacks (rank_callbacks); their should_stop is a vote too."""

    def __init__(
        self,
        comm: Comm,
        averager: GradientAverager,
        events: Any,
        stop: Any,
        local: list[Callback],
        start: dict[str, Any],
    ) -> None:
        self.comm, self.averager, self.events, self.stop = comm, averager, events, stop
        self.local = CallbackList(local)
        self.start = start  # TrainStart fields the leader reports for the whole job

    def _forward(self, name: str, *args: Any) -> None:
        getattr(self.local, name)(*args)
        if self.comm.is_leader:
            self.events.put(("event", name, args))

    def on_train_start(self, start: TrainStart) -> None:
        self._forward("on_train_start", replace(start, **self.start))

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        self._forward("on_step_end", epoch, step, batch)

    def on_step_loss(self, epoch: int, step: int, loss: float) -> None:
        # The global batch's mean loss, as one process reports it; every rank logs at this step.
        self._forward("on_step_loss", epoch, step, self.comm.total(loss * self.averager.weight))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._forward("on_epoch_end", epoch, metrics)

    def on_checkpoint(self, info: CheckpointInfo) -> None:
        self._forward("on_checkpoint", info)

    def on_train_end(self, result: Any) -> None:
        self._forward("on_train_end", result)

    def should_stop(self) -> bool:
        return self.comm.vote(self.stop.is_set() or self.local.should_stop())


def _die_with(parent: int) -> None:
    """A rank outliving the process that launched it would train on, and write checkpoints, beside
    the job's next attempt: it kills itself when that process ends. (PR_SET_PDEATHSIG would not
    do: a rank's parent is the forkserver, which every rank keeps alive.)"""
    try:
        watched = os.pidfd_open(parent)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except (AttributeError, OSError):  # not Linux: no pidfd to wait on
        return

    def watch() -> None:
        select.select([watched], [], [])  # readable once the process has ended
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="fitserve-launcher-watch", daemon=True).start()


def _place(job: RankJob, local_rank: int) -> torch.device:
    if job.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    # Ranks share the node's cores: torch's default (every core per rank) oversubscribes them.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // job.processes))
    return torch.device("cpu")


def _train(job: RankJob, events: Any, stop: Any) -> tuple[int, TrainResult]:
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _place(job, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    comm = Comm(job.node_rank * job.processes + local_rank, job.world, backend, job.timeout_s)
    trainer = RankTrainer(job, comm, device)
    own = [] if job.rank_callbacks is None else job.rank_callbacks(comm.rank, trainer)
    n_train = len(job.data.x_train)
    start = {
        "steps_per_epoch": steps_per_epoch(n_train, job.spec.fit.batch_size, comm.world),
        "device": job.device,
    }
    trainer.callbacks = CallbackList(
        [RankCallback(comm, trainer.averager, events, stop, own, start)]
    )
    path = comm.share(_checkpoint_to_resume(job, trainer) if comm.is_leader else None)
    if path is not None:
        trainer.resume(path)
    comm.share_tensors(list(trainer.model.parameters()) + list(trainer.model.buffers()))
    result = trainer.fit()
    comm.close()
    return comm.rank, result


def _checkpoint_to_resume(job: RankJob, trainer: Trainer) -> Path | None:
    if isinstance(job.resume, Path):
        return job.resume
    return latest_checkpoint(trainer.ckpt_dir) if job.resume else None


def rank_main(job: RankJob, channels: list[Any], stop: Any) -> tuple[int, TrainResult]:
    """The launch's entrypoint: train, and tell the calling process why if it fails. Each local
    rank writes to a queue of its own (`channels[LOCAL_RANK]`): a rank killed while writing
    leaves no lock held that another needs."""
    _die_with(job.launcher)
    local_rank = int(os.environ["LOCAL_RANK"])
    events = channels[local_rank]
    try:
        return _train(job, events, stop)
    except Exception as exc:
        rank = job.node_rank * job.processes + local_rank
        events.put(("error", time.time(), rank, _portable(exc)))
        if lost_peer(exc):
            # Another rank failed first. Exit a moment later than it, so the launcher, which
            # reports the first failed process it finds, names that one (and its signal).
            time.sleep(LINGER_SECONDS)
        raise


def _portable(exc: Exception) -> Exception:
    """`exc` if it survives pickling (a TrainingFailed, a SpecError), else its text."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - the bytes it just made
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc

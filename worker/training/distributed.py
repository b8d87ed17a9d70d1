"""Data-parallel training of one job: `train_distributed` is the engine's `train` over N ranks.

The ranks are processes started by `torch.distributed`'s elastic launch (c10d rendezvous, no
restarts: a failed rank fails the attempt, and the job resumes from its last checkpoint as after
any lost attempt). Each trains on its shard of every global batch of `fit.batch_size` samples and
the gradients are averaged, so the steps are one process's steps on the same batches; the
learning rate is the spec's, not scaled. What a rank does is in `worker.training.rank`, how the
ranks agree in `worker.training.collective`.

The callbacks stay in this (the calling) process: the leader rank forwards every event through a
queue, which this thread drains and replays in order, and the callbacks' `should_stop` (cancel,
preemption, time limit) is polled here and set in a shared flag that every rank votes on each
step, so all stop at the same step. The launch runs in a thread of its own: torch's elastic agent
installs no signal handlers there, and the worker's SIGTERM (preemption) stays the worker's.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import socket
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from core.spec import JobSpec
from models.errors import SpecError
from worker.training.callbacks import Callback, CallbackList
from worker.training.collective import lost_peer
from worker.training.data import TrainData, TrainingFailed
from worker.training.engine import TrainResult, pick_device
from worker.training.rank import MIN_SHARD, RankCallbacks, RankJob, rank_main

# Families whose training is no backprop step: their updates cannot be averaged over shards.
NOT_DATA_PARALLEL = {
    "rbm": "the rbm family trains by contrastive divergence (Gibbs sampling), not backprop",
    "dbn": "the dbn family pretrains its RBMs by contrastive divergence, not backprop",
}
POLL_SECONDS = 0.05  # how often the calling thread looks at should_stop between events


class _ExpectedNotice(logging.Filter):
    """The launch runs off the main thread on purpose, and each rank watches the process that
    launched it (rank.py), so torch's warning that orphaned ranks could follow is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running on a child thread" not in record.getMessage()


logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_ExpectedNotice())


class RankFailed(RuntimeError):
    """A rank died (a signal, the OOM killer) or lost the others: no fault of the job's. The attempt
    ends and the job resumes from its last checkpoint, as after a killed training process; it is
    no TrainingFailed on purpose, since that fails the job for good."""


def check_distributable(spec: JobSpec, ranks: int) -> None:
    """SpecError (422) if `spec` cannot train on `ranks` data-parallel ranks."""
    if ranks == 1:
        return
    if spec.family in NOT_DATA_PARALLEL:
        raise SpecError(
            f"resources.processes and resources.nodes must be 1 for this job: "
            f"{NOT_DATA_PARALLEL[spec.family]}, so its updates cannot be shared out over ranks",
            ("resources", "processes"),
        )
    if spec.fit.batch_size < MIN_SHARD * ranks:
        raise SpecError(
            f"fit.batch_size {spec.fit.batch_size} is the global batch of {ranks} ranks; it must "
            f"give each at least {MIN_SHARD} samples (>= {MIN_SHARD * ranks})",
            ("fit", "batch_size"),
        )


def train_distributed(
    spec: JobSpec,
    data: TrainData,
    out_dir: Path,
    callbacks: list[Callback] | None = None,
    *,
    processes: int,
    resume: bool | Path = False,
    device: str | None = None,
    mixed_precision: str | None = None,
    nnodes: int = 1,
    node_rank: int = 0,
    rendezvous_endpoint: str | None = None,
    run_id: str | None = None,
    local_addr: str | None = None,
    timeout_s: float = 60.0,
    rendezvous_timeout_s: float = 600.0,
    rank_callbacks: RankCallbacks | None = None,
) -> TrainResult:
    """Fit `spec` on `data` with `processes` ranks on this node (of `nnodes`), as `train` does.

    Several nodes: every node calls this with the same `rendezvous_endpoint` (host:port, served by
    node 0, which must be able to bind it) and `run_id`, and its own `node_rank`; `local_addr` is
    the address the other nodes reach this one at (default: its FQDN). The leader (node 0's first
    rank) reports through node 0's callbacks and writes to `out_dir`, which every node must see
    (the shared artifacts volume); the other nodes' callbacks only get `should_stop` polled.
    `timeout_s` bounds every collective: a rank that stops answering fails the others that long
    after. Raises RankFailed if a rank died; a rank's own error (TrainingFailed) as it was raised.
    """
    ranks = processes * nnodes
    check_distributable(spec, ranks)
    if len(data.x_train) < MIN_SHARD * ranks:
        raise TrainingFailed(
            f"{len(data.x_train)} training samples cannot give {ranks} ranks {MIN_SHARD} each"
        )
    if nnodes > 1 and (rendezvous_endpoint is None or run_id is None):
        raise ValueError("several nodes meet at a rendezvous_endpoint under a run_id: give both")
    kind = pick_device(device).type
    if kind == "cuda" and torch.cuda.device_count() < processes:
        raise TrainingFailed(
            f"{processes} CUDA ranks need a GPU each; this machine has {torch.cuda.device_count()}"
        )
    job = RankJob(
        spec, data, out_dir, resume, kind, mixed_precision, processes, nnodes, node_rank,
        timeout_s, os.getpid(), rank_callbacks,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fitserve-ranks-") as logs:
        config = LaunchConfig(
            min_nodes=nnodes,
            max_nodes=nnodes,
            nproc_per_node=processes,
            run_id=run_id or uuid.uuid4().hex,
            rdzv_backend="c10d",
            rdzv_endpoint=rendezvous_endpoint or f"127.0.0.1:{_free_port()}",
            rdzv_configs={"is_host": node_rank == 0, "timeout": rendezvous_timeout_s},
            max_restarts=0,
            start_method="forkserver",
            local_addr=local_addr,
            logs_specs=DefaultLogsSpecs(log_dir=logs),
            shutdown_timeout=5,
        )
        context = _rank_context()
        relay = _Relay(CallbackList(list(callbacks or [])), processes, context)
        launch = _Launch(config, job, relay)
        relay.run(launch)
    return _outcome(launch, relay, job)


def _rank_context() -> Any:
    """Ranks fork from a forkserver: a fresh process (so CUDA works in them, as it would not in a
    fork of a worker that used it) that imports torch, the training modules and the caller's
    main module once, where `spawn` would import them again in every rank at once."""
    multiprocessing.set_forkserver_preload(["__main__", "worker.training.rank"])
    return multiprocessing.get_context("forkserver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Relay:
    """Replays the leader's events on the callbacks, in this thread, and turns their should_stop
    into the ranks' shared stop flag; collects the errors the ranks report."""

    def __init__(self, callbacks: CallbackList, processes: int, context: Any) -> None:
        self.callbacks = callbacks
        self.channels = [context.Queue() for _ in range(processes)]
        self.stop = context.Event()
        self.errors: list[tuple[float, int, Exception]] = []  # (time, logical rank, error)
        self.failure: BaseException | None = None  # a callback's own error: raised at the end
        self.epoch = self.step = 0  # where the leader last said it was

    def run(self, launch: _Launch) -> None:
        launch.start()
        while launch.is_alive():
            self._take(self.channels[0].get, timeout=POLL_SECONDS)
            if not self.stop.is_set():
                self._call("should_stop")
        for channel in self.channels:  # the ranks have exited: what they wrote is all there
            while self._take(channel.get_nowait):
                pass

    def _take(self, get: Any, **timeout: float) -> bool:
        try:
            message = get(**timeout)
        except queue.Empty:
            return False
        if message[0] == "error":
            self.errors.append(message[1:])
            return True
        _, name, args = message
        if name == "on_step_end":
            self.epoch, self.step = args[0], args[1]
        self._call(name, *args)
        return True

    def _call(self, name: str, *args: Any) -> None:
        """A callback's hook; True from should_stop, or an error (raised once the ranks have
        stopped, at their next step), sets the stop flag."""
        if self.failure is not None:
            return
        try:
            answer = getattr(self.callbacks, name)(*args)
            if name == "should_stop" and answer:
                self.stop.set()
        except Exception as exc:
            self.failure = exc
            self.stop.set()


class _Launch(threading.Thread):
    def __init__(self, config: LaunchConfig, job: RankJob, relay: _Relay) -> None:
        super().__init__(name="fitserve-ranks", daemon=True)
        self.config, self.job, self.relay = config, job, relay
        self.results: dict[int, tuple[int, TrainResult]] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            launch = elastic_launch(self.config, rank_main)
            self.results = launch(self.job, self.relay.channels, self.relay.stop)
        except BaseException as exc:  # judged by the calling thread
            self.error = exc


def _outcome(launch: _Launch, relay: _Relay, job: RankJob) -> TrainResult:
    if relay.failure is not None:
        raise relay.failure
    if launch.error is None:
        return min(launch.results.values(), key=lambda found: found[0])[1]
    raise _cause(launch.error, relay, job)


def _cause(error: BaseException, relay: _Relay, job: RankJob) -> BaseException:
    """What made the attempt fail: a rank's own error first (the others fail after it, losing
    it), then a rank killed by a signal, then whatever else went wrong."""
    reported = sorted(relay.errors, key=lambda found: found[0])
    for _, _, exc in reported:
        if not lost_peer(exc):
            return exc
    world, at = job.world, f" at epoch {relay.epoch}, step {relay.step}" if relay.step else ""
    resumes = "the job resumes from its last checkpoint"
    if isinstance(error, ChildFailedError):
        failures = sorted(error.failures.values(), key=lambda f: f.timestamp)
        killed = [f for f in failures if f.exitcode < 0]
        first = next((f for f in killed if f.signal_name() != "SIGTERM"), None) or next(
            iter(killed), None
        )
        if first is not None:
            rank = job.node_rank * job.processes + first.local_rank
            return RankFailed(f"rank {rank} of {world} died ({first.signal_name()}){at}; {resumes}")
    if reported:
        _, rank, exc = reported[0]
        return RankFailed(f"rank {rank} of {world} lost the other ranks{at} ({exc}); {resumes}")
    if isinstance(error, ChildFailedError):
        _, failure = error.get_first_failure()
        rank = job.node_rank * job.processes + failure.local_rank
        return RankFailed(
            f"rank {rank} of {world} exited with code {failure.exitcode}{at}; {resumes}"
        )
    return RankFailed(f"the {world} ranks could not start or meet ({error}); {resumes}")

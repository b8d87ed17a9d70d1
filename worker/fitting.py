"""One attempt's training: the engine's `train` in this process, or `train_distributed` over the
job's ranks (`resources.processes` here, times `resources.nodes` workers meeting at node 0's
c10d rendezvous). The runner calls it for node 0 (which reports); `worker/nodes.py` for the
nodes that joined."""

from __future__ import annotations

import socket
from pathlib import Path

from core.settings import Settings
from core.spec import JobSpec
from worker.placement import Placement
from worker.training.callbacks import Callback
from worker.training.data import TrainData
from worker.training.engine import TrainResult, train

RENDEZVOUS_TIMEOUT_S = 300.0  # node 0 waits this long for the job's other nodes to join


def run_id(job_id: str, attempt: int) -> str:
    """The elastic run's name: the job and attempt, so a later attempt never meets an old one."""
    return f"{job_id}-a{attempt}"


def advertised_host(settings: Settings) -> str:
    """The address other workers reach this one at, for a rendezvous it hosts."""
    return settings.worker_host or socket.gethostbyname(socket.gethostname())


def rendezvous_address(settings: Settings) -> str:
    """A host:port for a multi-node job's rendezvous: a port free now on this machine."""
    with socket.socket() as s:
        s.bind(("", 0))
        return f"{advertised_host(settings)}:{s.getsockname()[1]}"


def fit(
    spec: JobSpec,
    data: TrainData,
    out_dir: Path,
    callbacks: list[Callback],
    placement: Placement,
    *,
    job_id: str,
    attempt: int,
    node_rank: int = 0,
    rendezvous: str | None = None,
    settings: Settings,
) -> TrainResult:
    r = spec.resources
    if r.processes == 1 and r.nodes == 1:
        return train(
            spec,
            data,
            out_dir,
            callbacks,
            resume=True,
            device=placement.device,
            mixed_precision=placement.mixed_precision,
        )
    from worker.training.distributed import train_distributed  # spawns ranks: only when needed

    return train_distributed(
        spec,
        data,
        out_dir,
        callbacks,
        processes=r.processes,
        resume=True,
        device=placement.device,
        mixed_precision=placement.mixed_precision,
        nnodes=r.nodes,
        node_rank=node_rank,
        rendezvous_endpoint=rendezvous,
        run_id=run_id(job_id, attempt),
        local_addr=advertised_host(settings) if r.nodes > 1 else None,
        timeout_s=settings.rank_timeout_seconds,
        rendezvous_timeout_s=RENDEZVOUS_TIMEOUT_S,
    )

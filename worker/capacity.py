"""What this worker serves and has, checked against its own devices when it starts.

`fitserve worker --queues cpu,cuda` (FITSERVE_WORKER_QUEUES) declares the device kinds it serves;
left unset, a worker serves cuda where torch sees a GPU and cpu elsewhere. A worker that declares
cuda without a GPU refuses to start: it would take jobs it must then fail.
"""

from __future__ import annotations

import os
import socket

import torch

from core.resources import KINDS, Capacity, broker_queue
from core.settings import Settings


class CapacityError(Exception):
    """The worker's declared queues do not match its devices."""


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def this_worker(settings: Settings, gpus: int | None = None) -> Capacity:
    """This worker's capacity; raises CapacityError if it declares cuda without a GPU."""
    gpus = gpu_count() if gpus is None else gpus
    declared = settings.worker_queues
    queues = tuple(declared.split(",")) if declared else ("cuda",) if gpus else ("cpu",)
    if "cuda" in queues and gpus == 0:
        raise CapacityError(
            "this worker is declared to serve cuda jobs (--queues / FITSERVE_WORKER_QUEUES), "
            "but torch sees no GPU here"
        )
    cpus = settings.max_job_processes or os.cpu_count() or 1
    ordered = tuple(kind for kind in KINDS if kind in queues)
    return Capacity(ordered, gpus if "cuda" in queues else 0, cpus, settings.max_job_memory_bytes)


def consumed_queues(settings: Settings, capacity: Capacity) -> list[str]:
    """The broker queues this worker reads: `any` and one per kind it serves."""
    return [broker_queue(settings.queue, kind) for kind in ("any", *capacity.queues)]


def device_for(kind: str, configured: str | None) -> str | None:
    """The torch device a first attempt of a `kind` job takes here (the job's queue once claimed)."""
    if kind == "cpu":
        return "cpu"
    if kind == "cuda":
        return configured if configured and configured.startswith("cuda") else "cuda"
    return configured


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"

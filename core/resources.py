"""Which worker may take which job: the job's need (its spec's `resources`), a worker's capacity,
and the deployment's declared pools.

A job waits in the queue of its device kind: `cpu`, `cuda`, or `any` (served by every worker).
The broker only wakes workers; the database decides which job a woken worker takes (the claim
in `core/repository/jobs.py`), among those its capacity fits. So a job no worker can take is
never taken by the wrong one: it waits, with a reason naming what it waits for, or is refused at
submit when the deployment declares its pools (`FITSERVE_POOLS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from core.spec import JobSpec

KINDS = ("cpu", "cuda")  # the device kinds a worker may serve; `any` is every worker's


class Pool(BaseModel):
    """A kind of worker the deployment runs (FITSERVE_POOLS, a JSON list of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["cpu", "cuda"]
    workers: int = Field(1, ge=1, description="how many such workers (a job's nodes at most)")
    gpus: int = Field(0, ge=0, description="GPUs per worker")
    cpus: int = Field(1, ge=1, description="CPU processes a job may run on one worker")
    memory_bytes: int = Field(8 * 2**30, ge=1, description="a job's training memory per worker")


class Need(NamedTuple):
    """What a job asks of each worker it runs on."""

    queue: str  # cpu, cuda or any (any: the kind its first attempt took, once it started)
    gpus: int
    processes: int
    nodes: int
    memory_bytes: int


class Capacity(NamedTuple):
    """What one worker has: the queues it serves and its limits."""

    queues: tuple[str, ...]
    gpus: int
    cpus: int
    memory_bytes: int

    @property
    def any_kind(self) -> str:
        """The kind an `any` job trains on here: a GPU worker's GPU."""
        return "cuda" if "cuda" in self.queues else "cpu"

    def processes(self, kind: str) -> int:
        """Ranks of one job this worker can run on `kind`: one GPU each, or its CPU processes."""
        kind = self.any_kind if kind == "any" else kind
        return self.gpus if kind == "cuda" else self.cpus


def need_of(spec: JobSpec, estimated_memory_bytes: int) -> Need:
    r = spec.resources
    return Need(
        r.device,
        r.gpus_needed,
        r.processes,
        r.nodes,
        max(estimated_memory_bytes, r.memory_bytes or 0),
    )


def broker_queue(prefix: str, kind: str) -> str:
    """The broker queue of a kind: `any` keeps the deployment's queue name itself."""
    return prefix if kind == "any" else f"{prefix}.{kind}"


def why_not(capacity: Capacity, need: Need) -> str | None:
    """Why this worker can never take the job, or None if it can."""
    if need.queue != "any" and need.queue not in capacity.queues:
        return f"serves {', '.join(capacity.queues)}, not {need.queue}"
    if need.processes > capacity.processes(need.queue):
        unit = "GPUs" if need.gpus or capacity.any_kind == "cuda" else "CPU processes"
        return f"has {capacity.processes(need.queue)} {unit}, the job needs {need.processes}"
    if need.memory_bytes > capacity.memory_bytes:
        return f"allows a job {capacity.memory_bytes:,} bytes, the job needs {need.memory_bytes:,}"
    return None


def describe(need: Need) -> str:
    kind = {"any": "any", "cpu": "CPU", "cuda": "CUDA"}[need.queue]
    what = f"a worker serving {kind} jobs" if need.queue != "any" else "a worker"
    if need.processes > 1:
        what += f" with {need.processes} {'GPUs' if need.gpus else 'processes'}"
    if need.nodes > 1:
        what = f"{need.nodes} workers, each {what.removeprefix('a worker').strip() or 'free'}"
    return f"{what} and {need.memory_bytes:,} bytes of training memory"


def waiting_reason(need: Need, live: list[tuple[str, Capacity]]) -> str | None:
    """What a waiting job waits for when none of the live workers (name, capacity) can ever take
    it, or too few for its nodes; None when one can (it just waits its turn)."""
    able = [name for name, capacity in live if why_not(capacity, need) is None]
    if len(able) >= need.nodes:
        return None
    head = f"waiting for {describe(need)}"
    if not live:
        return f"{head}: no worker is running"
    if able:
        return f"{head}: {len(able)} of the {len(live)} live workers can take it"
    name, capacity = live[0]
    first = why_not(capacity, need)
    more = f" (and {len(live) - 1} more that cannot either)" if len(live) > 1 else ""
    return f"{head}: no live worker can; {name} {first}{more}"


def pool_refusal(pools: list[Pool], need: Need) -> tuple[str, str] | None:
    """(the `resources` field, why) when no declared pool can ever run the job; None if one can."""
    fitting = [p for p in pools if need.queue in ("any", p.kind)]
    if not fitting:
        have = ", ".join(sorted({p.kind for p in pools}))
        return "device", f"this deployment runs no {need.queue} workers (its pools: {have})"
    checks: list[tuple[str, Callable[[Pool], bool]]] = [
        ("processes", lambda p: need.processes <= (p.gpus if p.kind == "cuda" else p.cpus)),
        ("nodes", lambda p: need.nodes <= p.workers),
        ("memory_bytes", lambda p: need.memory_bytes <= p.memory_bytes),
    ]
    for field, ok in checks:
        remaining = [p for p in fitting if ok(p)]
        if not remaining:
            return field, _refusal(field, need, fitting)
        fitting = remaining
    return None


def _refusal(field: str, need: Need, pools: list[Pool]) -> str:
    if field == "processes":
        most = max(p.gpus if p.kind == "cuda" else p.cpus for p in pools)
        unit = "GPUs" if need.queue == "cuda" else "processes"
        return f"{need.processes} processes: this deployment's workers run at most {most} {unit} per job"
    if field == "nodes":
        most = max(p.workers for p in pools)
        return f"{need.nodes} nodes: this deployment has at most {most} such workers"
    most = max(p.memory_bytes for p in pools)
    return (
        f"the job needs {need.memory_bytes:,} bytes of training memory; this deployment's "
        f"workers allow at most {most:,}"
    )

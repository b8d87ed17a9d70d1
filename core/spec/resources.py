"""What a job needs to run (`resources`) and how urgent it is (`priority`).

The device kind names the queue the job waits in (`any` waits in the queue every worker serves);
GPUs, processes and nodes are matched against what a worker has when it claims the next job.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from core.spec.base import StrictModel

DeviceKind = Literal["cpu", "cuda", "any"]
MAX_PROCESSES = 64
MAX_NODES = 16


class Resources(StrictModel):
    device: DeviceKind = Field(
        "any",
        description="cpu or cuda: only workers serving that queue take the job; any: the first "
        "free worker, and every later attempt stays on the kind the first one began on",
    )
    gpus: int | None = Field(
        None,
        ge=0,
        le=MAX_PROCESSES,
        description="GPUs per node, one per process: cuda only (defaults to `processes` there)",
    )
    processes: int = Field(
        1,
        ge=1,
        le=MAX_PROCESSES,
        description="data-parallel processes per node (DDP); the global batch is fit.batch_size",
    )
    nodes: int = Field(
        1, ge=1, le=MAX_NODES, description="workers that each run `processes` ranks of the job"
    )
    memory_bytes: int | None = Field(
        None,
        ge=1,
        le=2**50,
        description="training memory to reserve on the worker, when more than the dry run's estimate",
    )

    @model_validator(mode="after")
    def _gpus_match_device(self) -> Self:
        if self.gpus is None:
            return self
        if self.device != "cuda" and self.gpus > 0:
            raise ValueError(f"gpus needs device 'cuda'; this job's device is {self.device!r}")
        if self.device == "cuda" and self.gpus != self.processes:
            raise ValueError(
                f"each process trains on a GPU of its own: gpus ({self.gpus}) must equal "
                f"processes ({self.processes})"
            )
        return self

    @property
    def gpus_needed(self) -> int:
        """GPUs per node: one per process on cuda, none elsewhere."""
        return self.processes if self.device == "cuda" else 0

    @property
    def ranks(self) -> int:
        return self.processes * self.nodes


# Families whose training is no backprop step: their updates cannot be averaged over shards.
NOT_DATA_PARALLEL = {
    "rbm": "the rbm family trains by contrastive divergence (Gibbs sampling), not backprop",
    "dbn": "the dbn family pretrains its RBMs by contrastive divergence, not backprop",
}
MIN_SHARD = 2  # samples per rank and step: batch norm needs two


def data_parallel_refusal(
    family: str, batch_size: int, ranks: int
) -> tuple[tuple[str, ...], str] | None:
    """(the field's path, why) when a job cannot train on `ranks` data-parallel ranks."""
    if ranks == 1:
        return None
    if family in NOT_DATA_PARALLEL:
        return ("resources", "processes"), (
            f"resources.processes and resources.nodes must be 1 for this job: "
            f"{NOT_DATA_PARALLEL[family]}, so its updates cannot be shared out over ranks"
        )
    if batch_size < MIN_SHARD * ranks:
        return ("fit", "batch_size"), (
            f"fit.batch_size {batch_size} is the global batch of {ranks} ranks; it must give "
            f"each at least {MIN_SHARD} samples (>= {MIN_SHARD * ranks})"
        )
    return None

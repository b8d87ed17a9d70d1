"""What the ranks of a data-parallel job say to each other: gradient averaging, shards, votes.

Gradients are averaged by `GradientAverager`, DDP's reduction without DDP's module wrapper.
`DistributedDataParallel` synchronises only the backward passes of outputs that went through its
own `forward`; the families call other methods (`Network.logits`, a GAN's `generate` and `score`,
an autoencoder's encoder and decoder), and a GAN alternates two networks, switches the
discriminator's `requires_grad` off for the generator's step and differentiates twice for its
gradient penalty, none of which a DDP wrapper allows. Hooks on the parameters work under every
family's step as it is: when a backward pass accumulates a parameter's gradient the hook notes
it, and at the end of that pass one all-reduce (per dtype) averages the gradients it touched,
before the family clips them and steps, as DDP's would be.

A step's global batch (`fit.batch_size` samples) is split into contiguous shards, one per rank;
when it does not divide evenly the first ranks take one sample more. Each rank's gradient (of
its shard's mean loss) is weighted by its share of the batch, shard / batch, rather than 1/N, so
the sum is the gradient of the global batch's mean loss, exactly what one process computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from worker.training.data import TrainingFailed

T = TypeVar("T")


def shard_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of `rank`'s contiguous shard of `size` items; the first size % world ranks take one more."""
    base, extra = divmod(size, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def lost_peer(exc: Exception) -> bool:
    """An error a rank meets because another failed: a collective that broke or timed out."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        mark in text
        for mark in ("gloo", "NCCL", "Connection closed", "Connection reset", "imed out")
    )


class Comm:
    """This rank's place in the job and the host-side collectives (votes, metrics, objects).

    `rank` is the logical rank, node_rank x processes + local rank: shards, noise seeds and the
    leader (logical rank 0, which reports and writes) follow it. The rendezvous numbers the
    process group in an order of its own (it sorts the nodes by address), so `leader` is the
    process-group rank of logical rank 0. On CUDA the host-side collectives go through a gloo
    group of their own: a vote per step then costs no device sync."""

    def __init__(self, rank: int, world: int, backend: str, timeout_s: float) -> None:
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group(backend, timeout=timeout)
        if dist.get_world_size() != world:
            raise TrainingFailed(
                f"the rendezvous formed {dist.get_world_size()} ranks, not the {world} asked for"
            )
        self.rank, self.world = rank, world
        self.control = (
            None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
        )
        ranks = self.gather(rank)
        if sorted(ranks) != list(range(world)):
            raise TrainingFailed(
                f"the nodes' ranks overlap ({sorted(ranks)}): each node needs its own node_rank"
            )
        self.leader = ranks.index(0)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def gather(self, value: T) -> list[T]:
        found: list[Any] = [None] * self.world
        dist.all_gather_object(found, value, group=self.control)
        return found

    def share(self, value: T) -> T:
        """The leader's `value`, on every rank."""
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=self.leader, group=self.control)
        found: T = box[0]
        return found

    def vote(self, flag: bool) -> bool:
        """True on every rank if it is True on any."""
        ballot = torch.tensor([float(flag)])
        dist.all_reduce(ballot, op=dist.ReduceOp.MAX, group=self.control)
        return bool(ballot.item())

    def total(self, value: float) -> float:
        summed = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(summed, group=self.control)
        return float(summed.item())

    def mean_over_ranks(self, means: dict[str, float] | None, count: int) -> dict[str, float]:
        """Per-sample means over every rank's samples, from each rank's means over its `count`
        (None where it had none). The same sums in the same order on every rank: equal results."""
        found = [(m, n) for m, n in self.gather((means, count)) if m is not None and n > 0]
        total = sum(n for _, n in found)
        return {key: sum(m[key] * n for m, n in found) / total for key in found[0][0]}

    def share_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite `tensors` (a module's parameters or buffers) with the leader's, in place."""
        for tensor in tensors:
            dist.broadcast(tensor.data, src=self.leader)

    def close(self) -> None:
        dist.destroy_process_group()


class GradientAverager:
    """Averages the gradients of `module` over the ranks at the end of every backward pass.

    `weight` is this rank's share of the current step's global batch (set before each step);
    the all-reduce sums weight x gradient. Gradients are gathered in the parameters' order
    (not the order the hooks fired), so every rank packs the same layout."""

    def __init__(self, module: nn.Module, world: int) -> None:
        self.world = world
        self.weight = 1.0 / world
        params = [p for p in module.parameters() if p.requires_grad]
        self.order = {id(p): i for i, p in enumerate(params)}
        self.ready: list[nn.Parameter] = []
        if world > 1:
            for p in params:
                p.register_post_accumulate_grad_hook(self._ready)

    def _ready(self, param: torch.Tensor) -> None:
        if not self.ready:  # the first gradient of this backward pass: reduce when it ends
            engine = torch.autograd.Variable._execution_engine
            engine.queue_callback(self._reduce)
        self.ready.append(param)  # type: ignore[arg-type]

    def _reduce(self) -> None:
        ready, self.ready = sorted(self.ready, key=lambda p: self.order[id(p)]), []
        groups: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in ready:
            if p.grad is None or p.grad.is_sparse:
                raise TrainingFailed("data-parallel training needs dense gradients")
            groups.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in groups.values():
            flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self.weight)
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

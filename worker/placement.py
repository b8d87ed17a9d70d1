"""Where a job trains, and at what precision: the first attempt's choice binds every later one.

A checkpoint written under fp32 on a CPU and resumed under bf16 autocast on a GPU would change the
arithmetic mid-run (and an fp16 attempt's GradScaler state would be dropped), so a resumed job
keeps the device kind and precision its first attempt started with. A GPU worker trains a job that
began on a CPU on its CPU; a worker that cannot give a job what it began with refuses the resume,
and the job fails with a reason that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# the fit.mixed_precision that reproduces a precision on a resumed attempt
MODES = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class Placement:
    device: str | None  # None: this worker's own choice (a first attempt)
    mixed_precision: str | None  # None: the spec's own


class WorkerRefused(Exception):
    """This worker cannot train the job (as its first attempt did, or within its memory); the message is
    the job's reason."""


def place(
    device: str | None, precision: str | None, worker_device: str | None, cuda: bool, bf16: bool
) -> Placement:
    """The placement for an attempt of a job that began on `device` at `precision` (both None
    before its first start), on a worker configured with `worker_device` that has CUDA or not and
    bf16 support or not."""
    if device is None:  # a first attempt: the worker's own device, the spec's own precision
        return Placement(worker_device, None)
    kind = device.split(":")[0]
    began = f"this job began on {kind} at {precision or 'fp32'} and keeps both across attempts"
    if kind == "cuda":
        ours = torch.device(worker_device) if worker_device else None
        if not cuda or (ours is not None and ours.type != "cuda"):
            raise WorkerRefused(
                f"{began}; the worker that took this attempt has no GPU to resume it on"
            )
        if precision == "bf16" and not bf16:
            raise WorkerRefused(
                f"{began}; the GPU of the worker that took this attempt has no bf16"
            )
        target = worker_device if ours is not None else "cuda"
    elif kind == "cpu":
        target = "cpu"
    else:
        raise WorkerRefused(f"{began}; this worker trains on cpu or cuda only")
    return Placement(target, MODES.get(precision or "fp32", "off"))


def place_here(device: str | None, precision: str | None, worker_device: str | None) -> Placement:
    """`place` for this process's own hardware."""
    cuda = torch.cuda.is_available()
    return place(device, precision, worker_device, cuda, cuda and torch.cuda.is_bf16_supported())

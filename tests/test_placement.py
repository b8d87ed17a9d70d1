"""A resumed job keeps the device kind and precision its first attempt started with (issue 11,
item 13: a CPU attempt resumed on a GPU worker switched to bf16 autocast mid-run)."""

from __future__ import annotations

import pytest

from worker.placement import Placement, WorkerRefused, place

# (began on, at precision, worker's setting, worker has CUDA, its GPU has bf16) -> placement
KEPT = [
    (
        None,
        None,
        None,
        True,
        True,
        Placement(None, None),
    ),  # a first attempt: the worker's own choice
    (None, None, "cpu", True, True, Placement("cpu", None)),
    (
        "cpu",
        "fp32",
        None,
        True,
        True,
        Placement("cpu", "off"),
    ),  # the case: stays on the CPU, fp32
    ("cpu", "fp32", "cuda", True, True, Placement("cpu", "off")),
    (
        "cpu",
        None,
        None,
        False,
        False,
        Placement("cpu", "off"),
    ),  # a row from before the precision column
    ("cuda", "bf16", None, True, True, Placement("cuda", "bf16")),
    ("cuda:0", "bf16", "cuda:1", True, True, Placement("cuda:1", "bf16")),
    ("cuda", "fp16", None, True, False, Placement("cuda", "fp16")),
    (
        "cuda",
        "fp32",
        None,
        True,
        True,
        Placement("cuda", "off"),
    ),  # began with mixed_precision off: kept off
]


@pytest.mark.parametrize(("device", "precision", "worker", "cuda", "bf16", "expected"), KEPT)
def test_a_resumed_attempt_keeps_what_the_first_began_with(
    device: str | None,
    precision: str | None,
    worker: str | None,
    cuda: bool,
    bf16: bool,
    expected: Placement,
) -> None:
    assert place(device, precision, worker, cuda, bf16) == expected


@pytest.mark.parametrize(
    ("device", "precision", "worker", "cuda", "bf16", "why"),
    [
        ("cuda", "bf16", None, False, False, "has no GPU to resume it on"),
        (
            "cuda",
            "fp32",
            "cpu",
            True,
            True,
            "has no GPU to resume it on",
        ),  # a GPU machine whose worker is set to cpu
        ("cuda", "bf16", None, True, False, "has no bf16"),
        ("mps", "fp32", None, False, False, "trains on cpu or cuda only"),
    ],
)
def test_a_worker_that_cannot_keep_them_refuses_the_resume(
    device: str, precision: str, worker: str | None, cuda: bool, bf16: bool, why: str
) -> None:
    with pytest.raises(WorkerRefused, match=why) as refused:
        place(device, precision, worker, cuda, bf16)
    assert f"this job began on {device.split(':')[0]} at {precision}" in str(refused.value)

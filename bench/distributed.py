"""Data-parallel training: samples/s of one job at 1, 2, ... ranks, and the scaling efficiency.

Each case trains one job through `train_distributed` (the same path at every rank count, 1
included) and takes the median of the engine's own per-epoch `samples_per_second` over the epochs
after the first (the first pays for warm-up), so the figure is training throughput, without the
launch; the launch and teardown are printed apart (`wall - epochs`). Efficiency is
samples/s at N / (N x samples/s at 1). The in-process engine (`train`, no ranks, all the cores
for one process) is printed beside it as the baseline a user actually compares against.

Cases: a digits MLP (64-256-256-10) and a small digits CNN (two 3x3 conv layers with 32 and 64
filters, a max pool, dense 10), global batch `--batch-size` (default 128), on digits' training
split repeated 8x so an epoch lasts long enough to time. CPU ranks run at 1, 2, 4, 8 up to the
cores there are (gloo); on a CUDA machine GPU ranks at 1, 2, 4, 8 up to the GPUs there are (nccl;
one GPU per rank).

On this 2-core machine expect poor efficiency, and read it honestly: 2 ranks share the 2 cores
that 1 rank already used (each rank gets 1 torch thread where the single process had 2), so the
arithmetic per second cannot grow; each step adds an all-reduce of the gradients and a stop vote
over gloo's TCP loopback (about 0.5-1.5 ms each here, see the step figures), which is a large share
of a digits step of a few ms; and the leader's event forwarding and the calling process's relay
thread compete for the same cores. Data parallelism pays where each rank has cores (or a GPU)
of its own and a step's compute dwarfs the all-reduce.

    PYTHONPATH=. .venv/bin/python bench/distributed.py [--epochs N] [--batch-size B] [--only mlp|cnn]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from core.spec import JobSpec
from worker.datasource import load_train_data
from worker.training.data import TrainData
from worker.training.distributed import train_distributed
from worker.training.engine import TrainResult, train

REPEAT = 8  # digits' 1438 training samples, 8 times over
CASES: dict[str, list[dict[str, Any]]] = {
    "mlp": [
        {"type": "flatten"},
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
    "cnn": [
        {
            "type": "conv2d",
            "filters": 32,
            "kernel_size": 3,
            "padding": "same",
            "activation": "relu",
        },
        {
            "type": "conv2d",
            "filters": 64,
            "kernel_size": 3,
            "padding": "same",
            "activation": "relu",
        },
        {"type": "maxpool2d"},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
}


def spec_for(layers: list[dict[str, Any]], epochs: int, batch_size: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "bench-distributed",
            "dataset": {"name": "digits"},
            "model": {"layers": layers},
            "compile": {
                "optimizer": {"type": "adam", "learning_rate": 0.001},
                "loss": "sparse_categorical_crossentropy",
                "metrics": ["accuracy"],
            },
            "fit": {"epochs": epochs, "batch_size": batch_size, "validation_split": 0.1, "seed": 0},
        }
    )


def repeated(data: TrainData) -> TrainData:
    data.x_train = data.x_train.repeat(REPEAT, *[1] * (data.x_train.dim() - 1))
    data.y_train = data.y_train.repeat(REPEAT, *[1] * (data.y_train.dim() - 1))
    return data


def throughput(result: TrainResult) -> float:
    """Median samples/s over the epochs after the first."""
    return statistics.median(h["samples_per_second"] for h in result.history[1:])


def epochs_seconds(result: TrainResult) -> float:
    return sum(h["epoch_seconds"] for h in result.history)


def run_case(name: str, epochs: int, batch_size: int, device: str, counts: list[int]) -> None:
    spec = spec_for(CASES[name], epochs, batch_size)
    data = repeated(load_train_data(spec))
    steps = len(data.x_train) // batch_size
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        alone = train(spec, data, Path(tmp) / "engine", device=device)
        wall = time.perf_counter() - started
        print(
            f"{name} {device} engine in-process: {throughput(alone):9.0f} samples/s "
            f"({wall:.1f} s wall, val_accuracy {alone.history[-1]['val_accuracy']:.3f})"
        )
        base = None
        for n in counts:
            started = time.perf_counter()
            result = train_distributed(
                spec, data, Path(tmp) / f"ranks-{n}", processes=n, device=device
            )
            wall = time.perf_counter() - started
            rate = throughput(result)
            base = base or rate
            step_ms = 1000 * batch_size / rate
            print(
                f"{name} {device} {n} rank{'s' if n > 1 else ' '}: {rate:9.0f} samples/s, "
                f"efficiency {rate / (n * base):4.2f}, {step_ms:5.1f} ms/step of {steps}, "
                f"launch+teardown {wall - epochs_seconds(result):4.1f} s, "
                f"val_accuracy {result.history[-1]['val_accuracy']:.3f}"
            )


def powers_of_two(limit: int) -> list[int]:
    return [n for n in (1, 2, 4, 8) if n <= max(1, limit)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--only", choices=sorted(CASES))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores, {torch.cuda.device_count()} GPUs")
    for name in [args.only] if args.only else list(CASES):
        run_case(name, args.epochs, args.batch_size, "cpu", powers_of_two(cores))
        if torch.cuda.is_available():
            gpus = powers_of_two(torch.cuda.device_count())
            run_case(name, args.epochs, args.batch_size, "cuda", gpus)


if __name__ == "__main__":  # ranks start from a forkserver that imports this module as well
    main()

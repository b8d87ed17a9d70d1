"""Engine vs plain PyTorch loop: training samples/s on synthetic MNIST-shaped data (an LSTM: random
(50, 32) sequences), in one process.

Both sides train the same module (build_network) on the same in-memory tensors. The engine runs with a
realistic callback and writes its checkpoints to a temp dir as in production; its time is the whole
`Trainer.fit()` of one epoch. Rounds alternate the sides (order flipped each round) because identical
runs here differ by 15-50%; the median engine/plain ratio is the figure.

A `dcgan` case times the GAN family: per batch of 64 1x28x28 images one discriminator and one
generator update, through the engine's GAN task against a hand-written loop of the same updates.

    PYTHONPATH=. .venv/bin/python bench/train_throughput.py [--rounds N] [--quick] [--only mlp|vgg|lstm|dcgan]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from core.spec import DataInfo, GANJob, JobSpec
from models.families.gan import build as build_gan
from models.network import build_network
from worker.training.callbacks import Callback
from worker.training.engine import TrainData, Trainer

SEED = 42
INFO = DataInfo(input_shape=(1, 28, 28), task="classification", num_classes=10, kind="image")
MLP_LAYERS = [
    {"type": "flatten"},
    {"type": "dense", "units": 512, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]
SEQUENCE_INFO = DataInfo(
    input_shape=(50, 32), task="classification", num_classes=10, kind="tabular"
)
LSTM_LAYERS = [
    {"type": "lstm", "units": 128},
    {"type": "dense", "units": 10, "activation": "softmax"},
]
# The DCGAN of Radford et al. scaled to 28x28 (as in the Keras/TensorFlow DCGAN tutorial): 7x7 -> 14 -> 28.
DCGAN = {
    "variant": "dcgan",
    "latent_dim": 100,
    "generator": {
        "layers": [
            {"type": "dense", "units": 128 * 7 * 7, "activation": "relu"},
            {"type": "reshape", "target_shape": [128, 7, 7]},
            {
                "type": "conv2d_transpose",
                "filters": 64,
                "kernel_size": 4,
                "strides": 2,
                "padding": "same",
            },
            {"type": "batchnorm"},
            {"type": "activation", "activation": "relu"},
            {
                "type": "conv2d_transpose",
                "filters": 1,
                "kernel_size": 4,
                "strides": 2,
                "padding": "same",
                "activation": "sigmoid",
            },
        ]
    },
    "discriminator": {
        "layers": [
            {"type": "conv2d", "filters": 64, "kernel_size": 4, "strides": 2, "padding": "same"},
            {"type": "activation", "activation": "leaky_relu", "alpha": 0.2},
            {"type": "conv2d", "filters": 128, "kernel_size": 4, "strides": 2, "padding": "same"},
            {"type": "activation", "activation": "leaky_relu", "alpha": 0.2},
            {"type": "flatten"},
            {"type": "dense", "units": 1},
        ]
    },
}


class Case(NamedTuple):
    name: str
    model: dict[str, Any]
    samples: int
    batch_size: int
    rounds: int
    info: DataInfo = INFO
    dataset: str = (
        "mnist"  # names the data in the spec only: both sides train on make_data's tensors
    )


@dataclass
class Recorder(Callback):
    """What the worker's metric sink does per step: count, record losses, poll a cancel flag."""

    cancel: threading.Event = field(default_factory=threading.Event)
    steps: int = 0
    last_batch: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        self.steps, self.last_batch = step, batch

    def on_step_loss(self, epoch: int, step: int, loss: float) -> None:
        self.losses.append((step, loss))

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(dict(metrics))

    def should_stop(self) -> bool:
        return self.cancel.is_set()


def make_spec(case: Case) -> JobSpec:
    if case.name == "dcgan":  # a family of its own: the gan section replaces model and compile
        return JobSpec.model_validate(
            {
                "name": "bench-dcgan",
                "family": "gan",
                "dataset": {"name": case.dataset},
                "gan": DCGAN,
                "fit": {
                    "epochs": 1,
                    "batch_size": case.batch_size,
                    "seed": SEED,
                    "mixed_precision": "off",
                },
            }
        )
    return JobSpec.model_validate(
        {
            "name": f"bench-{case.name}",
            "dataset": {"name": case.dataset},
            "model": case.model,
            "compile": {
                "optimizer": "adam",
                "loss": "sparse_categorical_crossentropy",
                "metrics": ["accuracy"],
            },
            # fp32 on both sides: the plain loop has no autocast (on the CPU "auto" is off anyway).
            "fit": {
                "epochs": 1,
                "batch_size": case.batch_size,
                "seed": SEED,
                "mixed_precision": "off",
            },
        }
    )


def make_data(n: int, info: DataInfo) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(SEED)
    x = rng.random((n, *info.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_engine(
    spec: JobSpec, info: DataInfo, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    """(samples/s of the whole fit() incl. checkpoints, samples/s of the epoch loop alone)."""
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="fitserve-bench-") as tmp:
        trainer = Trainer(spec, TrainData(info, x, y), Path(tmp), [recorder], device=str(device))
        sync(device)
        started = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - started
        assert result.status == "completed" and list(Path(tmp, "checkpoints").glob("epoch-0001.*"))
    assert recorder.last_batch > 0 and len(recorder.epochs) == 1
    return len(x) / seconds, result.history[-1]["samples_per_second"]


def run_plain(
    spec: JobSpec, info: DataInfo, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> float:
    if spec.family == "gan":
        return run_plain_gan(spec, info, x, device)
    torch.manual_seed(spec.fit.seed)
    model = build_network(spec, info).network.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    x, y = x.to(device), y.to(device)
    n, bs = len(x), spec.fit.batch_size
    model.train()
    sync(device)
    started = time.perf_counter()
    order = torch.randperm(n, device=device)
    for start in range(0, n, bs):
        idx = order[start : start + bs]
        loss = F.cross_entropy(model.logits(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return n / (time.perf_counter() - started)


def run_plain_gan(spec: JobSpec, info: DataInfo, x: torch.Tensor, device: torch.device) -> float:
    """The PyTorch DCGAN tutorial's step on the engine's modules: D on real and detached fake, then G
    through D on the same fake; both Adam as the spec says."""
    torch.manual_seed(spec.fit.seed)
    gan = build_gan(spec, info).to(device)
    g, d = gan.generator, gan.discriminator
    assert isinstance(spec, GANJob)
    optimizers = []
    for net, o in ((g, spec.gan.generator.optimizer), (d, spec.gan.discriminator.optimizer)):
        assert o.type == "adam"
        optimizers.append(
            torch.optim.Adam(
                net.parameters(), lr=o.learning_rate, betas=(o.beta_1, o.beta_2), eps=o.epsilon
            )
        )
    opt_g, opt_d = optimizers
    bce = F.binary_cross_entropy_with_logits
    x = x.to(device)
    n, bs = len(x), spec.fit.batch_size
    gan.train()
    sync(device)
    started = time.perf_counter()
    order = torch.randperm(n, device=device)
    for start in range(0, n, bs):
        real = x[order[start : start + bs]]
        fake = g(torch.randn(len(real), gan.latent_dim, device=device))
        real_score, fake_score = d.logits(real).flatten(), d.logits(fake.detach()).flatten()
        d_loss = bce(real_score, torch.ones_like(real_score)) + bce(
            fake_score, torch.zeros_like(fake_score)
        )
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        score = d.logits(fake).flatten()
        g_loss = bce(score, torch.ones_like(score))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if (
            device.type == "cpu"
        ):  # the engine reads each step's loss on the CPU (a NaN stops it there)
            (d_loss + g_loss).item()
    sync(device)
    return n / (time.perf_counter() - started)


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bench(case: Case, device: torch.device) -> tuple[list[float], float]:
    """Per-round engine/plain ratios, and best engine / best plain (noise only ever slows a run down)."""
    spec = make_spec(case)
    x, y = make_data(case.samples, case.info)
    warm = max(case.samples // 4, case.batch_size * 4)
    run_engine(spec, case.info, x[:warm], y[:warm], device)
    run_plain(spec, case.info, x[:warm], y[:warm], device)
    print(
        f"\n{case.name}: {case.samples} samples, batch {case.batch_size}, {case.rounds} rounds "
        f"(warm-up: {warm} samples each side)"
    )
    print(
        f"{'round':>5} {'engine/s':>9} {'(loop)/s':>9} {'plain/s':>9} {'ratio':>6} {'loop ratio':>10} "
        f"{'faults engine':>13} {'plain':>7}"
    )
    rows: list[tuple[float, float, float]] = []
    for r in range(1, case.rounds + 1):
        got: dict[str, Any] = {}
        for side in ("engine", "plain") if r % 2 else ("plain", "engine"):
            before = faults()
            run = run_engine if side == "engine" else run_plain
            got[side] = run(spec, case.info, x, y, device)
            got[f"{side}_faults"] = faults() - before
        (engine, loop), plain = got["engine"], got["plain"]
        rows.append((engine, loop, plain))
        print(
            f"{r:>5} {engine:>9.0f} {loop:>9.0f} {plain:>9.0f} {engine / plain:>6.3f} {loop / plain:>10.3f} "
            f"{got['engine_faults']:>13} {got['plain_faults']:>7}",
            flush=True,
        )
    ratios = [e / p for e, _, p in rows]
    print(
        f"  {summary(ratios)} (whole fit); {summary([lo / p for _, lo, p in rows])} (epoch loop alone)"
    )
    return ratios, max(e for e, _, _ in rows) / max(p for _, _, p in rows)


def summary(ratios: list[float]) -> str:
    return f"median {statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per model (default: mlp 15, vgg 3, lstm 5, dcgan 3)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds: a smoke run")
    parser.add_argument(
        "--only", choices=["mlp", "vgg", "lstm", "dcgan"], default=None, help="run one model only"
    )
    parser.add_argument(
        "--vgg-samples", type=int, default=10_000, help="VGG samples per round (both sides)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: as the engine picks)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--target", type=float, default=0.97, help="the engine/plain ratio to reach"
    )
    args = parser.parse_args()

    torch.manual_seed(SEED)
    if args.threads:  # one thread has no barrier for a noisy neighbour to stall: steadier rounds
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cases = [
        Case(
            "mlp", {"layers": MLP_LAYERS}, 60_000, 128, 15
        ),  # a round is ~3 s: many rounds tame the noise
        Case("vgg", {"preset": "shallow_vggnet"}, args.vgg_samples, 64, 3),
        # 50 steps of 32 features into 128 units: the recurrence, not the data, sets the pace.
        Case("lstm", {"layers": LSTM_LAYERS}, 20_000, 64, 5, SEQUENCE_INFO, "sequence_classes"),
        Case("dcgan", {}, 3_200, 64, 3),  # 50 steps of one D and one G update on 64 images each
    ]
    if args.quick:
        cases = [
            c._replace(samples=c.samples // 10 if c.name in ("mlp", "lstm") else 640, rounds=2)
            for c in cases
        ]
    if args.rounds is not None:
        cases = [c._replace(rounds=args.rounds) for c in cases]
    cases = [c for c in cases if args.only in (None, c.name)]
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, seed {SEED}, "
        f"malloc as the service runs it (core/__init__.py keeps freed memory)"
    )
    print(
        "engine/s: Trainer.fit() for 1 epoch incl. callbacks + checkpoint; (loop)/s: its epoch loop alone; "
        "faults: minor page faults in that epoch"
    )

    results = {c.name: bench(c, device) for c in cases}
    print()
    for name, (ratios, best) in results.items():
        below = "" if statistics.median(ratios) >= args.target else "  BELOW TARGET"
        print(
            f"{name}: engine/plain {summary(ratios)} target >= {args.target:.2f}{below}  [best/best {best:.2f}]"
        )


if __name__ == "__main__":
    main()

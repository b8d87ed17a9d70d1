"""The training engine: spec + in-memory tensors + callbacks -> a trained, checkpointed model.

It imports only `models` and `core.spec`, so the CLI runs it in-process exactly as the
Celery task does. Determinism: the weights are seeded by `fit.seed`; each epoch's shuffle
and dropout draw from seeds derived from (seed, epoch), so a run resumed from an epoch
checkpoint continues bit for bit as an unbroken run would on the same device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from core.spec import JobSpec
from models.checkpoint import (
    load_latest,
    prune_checkpoints,
    read_checkpoint,
    read_epoch_checkpoint,
    split_prefix,
    write_checkpoint,
)
from models.checkpoint_meta import BestMeta, CheckpointMeta, EpochMeta, ModelMeta, OptimizerState
from worker.training.callbacks import Callback, CallbackList, CheckpointInfo, TrainStart
from worker.training.data import TrainData, TrainingFailed
from worker.training.optim import MonitorState, Schedule, Stopper
from worker.training.state import load_optimizer, optimizer_tensors
from worker.training.task import Task, make_task

__all__ = ["TrainData", "TrainResult", "Trainer", "TrainingFailed", "train"]

Meta = TypeVar("Meta", bound=CheckpointMeta)


@dataclass
class TrainResult:
    status: Literal["completed", "early_stopped", "cancelled"]
    epochs_done: int
    history: list[dict[str, float]]
    test_metrics: dict[str, float]
    model_path: Path | None
    best_epoch: int | None = None


def _derived_seed(seed: int, epoch: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + stream) % (2**63 - 1)


def _with_precision(spec: JobSpec, mode: str | None) -> JobSpec:
    if mode is None or mode == spec.fit.mixed_precision:
        return spec
    return spec.model_copy(update={"fit": spec.fit.model_copy(update={"mixed_precision": mode})})


def pick_device(requested: str | None = None) -> torch.device:
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


class Trainer:
    def __init__(
        self,
        spec: JobSpec,
        data: TrainData,
        out_dir: Path,
        callbacks: list[Callback] | None = None,
        device: str | None = None,
        mixed_precision: str | None = None,
    ) -> None:
        self.spec, self.data, self.out_dir = spec, data, out_dir
        self.ckpt_dir = out_dir / "checkpoints"
        self.callbacks = CallbackList(list(callbacks or []))
        self.device = pick_device(device)
        torch.manual_seed(spec.fit.seed)
        self.task: Task = make_task(_with_precision(spec, mixed_precision), data, self.device)
        self.model = self.task.model
        self.base_lrs = [group["lr"] for o in self.task.optimizers for group in o.param_groups]
        self.schedule = Schedule(spec.fit, self.base_lrs[0])
        self.stopper = Stopper(spec.fit.early_stopping)
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_epoch = 0
        self.step = 0
        # GPU-resident data: one copy to the device, then batches are index gathers.
        self.tensors = {
            k: None if v is None else v.to(self.device)
            for k, v in vars(data).items()
            if isinstance(v, torch.Tensor) or v is None
        }

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.task.optimizers[0]

    # -- checkpoints -------------------------------------------------------------------------
    def _meta(self, kind: type[Meta], epoch: int, **own: Any) -> Meta:
        """The state every kind of checkpoint records, with `own`, the fields of `kind` alone."""
        metrics = self.history[-1] if self.history else {}
        return kind(
            epoch=epoch,
            step=self.step,
            spec=self.spec,
            info=self.data.info,
            preprocessing=self.data.preprocessing,
            class_names=self.data.class_names,
            metrics=metrics,
            history=self.history,
            schedule=self.schedule.state(),
            stopper=self.stopper.state.snapshot(),
            **own,
        )

    def save_checkpoint(self, epoch: int) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optimizers: list[OptimizerState] = []
        for i, optimizer in enumerate(
            self.task.optimizers
        ):  # "optim." for the first, as before families
            optim_tensors, state = optimizer_tensors(optimizer)
            optimizers.append(state)
            tensors |= {
                f"optim{i or ''}.{k.removeprefix('optim.')}": v for k, v in optim_tensors.items()
            }
        meta = self._meta(EpochMeta, epoch, optimizers=optimizers, task=self.task.extra_state())
        path, digest = write_checkpoint(self.ckpt_dir, f"epoch-{epoch:04d}", tensors, meta)
        pruned = prune_checkpoints(self.ckpt_dir, self.spec.fit.keep_checkpoints)
        self.callbacks.on_checkpoint(
            CheckpointInfo(epoch, path, digest, meta.metrics, tuple(pruned))
        )

    def resume(self, path: Path | None = None) -> int:
        """Load the given (or newest valid) epoch checkpoint; returns the epochs already done."""
        found = load_latest(self.ckpt_dir) if path is None else (path, *read_epoch_checkpoint(path))
        if found is None:
            return 0
        path, tensors, meta = found
        if meta.spec.model_dump(mode="json") != self.spec.model_dump(mode="json"):
            raise TrainingFailed(
                f"{path.name} was written for a different spec; refusing to resume from it"
            )
        self.model.load_state_dict(split_prefix(tensors, "model."), strict=True)
        self._load_optimizers(path, tensors, meta.optimizers)
        self.task.load_extra_state(meta.task)
        self.schedule.load(meta.schedule)
        self.stopper.state = MonitorState.restore(meta.stopper)
        self.history, self.step = list(meta.history), meta.step
        best = self.ckpt_dir / "best.json"
        if (
            self.spec.fit.early_stopping
            and self.spec.fit.early_stopping.restore_best
            and best.exists()
        ):
            self.best_state = split_prefix(read_checkpoint(best)[0], "model.")
        self.start_epoch = meta.epoch
        # Announced again: had the run that wrote it died before recording it, this records it now.
        self.callbacks.on_checkpoint(
            CheckpointInfo(self.start_epoch, path, meta.sha256, meta.metrics)
        )
        return self.start_epoch

    def _load_optimizers(
        self, path: Path, tensors: dict[str, torch.Tensor], states: list[OptimizerState]
    ) -> None:
        if len(states) != len(
            self.task.optimizers
        ):  # the spec matched, so only a damaged JSON gets here
            raise TrainingFailed(
                f"{path.name} holds {len(states)} optimizers' state, not {len(self.task.optimizers)}"
            )
        for i, (optimizer, state) in enumerate(zip(self.task.optimizers, states, strict=True)):
            own = {f"optim.{k}": v for k, v in split_prefix(tensors, f"optim{i or ''}.").items()}
            load_optimizer(optimizer, own, state)

    # -- the loop ----------------------------------------------------------------------------
    def _batches(self, n: int, epoch: int) -> Iterator[torch.Tensor]:
        bs = self.spec.fit.batch_size
        if self.spec.fit.shuffle:
            generator = torch.Generator().manual_seed(_derived_seed(self.spec.fit.seed, epoch, 1))
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            if len(idx) == 1 and n > 1:
                continue  # a lone trailing sample would break batch norm; it is reshuffled next epoch
            yield idx

    def _check_finite(self, value: float, epoch: int) -> float:
        if not math.isfinite(value):
            raise TrainingFailed(
                f"the loss became {value} at epoch {epoch}, step {self.step}; "
                "lower the learning_rate, or set compile.clip_grad_norm"
            )
        return value

    def _set_lr(self, lr: float) -> None:
        """The schedule drives the first optimizer's rate; the others (a GAN's second network)
        follow by the same factor from their own base rates."""
        groups = [group for o in self.task.optimizers for group in o.param_groups]
        for i, (group, base) in enumerate(zip(groups, self.base_lrs, strict=True)):
            group["lr"] = lr if i == 0 else base * lr / self.base_lrs[0]

    def _seed_epoch(self, epoch: int) -> None:
        """Seed the epoch's dropout, noise and latent draws (a distributed rank draws its own)."""
        torch.manual_seed(_derived_seed(self.spec.fit.seed, epoch, 2))

    def _run_epoch(self, epoch: int) -> dict[str, float] | None:
        """One pass over the training split; None if a callback asked to stop.

        On the CPU the loss is read every step (a host sync costs nothing there, and a NaN stops
        training at the step it appears); on a GPU only at step-loss records.
        """
        x, y = self.tensors["x_train"], self.tensors["y_train"]
        assert x is not None and y is not None  # noqa: S101
        log_every = self.spec.fit.log_every_steps
        on_host = self.device.type == "cpu"
        seen = 0
        self.model.train()
        self.task.start_epoch(epoch)
        self._seed_epoch(epoch)
        for batch, idx in enumerate(self._batches(len(x), epoch), start=1):
            loss = self.task.train_batch(x[idx], y[idx], epoch)
            seen += len(idx)
            self.step += 1
            if on_host or self.step % log_every == 0:
                loss_value = self._check_finite(loss.item(), epoch)
            if self.step % log_every == 0:
                self.callbacks.on_step_loss(epoch, self.step, loss_value)
            self.callbacks.on_step_end(epoch, self.step, batch)
            if self.callbacks.should_stop():
                return None
        metrics = self.task.epoch_metrics(seen)
        if not math.isfinite(metrics["loss"]):
            raise TrainingFailed(
                f"the loss became {metrics['loss']} in epoch {epoch}; lower the learning_rate"
            )
        return metrics

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return self.task.evaluate(x, y)

    def fit(self) -> TrainResult:
        fit = self.spec.fit
        n_train = len(self.data.x_train)
        steps = sum(
            1 for start in range(0, n_train, fit.batch_size) if n_train - start != 1 or n_train == 1
        )
        self.callbacks.on_train_start(
            TrainStart(
                fit.epochs,
                self.start_epoch,
                steps,
                self.task.parameters,
                str(self.device),
                self.task.precision,
                n_train,
                0 if self.data.x_val is None else len(self.data.x_val),
            )
        )
        status: Literal["completed", "early_stopped", "cancelled"] = "completed"
        for epoch in range(self.start_epoch + 1, fit.epochs + 1):
            lr = self.schedule.lr_for_epoch(epoch - 1)
            self._set_lr(lr)
            started = time.perf_counter()
            metrics = self._run_epoch(epoch)
            if metrics is None:
                status = "cancelled"
                break
            seconds = time.perf_counter() - started
            if self.tensors["x_val"] is not None and self.tensors["y_val"] is not None:
                val = self.evaluate(self.tensors["x_val"], self.tensors["y_val"])
                metrics.update({f"val_{k}": v for k, v in val.items()})
            metrics.update(self.task.epoch_end(epoch))
            metrics.update(lr=lr, epoch_seconds=seconds, samples_per_second=n_train / seconds)
            metrics = self._settle(metrics)
            self.history.append(metrics)
            self.schedule.epoch_end(metrics, epoch)
            improved, stop = self.stopper.epoch_end(metrics, epoch)
            if improved and fit.early_stopping and fit.early_stopping.restore_best:
                self._keep_best(epoch)
            self.callbacks.on_epoch_end(epoch, metrics)
            self.save_checkpoint(epoch)
            if stop:
                status = "early_stopped"
                break
        return self._finish(status)

    def _settle(self, metrics: dict[str, float]) -> dict[str, float]:
        """The epoch's metrics as the schedule, early stopping and the history take them
        (distributed ranks all take rank 0's, so every rank decides alike)."""
        return metrics

    def _keep_best(self, epoch: int) -> None:
        """Keep the weights of the best epoch so far, in memory and in `best` (restore_best)."""
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        best_tensors = {f"model.{k}": v for k, v in self.best_state.items()}
        write_checkpoint(self.ckpt_dir, "best", best_tensors, self._meta(BestMeta, epoch))

    def _finish(self, status: Literal["completed", "early_stopped", "cancelled"]) -> TrainResult:
        best_epoch = self.stopper.state.best_epoch if self.spec.fit.early_stopping else None
        if status == "cancelled":
            result = TrainResult(status, len(self.history), self.history, {}, None, best_epoch)
            self.callbacks.on_train_end(result)
            return result
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        test: dict[str, float] = {}
        if self.tensors["x_test"] is not None and self.tensors["y_test"] is not None:
            test = {
                f"test_{k}": v
                for k, v in self.evaluate(self.tensors["x_test"], self.tensors["y_test"]).items()
            }
        meta = self._meta(
            ModelMeta,
            len(self.history),
            test_metrics=test,
            best_epoch=best_epoch,
            family=self.task.describe(),
        )
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        path, _ = write_checkpoint(self.out_dir, "model", tensors, meta)
        result = TrainResult(status, len(self.history), self.history, test, path, best_epoch)
        self.callbacks.on_train_end(result)
        return result


def train(
    spec: JobSpec,
    data: TrainData,
    out_dir: Path,
    callbacks: list[Callback] | None = None,
    *,
    resume: bool | Path = False,
    device: str | None = None,
    mixed_precision: str | None = None,
) -> TrainResult:
    """Fit `spec` on `data`, checkpointing to `out_dir`; `resume=True` continues from the newest checkpoint.
    `mixed_precision` overrides the spec's (an earlier attempt's choice, kept) without changing the spec
    that checkpoints record."""
    trainer = Trainer(spec, data, out_dir, callbacks, device, mixed_precision)
    if resume:
        trainer.resume(resume if isinstance(resume, Path) else None)
    return trainer.fit()

"""The training engine: spec + in-memory tensors + callbacks -> a trained, checkpointed model.

It imports only `models` and `core.spec`, so the CLI runs it in-process exactly as the
Celery task does. Determinism: the weights are seeded by `fit.seed`; each epoch's shuffle
and dropout draw from seeds derived from (seed, epoch), so a run resumed from an epoch
checkpoint continues bit for bit as an unbroken run would on the same device.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from core.spec import DataInfo, JobSpec
from models.checkpoint import load_latest, prune_checkpoints, read_checkpoint, split_prefix, write_checkpoint
from models.network import build_network
from models.objective import Objective, check_objective
from worker.training.callbacks import Callback, CallbackList, CheckpointInfo, TrainStart
from worker.training.optim import Schedule, Stopper, kernels, make_optimizer, penalty
from worker.training.state import load_optimizer, optimizer_tensors


class TrainingFailed(RuntimeError):
    """Training cannot go on; the message is the reason a user reads."""


@dataclass
class TrainData:
    """Preprocessed tensors; `y` holds class ids (int64) or targets (float32, N x k)."""

    info: DataInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None


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


def pick_device(requested: str | None = None) -> torch.device:
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if device.type == "cuda" and mode != "off":
        if mode == "fp16" or not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    return torch.bfloat16 if mode == "bf16" else None


FOLD_EVERY = 16  # CPU steps whose metrics are computed in one pass


class Trainer:
    def __init__(self, spec: JobSpec, data: TrainData, out_dir: Path, callbacks: list[Callback] | None = None,
                 device: str | None = None) -> None:  # fmt: skip
        self.spec, self.data, self.out_dir = spec, data, out_dir
        self.ckpt_dir = out_dir / "checkpoints"
        self.callbacks = CallbackList(list(callbacks or []))
        self.device = pick_device(device)
        torch.manual_seed(spec.fit.seed)
        built = build_network(spec, data.info)
        units = check_objective(spec.compile, data.info, built)
        self.layers_built = built
        self.model = built.network.to(self.device)
        scale = (data.preprocessing.get("target") or {}).get("scale")
        target_scale = None if scale is None else torch.tensor(scale, dtype=torch.float32, device=self.device)
        self.objective = Objective(spec.compile, data.info, units, self.model.head, target_scale)
        self.optimizer = make_optimizer(spec.compile, list(self.model.parameters()))
        self.schedule = Schedule(spec.fit, spec.compile.optimizer.learning_rate)
        self.stopper = Stopper(spec.fit.early_stopping)
        self.kernels = kernels(self.model)
        self.amp = _amp_dtype(spec.fit.mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_epoch = 0
        self.step = 0
        # GPU-resident data: one copy to the device, then batches are index gathers.
        self.tensors = {k: None if v is None else v.to(self.device) for k, v in vars(data).items()
                        if isinstance(v, torch.Tensor) or v is None}  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------
    def _meta(self, epoch: int) -> dict[str, Any]:
        return {
            "kind": "epoch", "epoch": epoch, "step": self.step, "spec": self.spec.model_dump(mode="json"),
            "info": self.data.info.model_dump(mode="json"), "preprocessing": self.data.preprocessing,
            "class_names": self.data.class_names, "metrics": self.history[-1] if self.history else {},
            "history": self.history, "schedule": self.schedule.state(), "stopper": self.stopper.state.as_dict(),
        }  # fmt: skip

    def save_checkpoint(self, epoch: int) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_meta = optimizer_tensors(self.optimizer)
        meta = {**self._meta(epoch), "optimizer": optim_meta}
        if self.scaler is not None:
            meta["grad_scaler"] = self.scaler.state_dict()
        path, digest = write_checkpoint(self.ckpt_dir, f"epoch-{epoch:04d}", {**tensors, **optim_tensors}, meta)
        prune_checkpoints(self.ckpt_dir, self.spec.fit.keep_checkpoints)
        self.callbacks.on_checkpoint(CheckpointInfo(epoch, path, digest, meta["metrics"]))

    def resume(self, path: Path | None = None) -> int:
        """Load the given (or newest valid) epoch checkpoint; returns the epochs already done."""
        found = load_latest(self.ckpt_dir) if path is None else (path, *read_checkpoint(path))
        if found is None:
            return 0
        path, tensors, meta = found
        if meta["spec"] != self.spec.model_dump(mode="json"):
            raise TrainingFailed(f"{path.name} was written for a different spec; refusing to resume from it")
        self.model.load_state_dict(split_prefix(tensors, "model."), strict=True)
        load_optimizer(self.optimizer, tensors, meta["optimizer"])
        if self.scaler is not None and "grad_scaler" in meta:
            self.scaler.load_state_dict(meta["grad_scaler"])
        self.schedule.load(meta["schedule"])
        self.stopper.state.__init__(**meta["stopper"])  # type: ignore[misc]
        self.history, self.step = list(meta["history"]), int(meta["step"])
        best = self.ckpt_dir / "best.json"
        if self.spec.fit.early_stopping and self.spec.fit.early_stopping.restore_best and best.exists():
            self.best_state = split_prefix(read_checkpoint(best)[0], "model.")
        self.start_epoch = int(meta["epoch"])
        return self.start_epoch

    # -- the loop ----------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

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

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.spec.compile
        with self._autocast():
            logits = self.model.logits(xb)
            loss = self.objective.loss(logits.float(), yb)
        extra = penalty(self.kernels, c.regularization.l1, c.regularization.l2)
        if extra is not None:
            loss = loss + extra
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if c.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(self.model.parameters(), c.clip_grad_value)
        if c.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return logits, loss

    def _check_finite(self, value: float, epoch: int) -> float:
        if not math.isfinite(value):
            raise TrainingFailed(f"the loss became {value} at epoch {epoch}, step {self.step}; "
                                 "lower the learning_rate, or set compile.clip_grad_norm")  # fmt: skip
        return value

    def _fold_metrics(self, pending: list[tuple[torch.Tensor, torch.Tensor]], sums: dict[str, Any]) -> None:
        """One pass of each metric over a group of steps' stacked logits: a few small ops per group
        instead of per step, where their dispatch is a measurable share of a small model's step."""
        logits, y = (torch.cat(t) for t in zip(*pending, strict=True)) if len(pending) > 1 else pending[0]
        for key, value in self.objective.metric_sums(logits, y).items():
            sums[key] = sums.get(key, 0.0) + value.item()
        pending.clear()

    def _run_epoch(self, epoch: int) -> dict[str, float] | None:
        """One pass over the training split; None if a callback asked to stop.

        On the CPU the loss is read every step (a host sync costs nothing there, and a NaN stops
        training at the step it appears) and metrics are folded in groups of FOLD_EVERY steps; on a
        GPU the sums stay on the device and the loss is read only at step-loss records.
        """
        x, y = self.tensors["x_train"], self.tensors["y_train"]
        assert x is not None and y is not None  # noqa: S101
        log_every = self.spec.fit.log_every_steps
        on_host = self.device.type == "cpu"
        sums: dict[str, Any] = {}
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        seen = 0
        self.model.train()
        torch.manual_seed(_derived_seed(self.spec.fit.seed, epoch, 2))  # dropout
        for batch, idx in enumerate(self._batches(len(x), epoch), start=1):
            xb, yb = x[idx], y[idx]
            logits, loss = self._train_step(xb, yb)
            n = len(idx)
            seen += n
            self.step += 1
            if on_host:
                loss_value = self._check_finite(loss.item(), epoch)
                sums["loss"] = sums.get("loss", 0.0) + loss_value * n
                pending.append((logits.detach(), yb))
                if len(pending) >= FOLD_EVERY:
                    self._fold_metrics(pending, sums)
            else:
                for key, value in self.objective.batch_sums(logits, yb, loss).items():
                    sums[key] = sums[key] + value if key in sums else value
                if self.step % log_every == 0:
                    loss_value = self._check_finite(loss.item(), epoch)
            if self.step % log_every == 0:
                self.callbacks.on_step_loss(epoch, self.step, loss_value)
            self.callbacks.on_step_end(epoch, self.step, batch)
            if self.callbacks.should_stop():
                return None
        if pending:
            self._fold_metrics(pending, sums)
        metrics = {k: float(v) / seen for k, v in sums.items()}
        if not math.isfinite(metrics["loss"]):
            raise TrainingFailed(f"the loss became {metrics['loss']} in epoch {epoch}; lower the learning_rate")
        return metrics

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        size = max(self.spec.fit.batch_size, 1024)
        for start in range(0, len(x), size):
            xb, yb = x[start : start + size], y[start : start + size]
            with self._autocast():
                logits = self.model.logits(xb).float()
            for key, value in self.objective.batch_sums(logits, yb, self.objective.loss(logits, yb)).items():
                sums[key] = sums[key] + value if key in sums else value
        self.model.train()
        c = self.spec.compile.regularization
        extra = penalty(self.kernels, c.l1, c.l2)
        metrics = {k: v.item() / len(x) for k, v in sums.items()}
        metrics["loss"] += 0.0 if extra is None else extra.item()
        return metrics

    def fit(self) -> TrainResult:
        fit = self.spec.fit
        n_train = len(self.data.x_train)
        steps = sum(1 for start in range(0, n_train, fit.batch_size) if n_train - start != 1 or n_train == 1)
        self.callbacks.on_train_start(TrainStart(
            fit.epochs, self.start_epoch, steps, self.layers_built.parameters, str(self.device),
            "off" if self.amp is None else str(self.amp).removeprefix("torch."), n_train,
            0 if self.data.x_val is None else len(self.data.x_val)))  # fmt: skip
        status: Literal["completed", "early_stopped", "cancelled"] = "completed"
        for epoch in range(self.start_epoch + 1, fit.epochs + 1):
            lr = self.schedule.lr_for_epoch(epoch - 1)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            started = time.perf_counter()
            metrics = self._run_epoch(epoch)
            if metrics is None:
                status = "cancelled"
                break
            seconds = time.perf_counter() - started
            if self.tensors["x_val"] is not None and self.tensors["y_val"] is not None:
                val = self.evaluate(self.tensors["x_val"], self.tensors["y_val"])
                metrics.update({f"val_{k}": v for k, v in val.items()})
            metrics.update(lr=lr, epoch_seconds=seconds, samples_per_second=n_train / seconds)
            self.history.append(metrics)
            self.schedule.epoch_end(metrics, epoch)
            improved, stop = self.stopper.epoch_end(metrics, epoch)
            if improved and fit.early_stopping and fit.early_stopping.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                write_checkpoint(self.ckpt_dir, "best", {f"model.{k}": v for k, v in self.best_state.items()},
                                 self._meta(epoch) | {"kind": "best"})  # fmt: skip
            self.callbacks.on_epoch_end(epoch, metrics)
            self.save_checkpoint(epoch)
            if stop:
                status = "early_stopped"
                break
        return self._finish(status)

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
            test = {f"test_{k}": v for k, v in self.evaluate(self.tensors["x_test"], self.tensors["y_test"]).items()}
        meta = self._meta(len(self.history)) | {"kind": "model", "test_metrics": test, "best_epoch": best_epoch}
        path, _ = write_checkpoint(self.out_dir, "model",
                                   {f"model.{k}": v for k, v in self.model.state_dict().items()}, meta)  # fmt: skip
        result = TrainResult(status, len(self.history), self.history, test, path, best_epoch)
        self.callbacks.on_train_end(result)
        return result


def train(spec: JobSpec, data: TrainData, out_dir: Path, callbacks: list[Callback] | None = None, *,
          resume: bool | Path = False, device: str | None = None) -> TrainResult:  # fmt: skip
    """Fit `spec` on `data`, checkpointing to `out_dir`; `resume=True` continues from the newest checkpoint."""
    trainer = Trainer(spec, data, out_dir, callbacks, device)
    if resume:
        trainer.resume(resume if isinstance(resume, Path) else None)
    return trainer.fit()

"""The CLI's view of a run: a progress bar per epoch and the metrics table at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from worker.training.callbacks import Callback, TrainStart


class RichProgress(Callback):
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task: Any = None
        self.steps = 0
        self.epochs = 0

    def on_train_start(self, start: TrainStart) -> None:
        self.steps, self.epochs = start.steps_per_epoch, start.epochs
        self.console.print(
            f"training on {start.device} ({start.train_samples} samples, {start.val_samples} "
            f"validation, {start.parameters:,} parameters, precision {start.precision})"
        )
        self.progress.start()

    def on_step_end(self, epoch: int, step: int, batch: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(
                "", total=self.steps, epoch=f"{epoch}/{self.epochs}", info=""
            )
        if batch % 10 == 0 or batch == self.steps:
            self.progress.update(self.task, completed=batch)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = {
            k: v
            for k, v in metrics.items()
            if k in ("loss", "val_loss", "accuracy", "val_accuracy")
        }
        if self.task is not None:
            info = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
            self.progress.update(self.task, completed=self.steps, info=info)
        self.task = None

    def on_train_end(self, result: Any) -> None:
        self.progress.stop()


def metrics_table(history: list[dict[str, float]], test: dict[str, float]) -> Table:
    # Every metric any epoch reported, in first-seen order: a DBN's fine-tuning epochs report
    # accuracy that its pretraining epochs do not.
    columns = [k for k in dict.fromkeys(k for row in history for k in row) if k != "lr"]
    table = Table(title="metrics")
    table.add_column("epoch", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    for epoch, row in enumerate(history, start=1):
        table.add_row(str(epoch), *(f"{row[c]:.4g}" if c in row else "" for c in columns))
    if test:
        table.caption = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
    return table

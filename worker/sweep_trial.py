"""A sweep trial's pruner in the worker: each epoch's objective goes to the sweep's Optuna study,
and a trial its pruner stops ends `pruned` with the epoch and value in its reason.

The report is a database round trip at each epoch's end, the one the training loop waits on: the
pruner's answer decides whether the next epoch runs. A failed report is advice lost, never the
trial: it trains on.
"""

from __future__ import annotations

import logging
import math

from core import sweeps
from core.db import session_scope
from core.spec.sweep import SweepSpec
from core.tables import Sweep
from worker.training.callbacks import Callback

log = logging.getLogger("fitserve.worker")


class TrialPruner(Callback):
    def __init__(self, sweep_id: str, number: int, spec: SweepSpec) -> None:
        self.sweep_id, self.number, self.spec = sweep_id, number, spec
        self.pruned_at: tuple[int, float] | None = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.spec.objective.metric)
        if value is None or not math.isfinite(value):
            return
        try:
            stop = sweeps.report(self.sweep_id, self.spec, self.number, epoch, value)
        except Exception as exc:
            log.warning("sweep %s trial %s: report failed: %s", self.sweep_id, self.number, exc)
            return
        if stop:
            self.pruned_at = (epoch, value)

    def should_stop(self) -> bool:
        return self.pruned_at is not None

    @property
    def reason(self) -> str:
        assert self.pruned_at is not None  # noqa: S101 - asked only once pruned
        epoch, value = self.pruned_at
        return (
            f"pruned by the sweep's {self.spec.pruner.type} pruner after epoch {epoch}: "
            f"{self.spec.objective.metric} {value:.6g}"
        )


def pruner_for(sweep_id: str | None, number: int | None) -> TrialPruner | None:
    """The pruner of a sweep's trial; None for a job of its own."""
    if sweep_id is None or number is None:
        return None
    with session_scope() as session:
        sweep = session.get(Sweep, sweep_id)
        stored = None if sweep is None else sweep.spec
    return None if stored is None else TrialPruner(sweep_id, number, SweepSpec.stored(stored))

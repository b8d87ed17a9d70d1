"""A job's events drawn as progress: one line per epoch (steps, time, its metrics) and a line
per status change. On a terminal the epoch in progress is a bar redrawn in place, with its
steps, ETA and the latest loss; elsewhere (a pipe, a log) only finished lines are written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from fitserve_client.types import TERMINAL, Event, JobState, MetricPoint, StatusEvent

HIDDEN = frozenset({"lr", "epoch_seconds", "samples_per_second", "step_loss"})
BAR_WIDTH = 24
Key = tuple[int, int]  # (attempt, epoch): a resumed attempt trains its epochs again


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(0, round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


class ProgressPrinter:
    """Feed it every event of a stream (`printer(event)`)."""

    def __init__(
        self, out: TextIO, live: bool | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out, self.clock = out, clock
        self.live = out.isatty() if live is None else live
        self.epochs = self.steps = 0
        self.pending: dict[Key, dict[str, float]] = {}  # an epoch's metrics, its line not written
        self.ends: dict[Key, int] = {}  # the step an epoch's points carry: the epoch's last
        self.written: set[Key] = set()
        self.state: JobState | None = None
        self.loss: float | None = None  # the latest step loss
        # The attempt's first sample: (attempt, steps done in all, when). The rate is measured
        # over the whole attempt: an epoch may be shorter than the time between two samples.
        self._first: tuple[int, int, float] | None = None
        self._drawn = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobState):
            self._on_state(event)
        elif isinstance(event, MetricPoint):
            self._on_metric(event)
        elif isinstance(event, StatusEvent):
            self._on_status(event)

    def _on_state(self, job: JobState) -> None:
        self.state, self.epochs, self.steps = job, job.progress.epochs, job.progress.steps
        key = (job.attempt, job.progress.epoch)
        if self._first is None or self._first[0] != job.attempt:
            self._first = (job.attempt, self._done(job), self.clock())
        if job.progress.step > 0:  # the epochs before this one are over
            self._flush(lambda k: k < key)
        self._draw()

    def _on_metric(self, point: MetricPoint) -> None:
        key = (point.attempt, point.epoch)
        if point.name == "step_loss":
            self.loss = point.value
        elif key not in self.written:
            self.pending.setdefault(key, {})[point.name] = point.value
            self.ends[key] = point.step
        self._flush(lambda k: k < key)  # points come in sequence order: earlier epochs are whole

    def _on_status(self, event: StatusEvent) -> None:
        if event.status in TERMINAL:
            self._flush(lambda _: True)
        text = f"job {event.status}"
        if event.status == "running":
            text += f" (attempt {event.attempt})"
        self._write(text + (f": {event.reason}" if event.reason else ""))

    def _flush(self, before: Callable[[Key], bool]) -> None:
        for key in sorted(k for k in self.pending if before(k)):
            self._write(self._epoch_line(key, self.pending.pop(key)))
            self.written.add(key)

    def _epoch_line(self, key: Key, metrics: dict[str, float]) -> str:
        attempt, epoch = key
        parts = [f"epoch {epoch}/{self.epochs}" if self.epochs else f"epoch {epoch}"]
        if attempt > 1:
            parts[0] += f" (attempt {attempt})"
        # The job's own count, or (no `job` event yet: the stream sends them as progress moves)
        # the epoch's last step over its number: steps are counted from the job's start.
        end = self.ends.pop(key, 0)
        steps = self.steps or (end // epoch if end % epoch == 0 else 0)
        if steps:
            parts.append(f"{steps}/{steps} steps")
        if "epoch_seconds" in metrics:
            parts.append(f"{metrics['epoch_seconds']:.1f}s")
        parts += [f"{k} {v:.4f}" for k, v in metrics.items() if k not in HIDDEN]
        return "  ".join(parts)

    def _bar(self) -> str | None:
        job = self.state
        if job is None or job.status != "running" or not job.progress.steps:
            return None
        step, steps = job.progress.step, job.progress.steps
        filled = BAR_WIDTH * step // steps
        text = f"epoch {job.progress.epoch}/{job.progress.epochs} "
        text += f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {step}/{steps}"
        if self._first is not None and self._done(job) > self._first[1]:
            rate = (self._done(job) - self._first[1]) / max(1e-9, self.clock() - self._first[2])
            text += f"  ETA {_clock((steps - step) / rate)}"
        if self.loss is not None:
            text += f"  loss {self.loss:.4f}"
        return text

    @staticmethod
    def _done(job: JobState) -> int:
        """Steps done in all, by this attempt's count."""
        return (job.progress.epoch - 1) * job.progress.steps + job.progress.step

    def _draw(self) -> None:
        bar = self._bar() if self.live else None
        if bar is not None:
            self.out.write("\r\x1b[2K" + bar)
            self.out.flush()
            self._drawn = True

    def _write(self, line: str) -> None:
        if self._drawn:  # the bar's line is cleared, the line written, the bar drawn below it
            self.out.write("\r\x1b[2K")
            self._drawn = False
        self.out.write(line + "\n")
        self.out.flush()
        self._draw()

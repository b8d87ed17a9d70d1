"""Dynamic batching: predict requests to one loaded model that arrive while a forward pass runs
are merged into the next pass, so N concurrent callers cost one pass instead of N.

Leader/follower, no threads of its own: the caller that finds its model's batcher idle runs its
request at once (a lone request never waits); callers arriving while a pass runs queue, and when
the pass ends the first of them leads the next one, gathering queued requests' rows up to
max_batch_size (waiting at most max_delay_ms for more) and answering every caller it took. Each
queued entry is a blocked caller's thread, so the queue never outgrows the callers (the route's
thread pool bounds them) and nothing is dropped: a caller waits its turn.

Only requests carrying nothing but `instances` are merged, by operation and instance shape; a
merged pass that fails runs each request alone, so each caller gets its own answer or error. A
batcher lives as long as its Predictor (a weak key): evicted from the cache, both go.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from api.model_refs import BatchSettings
from api.observability import BATCH_SIZE
from core.settings import get_settings
from models.families import OperationRequest
from models.families.predictor import Predictor

log = logging.getLogger("fitserve.api")

# Outputs that describe the model, not a row: every caller gets a copy.
PER_MODEL_OUTPUTS = frozenset({"classes"})
# Families whose operations read `instances` as Python lists (seq2seq checks each token's type).
LIST_FAMILIES = frozenset({"seq2seq"})


class Unsplittable(Exception):
    """A merged pass's output has a field that is neither per row nor per model."""


@dataclass(eq=False)
class Pending:
    """One caller's request, waiting for (or led into) a pass."""

    operation: str
    instances: Any  # as the caller sent them
    rows: np.ndarray  # float64 (n, *shape): shapes group requests, rows count toward the limit
    wake: threading.Event = field(default_factory=threading.Event)  # answered, or to lead
    done: bool = False
    result: dict[str, Any] | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        return self.operation, tuple(self.rows.shape[1:])

    def settle(self, result: dict[str, Any] | None, error: BaseException | None) -> None:
        self.result, self.error, self.done = result, error, True
        self.wake.set()

    def outcome(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise RuntimeError("a batched request was released unanswered")
        return self.result


def default_settings() -> BatchSettings:
    s = get_settings()
    return BatchSettings(s.batch_max_size, s.batch_max_delay_ms, s.batch_exact)


def as_rows(request: OperationRequest) -> np.ndarray | None:
    """The request's instances as float rows when it may be merged, else None (it runs alone):
    other fields set, or instances a pass would refuse anyway (ragged, empty, not finite)."""
    if request.instances is None or any(
        v is not None for v in (request.count, request.seed, request.labels)
    ):
        return None
    try:
        rows = np.asarray(request.instances, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if rows.ndim < 2 or len(rows) == 0 or not np.all(np.isfinite(rows)):
        return None
    return rows


class Batcher:
    """The queue and the pass in progress of one model under one set of BatchSettings."""

    def __init__(self, settings: BatchSettings, row_block: int) -> None:
        self.settings, self.row_block = settings, row_block
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the leader waits on it for stragglers
        self._queue: deque[Pending] = deque()
        self._running = False

    def submit(self, predictor: Predictor, pending: Pending) -> dict[str, Any]:
        with self._lock:
            queued = self._running
            if queued:  # a pass runs: wait to be answered, or to lead the next pass
                self._queue.append(pending)
                self._arrived.notify()
            else:  # idle: this request runs now, with no delay
                self._running = True
        if queued:
            pending.wake.wait()
            if pending.done:  # answered by another caller's pass
                return pending.outcome()
        batch = self._gather(pending) if queued else [pending]
        try:
            self._run(predictor, batch)
        finally:
            for p in batch:  # an unexpected BaseException must not leave a caller blocked
                if not p.done:
                    p.settle(None, RuntimeError("the batched pass did not finish"))
            self._hand_over()
        return pending.outcome()

    def _plan(self, lead: Pending) -> tuple[list[Pending], bool]:
        """The queued requests the next pass takes (in order, same operation and shape as the
        lead's, rows within max_batch_size; the lead alone if it is larger) and whether it is full."""
        batch, rows, limit = [lead], len(lead.rows), self.settings.max_batch_size
        for p in self._queue:
            if p is lead or p.key != lead.key:
                continue
            if rows + len(p.rows) > limit:
                return batch, True
            batch.append(p)
            rows += len(p.rows)
        return batch, rows >= limit

    def _gather(self, lead: Pending) -> list[Pending]:
        """Called by a lead taken from the queue: requests are queued, so wait (at most
        max_delay_ms) for more to fill the pass, then take them off the queue."""
        deadline = time.monotonic() + self.settings.max_delay_ms / 1000
        with self._lock:
            batch, full = self._plan(lead)
            while not full and (left := deadline - time.monotonic()) > 0:
                self._arrived.wait(left)
                batch, full = self._plan(lead)
            taken = set(map(id, batch))
            self._queue = deque(p for p in self._queue if id(p) not in taken)
        return batch

    def _hand_over(self) -> None:
        """The pass is over: the first queued caller leads the next one, or the batcher idles."""
        with self._lock:
            if self._queue:
                self._queue[0].wake.set()  # not done: it leads
            else:
                self._running = False

    def _run(self, predictor: Predictor, batch: list[Pending]) -> None:
        if len(batch) > 1:
            try:
                outputs = split(self._pass(predictor, batch), [len(p.rows) for p in batch])
            except Exception as exc:  # one caller's input (or an odd output): each runs alone
                log.debug(
                    "a merged pass of %d requests failed (%s); each runs alone", len(batch), exc
                )
            else:
                BATCH_SIZE.observe(len(batch))
                for p, out in zip(batch, outputs, strict=True):
                    p.settle(out, None)
                return
        for p in batch:
            BATCH_SIZE.observe(1)
            try:
                p.settle(self._alone(predictor, p), None)
            except Exception as exc:
                p.settle(None, exc)

    def _alone(self, predictor: Predictor, p: Pending) -> dict[str, Any]:
        try:
            return self._pass(predictor, [p])
        except Unsplittable:  # padded, an output we cannot cut: the request as it came instead
            return predictor.run(p.operation, OperationRequest(instances=p.instances))

    def _pass(self, predictor: Predictor, batch: list[Pending]) -> dict[str, Any]:
        """One forward pass over the batch's rows; in exact mode padded with copies of a real row
        to a multiple of row_block rows (the CPU kernels pick code paths by row count, so only
        then is each row's answer independent of its neighbours), the padding's outputs dropped."""
        n = sum(len(p.rows) for p in batch)
        pad = (-n) % self.row_block if self.settings.exact else 0
        instances: Any
        if predictor.family in LIST_FAMILIES:  # run() lets only list instances in
            instances = [row for p in batch for row in p.instances]
            instances += [instances[0]] * pad
        elif len(batch) == 1 and not pad:  # the rows already converted: the same input, once
            instances = batch[0].rows
        else:  # np.asarray(rows, float64), as prepare_instances reads instances, is the same array
            parts = [p.rows for p in batch]
            instances = np.concatenate([*parts, np.repeat(parts[0][:1], pad, axis=0)])
        out = predictor.run(batch[0].operation, OperationRequest(instances=instances))
        return split(out, [n, pad])[0] if pad else out


def split(out: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    """A pass's outputs cut into consecutive pieces of `sizes` rows; per-model fields copied."""
    total = sum(sizes)
    parts: list[dict[str, Any]] = [{} for _ in sizes]
    for name, value in out.items():
        if name in PER_MODEL_OUTPUTS:
            for part in parts:
                part[name] = list(value) if isinstance(value, list) else value
            continue
        if not isinstance(value, list) or len(value) != total:
            raise Unsplittable(name)
        start = 0
        for part, size in zip(parts, sizes, strict=True):
            part[name] = value[start : start + size]
            start += size
    return parts


_batchers: weakref.WeakKeyDictionary[Predictor, dict[BatchSettings, Batcher]] = (
    weakref.WeakKeyDictionary()
)
_batchers_lock = threading.Lock()


def batcher_for(predictor: Predictor, settings: BatchSettings) -> Batcher:
    """Created on first use, collected with the Predictor (the batcher holds no reference to it)."""
    with _batchers_lock:
        by_settings = _batchers.setdefault(predictor, {})
        if settings not in by_settings:
            by_settings[settings] = Batcher(settings, get_settings().batch_row_block)
        return by_settings[settings]


def run(
    predictor: Predictor, operation: str, request: OperationRequest, settings: BatchSettings
) -> dict[str, Any]:
    """`predictor.run(operation, request)`, batched with concurrent requests when it may be."""
    rows = as_rows(request)
    if (
        settings.max_batch_size <= 1
        or rows is None
        or operation not in predictor.operations
        or (predictor.family in LIST_FAMILIES and not isinstance(request.instances, list))
    ):
        return predictor.run(operation, request)
    pending = Pending(operation, request.instances, rows)
    return batcher_for(predictor, settings).submit(predictor, pending)

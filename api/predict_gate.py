"""Which (key, job) pairs predict may serve without asking the database again.

Predict is the hot path: at thousands of requests per second a key-and-job query per request
costs more than the model call. A succeeded job is terminal and its model immutable, so the
only thing that can turn a yes into a no is the key's revocation. Every revocation changes a
watermark (how many keys are revoked, and the newest revocation time); the gate re-reads it at
most every `check_seconds` and forgets every pair when it moves, so a revoked key is refused
within `check_seconds` in every API process, however many there are, on either database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Mark = tuple[Any, ...]


class PredictGate:
    def __init__(
        self, read_mark: Callable[[], Mark], check_seconds: float, max_pairs: int = 100_000
    ) -> None:
        self._read_mark, self.check_seconds, self.max_pairs = read_mark, check_seconds, max_pairs
        self._pairs: set[tuple[str, str]] = set()
        self._mark: Mark | None = None
        self._checked = float("-inf")
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Read before the database lookup and handed to `remember`: a pair found valid before a
        revocation the gate has since seen must not be remembered."""
        return self._generation

    def fresh_generation(self) -> int:
        """The generation once the revocation watermark is re-read, if its interval has passed:
        the name cache keys its entries by it."""
        if self.check_seconds > 0:
            self._refresh()
        return self._generation

    def admits(self, key_hash: str, job_id: str) -> bool:
        if self.check_seconds <= 0:
            return False
        self._refresh()
        return (key_hash, job_id) in self._pairs

    def remember(self, key_hash: str, job_id: str, generation: int) -> None:
        with self._lock:
            if self.check_seconds > 0 and generation == self._generation and self._mark is not None:
                if len(self._pairs) >= self.max_pairs:
                    self._pairs.clear()  # a flood of distinct pairs costs lookups, never memory
                self._pairs.add((key_hash, job_id))

    def _refresh(self) -> None:
        if time.monotonic() - self._checked < self.check_seconds:
            return
        with self._lock:  # one reader per interval; the others wait for its answer
            if time.monotonic() - self._checked < self.check_seconds:
                return
            mark = self._read_mark()
            if mark != self._mark:
                self._pairs.clear()
                self._mark = mark
                self._generation += 1
            self._checked = time.monotonic()

"""What the hot path remembers is kept only while a database watermark stands: a few counts and
newest-change times, re-read at most every `check_seconds`, one reader per interval. When it moves
everything remembered is forgotten and the generation advances, so an answer read from the
database before the move is never kept after it (callers hand the generation they read first).
The predict gate (key revocations) and the name cache (the model registry) are both this."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

Mark = tuple[Any, ...]


class Watermarked(ABC):
    def __init__(self, read_mark: Callable[[], Mark], check_seconds: float) -> None:
        self._read_mark, self.check_seconds = read_mark, check_seconds
        self._mark: Mark | None = None
        self._checked = float("-inf")
        self._generation = 0
        self._lock = threading.Lock()

    @abstractmethod
    def _forget(self) -> None:
        """Drop everything remembered (called with the lock held)."""

    @property
    def generation(self) -> int:
        return self._generation

    def fresh_generation(self) -> int:
        """The generation once the watermark is re-read, if its interval has passed."""
        if self.check_seconds > 0:
            self._refresh()
        return self._generation

    def _current(self, generation: int) -> bool:
        """May an answer read at `generation` be kept? (Called with the lock held.)"""
        return self.check_seconds > 0 and generation == self._generation and self._mark is not None

    def _advance(self) -> None:
        with self._lock:
            self._forget()
            self._generation += 1

    def _refresh(self) -> None:
        if time.monotonic() - self._checked < self.check_seconds:
            return
        with self._lock:  # one reader per interval; the others wait for its answer
            if time.monotonic() - self._checked < self.check_seconds:
                return
            mark = self._read_mark()
            if mark != self._mark:
                self._forget()
                self._mark = mark
                self._generation += 1
            self._checked = time.monotonic()

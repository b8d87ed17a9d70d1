"""Resolved model names, remembered while nothing they depend on has changed.

A registered name is read from the database on first use: the key's tenant, the name, the
version or alias, its job. A name, unlike a job id, can change what it serves (an alias moves, a
version is added or deleted, a job is deleted), so an answer is kept only while the registry's
watermark stands: row counts and newest change times of the registry's tables, re-read at most
every `check_seconds` (the predict gate's interval), and moved at once by a registry write in
this process. A move is served from the next request in the API process that made it, and within
`check_seconds` in every other. A key's revocation is the predict gate's: its generation is part
of every entry, so a revoked key's names are forgotten with its job ids.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

Mark = tuple[Any, ...]


class NameCache:
    def __init__(
        self, read_mark: Callable[[], Mark], check_seconds: float, max_entries: int = 100_000
    ) -> None:
        self._read_mark, self.check_seconds, self.max_entries = (
            read_mark,
            check_seconds,
            max_entries,
        )
        self._entries: dict[Hashable, tuple[int, Any]] = {}
        self._mark: Mark | None = None
        self._checked = float("-inf")
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Read before the database lookup and handed to `put`: an answer read before a change
        the cache has since seen is not kept."""
        self._refresh()
        return self._generation

    def get(self, key: Hashable) -> Any | None:
        if self.check_seconds <= 0:
            return None
        self._refresh()
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == self._generation else None

    def put(self, key: Hashable, value: Any, generation: int) -> None:
        with self._lock:
            if self.check_seconds > 0 and generation == self._generation:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()  # a flood of names costs lookups, never memory
                self._entries[key] = (generation, value)

    def changed(self) -> None:
        """A registry write in this process, committed: forget every answer now."""
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def _refresh(self) -> None:
        if time.monotonic() - self._checked < self.check_seconds:
            return
        with self._lock:  # one reader per interval; the others wait for its answer
            if time.monotonic() - self._checked < self.check_seconds:
                return
            mark = self._read_mark()
            if mark != self._mark:
                self._entries.clear()
                self._mark = mark
                self._generation += 1
            self._checked = time.monotonic()

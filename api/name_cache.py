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

from collections.abc import Callable, Hashable
from typing import Any

from api.watermark import Mark, Watermarked


class NameCache(Watermarked):
    def __init__(
        self, read_mark: Callable[[], Mark], check_seconds: float, max_entries: int = 100_000
    ) -> None:
        super().__init__(read_mark, check_seconds)
        self.max_entries = max_entries
        self._entries: dict[Hashable, Any] = {}

    def _forget(self) -> None:
        self._entries.clear()

    def get(self, key: Hashable) -> Any | None:
        """An answer kept at this generation (the watermark re-read first, when due)."""
        if self.check_seconds <= 0:
            return None
        self._refresh()
        return self._entries.get(key)

    def put(self, key: Hashable, value: Any, generation: int) -> None:
        with self._lock:
            if self._current(generation):
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()  # a flood of names costs lookups, never memory
                self._entries[key] = value

    def changed(self) -> None:
        """A registry write in this process, committed: forget every answer now."""
        self._advance()

"""Which (key, job) pairs predict may serve without asking the database again.

Predict is the hot path: at thousands of requests per second a key-and-job query per request
costs more than the model call. A succeeded job is terminal and its model immutable, so the
only thing that can turn a yes into a no is the key's revocation. Every revocation changes a
watermark (how many keys are revoked, and the newest revocation time); the gate re-reads it at
most every `check_seconds` and forgets every pair when it moves, so a revoked key is refused
within `check_seconds` in every API process, however many there are, on either database.
"""

from __future__ import annotations

from collections.abc import Callable

from api.watermark import Mark, Watermarked


class PredictGate(Watermarked):
    def __init__(
        self, read_mark: Callable[[], Mark], check_seconds: float, max_pairs: int = 100_000
    ) -> None:
        super().__init__(read_mark, check_seconds)
        self.max_pairs = max_pairs
        self._pairs: set[tuple[str, str]] = set()

    def _forget(self) -> None:
        self._pairs.clear()

    @property
    def generation(self) -> int:
        """Read before the database lookup and handed to `remember`: a pair found valid before a
        revocation the gate has since seen must not be remembered."""
        return self._generation

    def admits(self, key_hash: str, job_id: str) -> bool:
        if self.check_seconds <= 0:
            return False
        self._refresh()
        return (key_hash, job_id) in self._pairs

    def remember(self, key_hash: str, job_id: str, generation: int) -> None:
        with self._lock:
            if self._current(generation):
                if len(self._pairs) >= self.max_pairs:
                    self._pairs.clear()  # a flood of distinct pairs costs lookups, never memory
                self._pairs.add((key_hash, job_id))

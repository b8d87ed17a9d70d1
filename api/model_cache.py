"""Loaded models, least recently used first out, bounded in count and in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from models.inference import Predictor


class ModelCache:
    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count, self.max_bytes = max_count, max_bytes
        self._items: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self._items.values())

    def get(self, key: str, path: Path) -> Predictor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per model, however many requests wait for it
            with self._lock:
                if key in self._items:
                    return self._items[key]
            predictor = Predictor.load(path)
            with self._lock:
                self._items[key] = predictor
                self._loading.pop(key, None)
                while len(self._items) > 1 and (
                    len(self._items) > self.max_count or self.nbytes > self.max_bytes
                ):
                    self._items.popitem(last=False)
            return predictor

    def __len__(self) -> int:
        return len(self._items)

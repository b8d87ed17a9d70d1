"""The predict endpoint's model cache: least recently used out, bounded in count and bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.model_cache import ModelCache
from tests.helpers import digits_mlp
from worker.datasource import load_train_data
from worker.training.engine import train


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    paths = []
    for seed in range(3):
        spec = digits_mlp(epochs=1, seed=seed)
        result = train(spec, load_train_data(spec), tmp_path_factory.mktemp(f"m{seed}"))
        assert result.model_path is not None
        paths.append(result.model_path)
    return paths


def test_cache_evicts_the_least_recently_used_by_count(models: list[Path]) -> None:
    cache = ModelCache(max_count=2, max_bytes=2**30)
    first = cache.get("a", models[0])
    assert cache.get("a", models[0]) is first  # loaded once
    cache.get("b", models[1])
    cache.get("a", models[0])  # a is now the most recent
    cache.get("c", models[2])
    assert len(cache) == 2 and set(cache._items) == {"a", "c"}


def test_cache_is_bounded_in_bytes(models: list[Path]) -> None:
    one = ModelCache(10, 2**30).get("x", models[0]).nbytes
    cache = ModelCache(max_count=10, max_bytes=int(one * 1.5))
    for key, path in zip("abc", models, strict=True):
        cache.get(key, path)
    assert len(cache) == 1 and cache.nbytes <= int(one * 1.5)

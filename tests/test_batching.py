"""Dynamic batching (api/batching.py) on real models trained one epoch: concurrent callers get the
answers they would get alone (bit for bit in exact mode), bad requests get their own errors, and
lone requests never wait."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from starlette.datastructures import State

from api import batching
from api.model_cache import ModelCache
from api.model_refs import BatchSettings, ServedModel
from api.observability import REGISTRY
from api.serving import one_torch_thread, run_operation
from core.settings import get_settings
from core.spec import JobSpec
from core.storage import job_dir
from models.errors import PredictError
from models.families import OperationRequest
from models.inference import Predictor
from tests.helpers import EXAMPLES
from worker.datasource import load_train_data
from worker.training.engine import train

CLIENTS = 32
ROUNDS = 5
# The delay is long here so that a pass reliably gathers every queued caller on a busy CI box.
EXACT = BatchSettings(max_batch_size=64, max_delay_ms=20, exact=True)
LOOSE = BatchSettings(max_batch_size=64, max_delay_ms=20, exact=False)
CHECKPOINTS: dict[str, Path] = {}  # example -> its trained model.json


def trained(root: Path, example: str, **dataset: Any) -> Predictor:
    raw = json.loads((EXAMPLES / f"{example}.json").read_text())
    raw["dataset"].update(dataset)
    raw["fit"] = {**raw["fit"], "epochs": 1}
    raw["fit"].pop("early_stopping", None)
    spec = JobSpec.model_validate(raw)
    result = train(spec, load_train_data(spec), root / example)
    assert result.model_path is not None
    CHECKPOINTS[example] = result.model_path
    return Predictor.load(result.model_path)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """As the API runs torch (api/main.py): one thread per request."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Predictor]:
    root = tmp_path_factory.mktemp("batching")
    return {
        "mlp": trained(root, "digits_mlp"),
        "cnn": trained(root, "digits_shallow_vggnet"),
        "lstm": trained(root, "sequence_lstm_classifier", n_samples=300),
        "tokens": trained(root, "tokens_transformer", n_samples=300),
        "seq2seq": trained(root, "reverse_seq2seq", n_samples=200),
        "vae": trained(root, "digits_vae"),
    }


def instances(predictor: Predictor, n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    shape = predictor.model.info.input_shape
    if predictor.family == "seq2seq":
        vocabulary = predictor.model.module.input_vocabulary
        return rng.integers(0, vocabulary, (n, *shape)).tolist()
    if predictor.model.module.tokens:
        return rng.integers(0, 32, (n, *shape)).tolist()
    return (rng.random((n, *shape)) * 16).tolist()


def passes() -> tuple[float, float]:
    """(forward passes the batcher ran, those that answered more than one request)."""
    count = REGISTRY.get_sample_value("fitserve_batch_size_count") or 0.0
    alone = REGISTRY.get_sample_value("fitserve_batch_size_bucket", {"le": "1.0"}) or 0.0
    return count, count - alone


def concurrently(call: Callable[[int], Any], n: int = CLIENTS) -> list[Any]:
    """call(i) from n threads released together; each result, or the exception it raised."""
    barrier, out = threading.Barrier(n), [None] * n

    def client(i: int) -> None:
        one_torch_thread()  # as every serving request thread runs torch (api/serving.py)
        barrier.wait()
        try:
            out[i] = call(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def requests(predictor: Predictor) -> list[OperationRequest]:
    return [
        OperationRequest(instances=instances(predictor, 1 + i % 5, seed=i)) for i in range(CLIENTS)
    ]


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm", "seq2seq"])
def test_exact_mode_answers_bit_for_bit_as_alone(models: dict[str, Predictor], name: str) -> None:
    predictor = models[name]
    asked = requests(predictor)
    alone = [batching.run(predictor, "predict", r, EXACT) for r in asked]
    _, merged_before = passes()
    for _ in range(ROUNDS):  # until a round merged (threads may not overlap on a busy box)
        batched = concurrently(lambda i: batching.run(predictor, "predict", asked[i], EXACT))
        assert batched == alone
        if passes()[1] > merged_before:
            return
    pytest.fail("no pass answered more than one caller")


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm"])
def test_loose_mode_agrees_within_rounding(models: dict[str, Predictor], name: str) -> None:
    predictor = models[name]
    asked = requests(predictor)
    alone = [predictor.run("predict", r) for r in asked]  # today's answers, unbatched
    _, merged_before = passes()
    for _ in range(ROUNDS):
        batched = concurrently(lambda i: batching.run(predictor, "predict", asked[i], LOOSE))
        for got, want in zip(batched, alone, strict=True):
            assert got["class_ids"] == want["class_ids"] and got["classes"] == want["classes"]
            assert got["predictions"] == want["predictions"]
            diff = np.abs(np.asarray(got["probabilities"]) - np.asarray(want["probabilities"]))
            assert diff.max() <= 1e-5
        if passes()[1] > merged_before:
            return
    pytest.fail("no pass answered more than one caller")


def test_a_bad_request_in_a_batch_gets_its_own_error(
    models: dict[str, Predictor], caplog: pytest.LogCaptureFixture
) -> None:
    predictor = models["tokens"]
    asked = requests(predictor)
    bad = {3, 11, 20}
    for i in bad:  # the right shape, so it is merged; a token id past the vocabulary
        rows = instances(predictor, 2, seed=100 + i)
        rows[1][0] = 40
        asked[i] = OperationRequest(instances=rows)
    caplog.set_level(logging.DEBUG, "fitserve.api")
    for _ in range(ROUNDS):  # until a merged pass held a bad request
        batched = concurrently(lambda i: batching.run(predictor, "predict", asked[i], LOOSE))
        for i, got in enumerate(batched):
            if i in bad:
                assert isinstance(got, PredictError) and "token ids must lie in" in str(got)
            else:
                assert got["class_ids"] == predictor.run("predict", asked[i])["class_ids"]
        if "each runs alone" in caplog.text:
            return
    pytest.fail("no merged pass held a bad request")


def test_requests_with_count_or_seed_are_never_merged(models: dict[str, Predictor]) -> None:
    predictor = models["vae"]
    before = passes()[0]
    asked = [OperationRequest(count=2, seed=i) for i in range(CLIENTS)]
    batched = concurrently(lambda i: batching.run(predictor, "sample", asked[i], EXACT))
    assert batched == [predictor.run("sample", r) for r in asked]
    assert passes()[0] == before and predictor not in batching._batchers


def test_a_lone_request_does_not_wait_for_the_delay(models: dict[str, Predictor]) -> None:
    predictor, slow = models["mlp"], BatchSettings(max_batch_size=64, max_delay_ms=200, exact=False)
    request = OperationRequest(instances=instances(predictor, 1, seed=0))
    batching.run(predictor, "predict", request, slow)  # warm
    took = []
    for _ in range(5):
        start = time.perf_counter()
        batching.run(predictor, "predict", request, slow)
        took.append(time.perf_counter() - start)
    assert sorted(took)[2] < 0.05


class Recording(Predictor):
    """The same loaded model, its real passes recorded: which requests each one ran."""

    def __init__(self, predictor: Predictor, slow_first: bool = False) -> None:
        super().__init__(predictor.model)
        self.seen: list[OperationRequest] = []
        self.slow_first = slow_first

    def run(self, operation: str | None, request: OperationRequest) -> dict[str, Any]:
        self.seen.append(request)
        if self.slow_first and len(self.seen) == 1:
            time.sleep(0.05)  # a slow first pass: the other callers queue behind it
        return super().run(operation, request)


def test_no_pass_is_larger_than_max_batch_size(models: dict[str, Predictor]) -> None:
    predictor = Recording(models["mlp"], slow_first=True)
    small = BatchSettings(max_batch_size=6, max_delay_ms=20, exact=False)
    asked = requests(predictor)
    asked[7] = OperationRequest(instances=instances(predictor, 9, seed=7))  # alone: over the limit
    batched = concurrently(lambda i: batching.run(predictor, "predict", asked[i], small))
    assert all(not isinstance(b, Exception) for b in batched)
    sizes = [len(r.instances) for r in predictor.seen if r.instances is not None]
    assert sizes.count(9) == 1 and all(s <= 6 for s in sizes if s != 9)
    assert len(sizes) < CLIENTS and max(s for s in sizes if s != 9) > 5  # merged


def test_max_batch_size_one_runs_as_before(models: dict[str, Predictor]) -> None:
    predictor = Recording(models["cnn"])
    real = models["cnn"].run
    off = BatchSettings(max_batch_size=1, max_delay_ms=20, exact=True)
    asked = requests(predictor)
    before = passes()[0]
    batched = concurrently(lambda i: batching.run(predictor, "predict", asked[i], off))
    assert passes()[0] == before and sorted(map(id, predictor.seen)) == sorted(map(id, asked))
    assert batched == [real("predict", r) for r in asked]


def test_the_batcher_goes_with_its_model(models: dict[str, Predictor]) -> None:
    """Evicted from the cache and unreferenced, a model takes its batcher with it."""
    predictor = Predictor(models["mlp"].model)  # another Predictor over the same networks
    batching.run(predictor, "predict", OperationRequest(instances=[[0.0] * 64]), LOOSE)
    assert predictor in batching._batchers
    count = len(batching._batchers)
    gone = weakref.ref(predictor)
    del predictor
    gc.collect()
    assert gone() is None and len(batching._batchers) == count - 1


def test_serving_batches_with_the_service_defaults_or_the_model_s_own(
    models: dict[str, Predictor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_operation, the seam every serving route calls: None is the FITSERVE_BATCH_* defaults."""
    monkeypatch.setenv("FITSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FITSERVE_BATCH_EXACT", "true")
    monkeypatch.setenv("FITSERVE_BATCH_MAX_DELAY_MS", "20")
    get_settings.cache_clear()
    try:
        job_id = "job_" + "0" * 32
        shutil.copytree(
            CHECKPOINTS["digits_mlp"].parent, job_dir(get_settings().artifacts_dir, job_id)
        )
        state = State({"models": ModelCache(max_count=2, max_bytes=2**30)})
        asked = requests(models["mlp"])
        defaults = ServedModel(job_id=job_id)
        alone = [run_operation(state, defaults, None, r) for r in asked]
        assert alone[0][0] == "predict"
        predictor = state.models.get(job_id, Path("unused"))
        assert set(batching._batchers[predictor]) == {batching.default_settings()}
        assert batching.default_settings() == BatchSettings(64, 20.0, exact=True)
        _, merged_before = passes()
        for _ in range(ROUNDS):
            batched = concurrently(lambda i: run_operation(state, defaults, None, asked[i]))
            assert batched == alone  # exact, from FITSERVE_BATCH_EXACT
            if passes()[1] > merged_before:
                break
        else:
            pytest.fail("no pass answered more than one caller")
        off = ServedModel(job_id=job_id, batching=BatchSettings(1, 20.0, exact=True))
        before = passes()[0]
        concurrently(lambda i: run_operation(state, off, "predict", asked[i]))
        assert passes()[0] == before  # the model's own setting: batching off
    finally:
        get_settings.cache_clear()

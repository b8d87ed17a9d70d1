"""Model export against the served model: every supervised layer type, the autoencoder, the VAE's
decoder and the GANs' generators, exported to ONNX and run by onnxruntime on 100 raw inputs,
answer what Predictor.run answers within 1e-5; TorchScript exports load with torch.jit.load and
answer the same; a family or layer that cannot be exported is refused by name; the route serves
the archives as predict resolves models (auth, tenants, 404/409) and builds each once.

Real checkpoints throughout: the layer harness writes random-initialised networks (with random
batch-norm statistics and preprocessing) through models.checkpoint, the families are trained
for one epoch by the engine."""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from core.settings import get_settings
from core.spec import DataInfo, JobSpec
from core.storage import job_dir
from models.checkpoint import write_checkpoint
from models.checkpoint_meta import ModelMeta, Monitor, Preprocessing, ScheduleState
from models.export import KNOWN_WARNINGS, ExportError, export_files
from models.families import OperationRequest, build
from models.families.predictor import Predictor
from tests.helpers import example
from tests.test_layers import CASES
from tests.test_layers import _build as build_layer
from worker.datasource import load_train_data
from worker.training.engine import train

# pytest records warnings afresh per test: the ones models.export filters for the service, here too
pytestmark = [pytest.mark.filterwarnings(f"ignore:{m}") for m in KNOWN_WARNINGS] + [
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]
N = 100  # inputs per parity check
ATOL = 1e-5  # no op has needed the documented 1e-3 so far (docs/export.md)
ort.set_default_logger_severity(3)


def _session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # two shared cores: one each for torch and the runtime
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _onnx(
    files: dict[str, bytes], operation: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    session = _session(files[f"{operation}.onnx"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs), strict=True))


def _close(got: Any, want: Any, atol: float = ATOL) -> None:
    np.testing.assert_allclose(
        np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=0, atol=atol
    )


# -- the layer harness: tests/test_layers.py's cases, each inside a served network ---------------


def _case_model(
    spec_dict: dict[str, Any], shape: tuple[int, ...], kind: str
) -> tuple[list[Any], str]:
    """The layer under test, a flatten when it leaves more than one axis, and a head of `kind`."""
    layers: list[dict[str, Any]] = [spec_dict]
    if len(build_layer(spec_dict, shape)[1].shape) > 1:
        layers.append({"type": "flatten"})
    if kind == "softmax":
        return [
            *layers,
            {"type": "dense", "units": 3, "activation": "softmax"},
        ], "sparse_categorical_crossentropy"
    if kind == "binary":
        return [
            *layers,
            {"type": "dense", "units": 1, "activation": "sigmoid"},
        ], "binary_crossentropy"
    return [*layers, {"type": "dense", "units": 2}], "mse"


def _spec(layers: list[Any], loss: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "export-case",
            "dataset": {"name": "iris"},
            "model": {"layers": layers},
            "compile": {"optimizer": {"type": "adam"}, "loss": loss},
            "fit": {"epochs": 1},
        }
    )


def _info(spec_dict: dict[str, Any], shape: tuple[int, ...], task: str) -> DataInfo:
    classes = 3 if task == "classification" else None
    return DataInfo(
        input_shape=shape, task=task, num_classes=classes, target_dim=1 if classes else 2
    )  # type: ignore[arg-type]


def _preprocessing(
    spec_dict: dict[str, Any], shape: tuple[int, ...], index: int, kind: str
) -> Preprocessing:
    """Per-feature offsets and scales; every fourth case binarizes first; regression targets rescaled."""
    if spec_dict["type"] == "embedding":
        return {}
    g = np.random.default_rng(index)
    out: Preprocessing = {
        "features": {
            "offset": g.normal(0, 2, shape).astype(np.float32).tolist(),
            "scale": g.uniform(0.5, 2, shape).astype(np.float32).tolist(),
        },
        "target": {"offset": [1.5, -0.5], "scale": [2.0, 0.5]} if kind == "regression" else None,
    }
    if index % 4 == 3:
        out["binarize"] = 0.25
    return out


def write_model(
    directory: Path, spec: JobSpec, info: DataInfo, preprocessing: Preprocessing, seed: int = 0
) -> Path:
    """A random-initialised model written as the engine writes model.json (batch norm's running
    statistics made random too, so they count)."""
    torch.manual_seed(seed)
    module = build(spec, info)
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    meta = ModelMeta(
        epoch=0,
        step=0,
        spec=spec,
        info=info,
        preprocessing=preprocessing,
        class_names=["a", "b", "c"] if info.task == "classification" else None,
        metrics={},
        history=[],
        schedule=ScheduleState(lr=0.001, plateau=Monitor()),
        stopper=Monitor(),
        test_metrics={},
        best_epoch=None,
        family={},
    )
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    return write_checkpoint(directory, "model", tensors, meta)[0]


def _raw(shape: tuple[int, ...], preprocessing: Preprocessing, seed: int) -> np.ndarray:
    """Raw instances spread around the data's offsets, as float32 (what the graph takes)."""
    g = np.random.default_rng(seed)
    x = g.normal(0, 1, (N, *shape))
    features = preprocessing.get("features")
    if features:
        x = x / np.asarray(features["scale"]) + np.asarray(features["offset"])
    return x.astype(np.float32)


KINDS = ("softmax", "regression", "binary")
# tests/test_layers.py's cases (every registered layer type, with variants), numbered: the number
# picks the head (softmax, regression, one sigmoid logit) and the preprocessing's seed.
INDEXED = [pytest.param(i, *case.values, id=case.id) for i, case in enumerate(CASES)]


@pytest.mark.parametrize(("index", "layer_type", "spec_dict", "shape"), INDEXED)
def test_every_layer_type_exports_to_onnx_and_answers_as_served(
    index: int, layer_type: str, spec_dict: dict[str, Any], shape: tuple[int, ...], tmp_path: Path
) -> None:
    kind = KINDS[index % 3]
    task = "regression" if kind == "regression" else "classification"
    layers, loss = _case_model(spec_dict, shape, kind)
    preprocessing = _preprocessing(spec_dict, shape, index, kind)
    path = write_model(
        tmp_path, _spec(layers, loss), _info(spec_dict, shape, task), preprocessing, index
    )
    predictor = Predictor.load(path)
    if layer_type == "embedding":
        x: np.ndarray = np.random.default_rng(index).integers(
            0, spec_dict["input_dim"], (N, *shape)
        )
    else:
        x = _raw(shape, preprocessing, index)
    served = predictor.run("predict", OperationRequest(instances=x.tolist()))
    files = export_files(predictor, path, "onnx", "job_case")
    got = _onnx(files, "predict", {"instances": x})
    signature = json.loads(files["signature.json"])
    assert signature["operations"]["predict"]["inputs"][0]["dtype"] == str(x.dtype)
    if task == "regression":
        _close(got["predictions"], served["predictions"])
        return
    _close(got["probabilities"], served["probabilities"])
    probs = np.sort(np.asarray(served["probabilities"]), axis=1)
    clear = probs[:, -1] - probs[:, -2] > 1e-4  # an argmax of near-ties may differ by rounding
    assert (got["class_ids"][clear] == np.asarray(served["class_ids"])[clear]).all()
    assert signature["class_names"] == ["a", "b", "c"]


def test_token_ids_are_taken_as_int64_and_the_signature_says_their_range(tmp_path: Path) -> None:
    spec_dict = {"type": "embedding", "input_dim": 10, "output_dim": 4}
    layers, loss = _case_model(spec_dict, (6,), "softmax")
    path = write_model(tmp_path, _spec(layers, loss), _info(spec_dict, (6,), "classification"), {})
    files = export_files(Predictor.load(path), path, "onnx", "job_tokens")
    (port,) = json.loads(files["signature.json"])["operations"]["predict"]["inputs"]
    assert port == {
        "name": "instances",
        "dtype": "int64",
        "shape": ["batch", 6],
        "description": "token ids in 0..9",
    }


# -- the families: trained for an epoch, compared operation by operation ------------------------


class Trained:
    """Examples trained for one epoch on first use, shared by the module's tests."""

    def __init__(self, root: pytest.TempPathFactory) -> None:
        self.root, self.paths = root, dict[str, Path]()

    def __getitem__(self, name: str) -> Path:
        if name not in self.paths:
            spec = example(name, epochs=1)
            result = train(spec, load_train_data(spec), self.root.mktemp(name))
            assert result.model_path is not None
            self.paths[name] = result.model_path
        return self.paths[name]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return Trained(tmp_path_factory)


def _digits(predictor: Predictor) -> np.ndarray:
    return _raw(predictor.model.info.input_shape, predictor.model.meta.preprocessing, 3).clip(0, 16)


def test_autoencoder_reconstructs_encodes_and_decodes_as_served(trained: Trained) -> None:
    path = trained["digits_autoencoder"]
    predictor = Predictor.load(path)
    files = export_files(predictor, path, "onnx", "job_ae")
    x = _digits(predictor)
    served = predictor.run("reconstruct", OperationRequest(instances=x.tolist()))
    _close(_onnx(files, "reconstruct", {"instances": x})["reconstructions"], served["predictions"])
    codes = np.asarray(
        predictor.run("encode", OperationRequest(instances=x.tolist()))["predictions"]
    )
    _close(_onnx(files, "encode", {"instances": x})["codes"], codes)
    codes = codes.astype(np.float32)
    served = predictor.run("decode", OperationRequest(instances=codes.tolist()))
    _close(_onnx(files, "decode", {"codes": codes})["samples"], served["predictions"])


def test_vae_decoder_turns_latents_into_raw_samples_as_served(trained: Trained) -> None:
    path = trained["digits_vae"]
    predictor = Predictor.load(path)
    files = export_files(predictor, path, "onnx", "job_vae")
    z = np.random.default_rng(0).normal(size=(N, 8)).astype(np.float32)
    served = predictor.run("decode", OperationRequest(instances=z.tolist()))
    _close(_onnx(files, "decode", {"latents": z})["samples"], served["predictions"])
    x = _digits(predictor)
    served = predictor.run("encode", OperationRequest(instances=x.tolist()))
    got = _onnx(files, "encode", {"instances": x})
    _close(got["means"], served["predictions"])
    _close(got["log_variances"], served["log_variances"])
    signature = json.loads(files["signature.json"])
    assert "sample" in signature["not_exported"] and set(signature["operations"]) == {
        "reconstruct",
        "encode",
        "decode",
    }


def _noise(seed: int, latent: int) -> np.ndarray:
    """The latents generate draws for `seed` (GAN.noise), so the graph runs on the same noise."""
    return torch.randn(N, latent, generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.mark.parametrize("name", ["digits_dcgan", "gaussian_mixture_gan"])
def test_gan_generator_turns_noise_into_raw_samples_as_served(trained: Trained, name: str) -> None:
    path = trained[name]
    predictor = Predictor.load(path)
    files = export_files(predictor, path, "onnx", "job_gan")
    served = predictor.run("generate", OperationRequest(count=N, seed=11))
    noise = _noise(11, predictor.model.module.latent_dim)  # type: ignore[arg-type]
    _close(_onnx(files, "generate", {"noise": noise})["samples"], served["predictions"])
    x = np.asarray(served["predictions"], np.float32)
    scores = predictor.run("discriminate", OperationRequest(instances=x.tolist()))["predictions"]
    _close(_onnx(files, "discriminate", {"instances": x})["scores"], scores)


def test_conditional_gan_generates_the_given_labels_as_served(trained: Trained) -> None:
    path = trained["digits_cgan"]
    predictor = Predictor.load(path)
    files = export_files(predictor, path, "onnx", "job_cgan")
    labels = np.arange(N) % 10
    served = predictor.run("generate", OperationRequest(count=N, seed=4, labels=labels.tolist()))
    got = _onnx(files, "generate", {"noise": _noise(4, 32), "labels": labels})
    _close(got["samples"], served["predictions"])


# -- TorchScript ----------------------------------------------------------------------------------


def _scripted(files: dict[str, bytes], operation: str) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(files[f"{operation}.pt"]))


def test_torchscript_exports_load_and_answer_as_served(trained: Trained, tmp_path: Path) -> None:
    path = trained["digits_cgan"]
    predictor = Predictor.load(path)
    files = export_files(predictor, path, "torchscript", "job_ts")
    assert json.loads(files["signature.json"])["format"] == "torchscript"
    labels = torch.arange(N) % 10
    served = predictor.run("generate", OperationRequest(count=N, seed=2, labels=labels.tolist()))
    with torch.no_grad():
        got = _scripted(files, "generate")(torch.from_numpy(_noise(2, 32)), labels)
    _close(got, served["predictions"])
    # a recurrent classifier and a regressor with preprocessing, from the layer harness
    for case, kind in (
        (("lstm", {"type": "lstm", "units": 3, "bidirectional": True}, (6, 3)), "softmax"),
        (("conv2d", {"type": "conv2d", "filters": 2, "kernel_size": 3}, (1, 5, 5)), "regression"),
    ):
        _, spec_dict, shape = case
        layers, loss = _case_model(spec_dict, shape, kind)
        task = "regression" if kind == "regression" else "classification"
        preprocessing = _preprocessing(spec_dict, shape, 3, kind)  # binarizes too
        model_path = write_model(
            tmp_path / kind, _spec(layers, loss), _info(spec_dict, shape, task), preprocessing
        )
        predictor = Predictor.load(model_path)
        x = _raw(shape, preprocessing, 0)
        served = predictor.run("predict", OperationRequest(instances=x.tolist()))
        module = _scripted(export_files(predictor, model_path, "torchscript", "job_ts"), "predict")
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        if task == "regression":
            _close(out, served["predictions"])
        else:
            _close(out[0], served["probabilities"])


# -- what cannot be exported ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reverse_seq2seq", "digits_rbm"])
def test_a_family_without_a_graph_is_refused_by_name(trained: Trained, name: str) -> None:
    path = trained[name]
    predictor = Predictor.load(path)
    family = predictor.family
    with pytest.raises(ExportError, match=f"the {family} family cannot be exported: "):
        export_files(predictor, path, "onnx", "job_refused")
    assert "model.json" in export_files(
        predictor, path, "safetensors", "job_refused"
    )  # the files still are


class Bessel(nn.Module):
    """An op the ONNX exporter has no translation for (aten::i0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(x)


def test_a_layer_the_exporter_rejects_is_named(tmp_path: Path) -> None:
    spec_dict = {"type": "dense", "units": 4, "activation": "tanh"}
    layers = [
        {"type": "dense", "units": 5, "activation": "relu"},
        spec_dict,
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
    path = write_model(
        tmp_path,
        _spec(layers, "sparse_categorical_crossentropy"),
        _info(spec_dict, (4,), "classification"),
        {},
    )
    predictor = Predictor.load(path)
    network = predictor.model.module
    network.body[1] = nn.Sequential(network.body[1], Bessel())  # type: ignore[index, operator]
    with pytest.raises(ExportError, match=r"^layer 1 \(dense\) cannot be exported: .*aten::i0"):
        export_files(predictor, path, "onnx", "job_bessel")


# -- the route ------------------------------------------------------------------------------------


@pytest.fixture
def service(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("FITSERVE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FITSERVE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    from api.main import create_app

    yield TestClient(create_app())
    get_settings.cache_clear()


def _tenant(name: str) -> str:
    from core.db import session_scope
    from core.repository import tenants as tenants_repo

    with session_scope() as s:
        return tenants_repo.create_key(
            session=s, tenant=tenants_repo.get_or_create_tenant(session=s, name=name)
        )


def _job(key: str, status: str, model: Path | None) -> str:
    """A job of the key's tenant, its model files copied into the job's directory as the worker leaves them."""
    from core.db import session_scope
    from core.repository import tenants as tenants_repo
    from core.tables import Job

    with session_scope() as s:
        tenant = tenants_repo.tenant_for_key(session=s, key=key)
        assert tenant is not None
        job = Job(tenant_id=tenant.id, name="export", spec={}, status=status)
        s.add(job)
        s.flush()
        job_id = job.id
    if model is not None:
        directory = job_dir(get_settings().artifacts_dir, job_id)
        directory.mkdir(parents=True)
        meta = json.loads(model.read_text())
        for name in ("model.json", meta["weights"]):
            shutil.copyfile(
                model.with_name(name) if name != "model.json" else model, directory / name
            )
    return job_id


def _get(client: TestClient, key: str, job_id: str, fmt: str = "onnx") -> Any:
    return client.get(
        f"/v1/models/{job_id}/export",
        params={"format": fmt},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_the_route_serves_archives_that_run(service: TestClient, trained: Trained) -> None:
    model = trained["digits_autoencoder"]
    key = _tenant("export-a")
    job_id = _job(key, "succeeded", model)
    answer = _get(service, key, job_id, "onnx")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert f'filename="{job_id}-onnx.zip"' in answer.headers["content-disposition"]
    files = {
        i.filename: zipfile.ZipFile(io.BytesIO(answer.content)).read(i)
        for i in zipfile.ZipFile(io.BytesIO(answer.content)).infolist()
    }
    predictor = Predictor.load(model)
    x = _digits(predictor)
    served = predictor.run("reconstruct", OperationRequest(instances=x.tolist()))
    _close(_onnx(files, "reconstruct", {"instances": x})["reconstructions"], served["predictions"])
    assert json.loads(files["signature.json"])["job_id"] == job_id

    answer = _get(service, key, job_id, "safetensors")
    assert answer.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    weights = json.loads(model.read_text())["weights"]
    assert set(archive.namelist()) == {"model.json", weights, "README.txt"}
    directory = job_dir(get_settings().artifacts_dir, job_id)
    assert archive.read("model.json") == (directory / "model.json").read_bytes()
    assert archive.read(weights) == (directory / weights).read_bytes()

    # a registered name, its version and its alias answer with the job's archive
    auth = {"Authorization": f"Bearer {key}"}
    registered = service.post(
        "/v1/models", json={"name": "ae-export", "job_id": job_id}, headers=auth
    )
    assert registered.status_code == 201, registered.text
    service.put("/v1/models/ae-export/aliases/production", json={"version": 1}, headers=auth)
    for ref in ("ae-export", "ae-export/versions/1", "ae-export/versions/production"):
        by_name = service.get(
            f"/v1/models/{ref}/export", params={"format": "safetensors"}, headers=auth
        )
        assert by_name.status_code == 200 and by_name.content == answer.content, ref
    other = {"Authorization": f"Bearer {_tenant('export-a2')}"}
    assert service.get("/v1/models/ae-export/export?format=onnx", headers=other).status_code == 404
    assert (
        service.get("/v1/models/ae-export/versions/2/export?format=onnx", headers=auth).status_code
        == 404
    )

    answer = _get(service, key, job_id, "torchscript")
    assert (
        answer.status_code == 200
        and "reconstruct.pt" in zipfile.ZipFile(io.BytesIO(answer.content)).namelist()
    )


def test_the_route_refuses_as_predict_does(service: TestClient, trained: Trained) -> None:
    key, other = _tenant("export-b"), _tenant("export-c")
    job_id = _job(key, "succeeded", trained["digits_autoencoder"])
    bad = _get(service, key, job_id, "pickle")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "format"]
    plain = service.get(f"/v1/models/{job_id}/export", headers={"Authorization": f"Bearer {key}"})
    assert (
        plain.status_code == 200
        and plain.content == _get(service, key, job_id, "safetensors").content
    )
    assert _get(service, key, "job_" + "0" * 32).status_code == 404
    assert _get(service, other, job_id).status_code == 404  # another tenant's job
    assert _get(service, "fs_not-a-key", job_id).status_code == 401
    assert service.get(f"/v1/models/{job_id}/export?format=onnx").status_code == 401
    assert _get(service, key, _job(key, "running", None)).status_code == 409
    assert _get(service, key, _job(key, "succeeded", None)).status_code == 409  # its files are gone
    versioned = service.get(
        f"/v1/models/{job_id}/versions/1/export",
        params={"format": "onnx"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert versioned.status_code == 404  # versions belong to registered names
    refused = _job(key, "succeeded", trained["reverse_seq2seq"])
    answer = _get(service, key, refused, "onnx")
    assert answer.status_code == 422 and "seq2seq family cannot be exported" in answer.text
    assert answer.json()["detail"][0]["loc"] == ["query", "format"]


def test_concurrent_first_requests_build_once(
    service: TestClient, trained: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    key = _tenant("export-d")
    job_id = _job(key, "succeeded", trained["digits_autoencoder"])
    answers: list[Any] = []
    caplog.set_level(logging.INFO, logger="fitserve.api")

    def fetch() -> None:
        answers.append(_get(service, key, job_id, "onnx"))

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.content for a in answers}) == 1
    built = [
        r for r in caplog.records if "export built" in r.getMessage() and job_id in r.getMessage()
    ]
    assert len(built) == 1

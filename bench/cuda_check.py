"""The CUDA paths, checked in one bounded run: training (bf16 autocast, fp16 with GradScaler, fp32),
checkpoints across devices, resume, the embedded service on a GPU worker, and the throughput bench.

Parts (each in its own process, with its own time limit; one that fails or hangs prints why, with
the traceback, and the next part still runs):

1. env         torch, CUDA, cuDNN, the GPU and its driver, bf16 support, the packages the service needs
2. train       examples/ specs through worker.training.engine.train on cuda with fit.mixed_precision
               auto (bf16), fp16 (GradScaler) and off, and on the CPU: final val metrics, samples/s,
               finite or not, the fp16 loss scale
3. checkpoints each cuda-trained model loaded on the CPU and on cuda (models.inference.Predictor.load)
               and its default predict operation compared; resume: 2 epochs on cuda (fp16), the run
               broken off, then train(..., resume=True) to 3, against an unbroken 3-epoch run; a cuda
               checkpoint resumed on the CPU and a CPU one on cuda
4. service     `fitserve up` on a free port in a temp data dir: digits_mlp.json (and a ShallowVGGNet)
               submitted over HTTP, the job's `device`, predict, timings
5. first_metric  submit -> first metric row through `fitserve up`, with the training process forked
               and warmed up ahead of its job (the default) and without (a CUDA context per job)
6. placement   a job's device kind and precision kept across attempts: begun on a CPU-only worker
               (FITSERVE_DEVICE=cpu), preempted, resumed by a GPU worker: still cpu and fp32; begun on
               cuda (bf16), preempted, taken by a CPU-only worker: refused with the reason
7. throughput  bench/train_throughput.py --quick on cuda, then on the CPU

Without CUDA the cuda runs are skipped (said so) and everything else runs on the CPU.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 bench/cuda_check.py [--quick] [--parts train,service] \
        [--epochs N] [--out DIR] 2>&1 | tee cuda_check.log
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.training.callbacks import Callback, TrainStart

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PARTS = ("env", "train", "checkpoints", "service", "first_metric", "placement", "throughput")
# seconds per part (throughput: cuda and CPU each); sized so the whole run stays under ~6 minutes
LIMITS = {
    "env": 25,
    "train": 140,
    "checkpoints": 50,
    "service": 75,
    "first_metric": 120,
    "placement": 120,
    "throughput": 40,
}
MODES = ("auto", "fp16", "off")
# (example, fit overrides (an "epochs" there is a floor), family section overrides, modes on cuda); the CPU runs
# each once ("auto" is fp32 there)
SPECS: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    ("digits_mlp", {}, {}, MODES),
    ("digits_shallow_vggnet", {}, {}, MODES),
    ("digits_cnn_augmented", {}, {}, MODES),
    ("sequence_lstm_classifier", {}, {}, MODES),
    ("sequence_gru_classifier", {}, {}, MODES),
    ("sine_lstm_forecaster", {}, {}, MODES),
    ("tokens_transformer", {}, {}, MODES),
    ("reverse_seq2seq", {}, {}, MODES),
    ("digits_vae", {}, {}, MODES),
    ("digits_dcgan", {}, {}, MODES),
    ("digits_cgan", {}, {}, ("auto",)),
    ("gaussian_mixture_gan", {}, {}, ("auto",)),
    ("digits_autoencoder", {}, {}, ("auto",)),
    ("digits_rbm", {}, {}, ("auto",)),
    ("digits_dbn", {"epochs": 3}, {"dbn": {"pretrain_epochs": 1}}, ("auto",)),
]
README_DIGIT = [
    0,
    0,
    5,
    13,
    9,
    1,
    0,
    0,
    0,
    0,
    13,
    15,
    10,
    15,
    5,
    0,
    0,
    3,
    15,
    2,
    0,
    11,
    8,
    0,
    0,
    4,
    12,
    0,
    0,
    8,
    8,
    0,
    0,
    5,
    8,
    0,
    0,
    9,
    8,
    0,
    0,
    4,
    11,
    0,
    1,
    12,
    7,
    0,
    0,
    2,
    14,
    5,
    10,
    12,
    0,
    0,
    0,
    0,
    6,
    13,
    10,
    0,
    0,
    0,
]


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def fail(what: str) -> None:
    """Print the current exception with its traceback under a FAIL line that grep finds."""
    print(f"FAIL {what}:", flush=True)
    traceback.print_exc(file=sys.stdout)
    sys.stdout.flush()


def cuda_ok() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def fmt(metrics: dict[str, float], prefix: str = "val_") -> str:
    keep = {k: v for k, v in metrics.items() if k.startswith(prefix)}
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(keep.items())) or "-"


def load_example(
    name: str,
    epochs: int,
    mode: str,
    fit: dict[str, Any] | None = None,
    section: dict[str, Any] | None = None,
) -> Any:
    from core.spec import JobSpec

    raw = json.loads((EXAMPLES / f"{name}.json").read_text())
    fit = fit or {}
    raw["fit"] = {
        **raw["fit"],
        **fit,
        "epochs": max(epochs, fit.get("epochs", 0)),
        "mixed_precision": mode,
    }
    for key, value in (section or {}).items():
        raw[key] = {**raw[key], **value}
    return JobSpec.model_validate(raw)


# -- part 1: env -----------------------------------------------------------------------------------
def part_env(args: argparse.Namespace) -> None:
    import importlib.metadata as md
    import platform

    import torch

    print(f"python {platform.python_version()} at {sys.executable}; platform {platform.platform()}")
    print(
        f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    )
    print(f"cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(
            f"device 0: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
            f"{p.multi_processor_count} SMs, bf16 supported: {torch.cuda.is_bf16_supported()}"
        )
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,driver_version,memory.total,memory.used", "--format=csv"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=False)  # noqa: S603
        print(f"nvidia-smi: {out.stdout.strip()} {out.stderr.strip()}")
    else:
        print("nvidia-smi: not found")
    names = [
        "numpy",
        "scikit-learn",
        "safetensors",
        "pydantic",
        "pydantic-core",
        "pydantic-settings",
        "fastapi",
        "starlette",
        "uvicorn",
        "httpx",
        "anyio",
        "click",
        "celery",
        "kombu",
        "billiard",
        "sqlalchemy",
        "alembic",
        "python-multipart",
        "prometheus-client",
        "rich",
        "typing-extensions",
    ]
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} MISSING")
    print("packages: " + ", ".join(versions))


# -- part 2: train ---------------------------------------------------------------------------------
class Watch(Callback):
    """The resolved device and precision; a stop once the part's deadline passes (or after `stop_after` epochs)."""

    def __init__(self, deadline: float, stop_after: int | None = None) -> None:
        self.deadline, self.stop_after = deadline, stop_after
        self.device = self.amp = "?"
        self.epochs_seen = 0
        self.timed_out = False

    def on_train_start(self, start: TrainStart) -> None:
        self.device, self.amp = start.device, start.precision

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs_seen = epoch

    def should_stop(self) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return True
        return self.stop_after is not None and self.epochs_seen >= self.stop_after


def finite_weights(model_json: Path | None) -> str:
    from models.checkpoint import read_checkpoint

    if model_json is None:
        return "no model"
    tensors, _ = read_checkpoint(model_json)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values()})
    return ("finite" if not bad else f"NON-FINITE in {bad[:3]}") + f" ({'/'.join(dtypes)})"


def grad_scale(out: Path) -> str:
    """The GradScaler state saved in the newest epoch checkpoint, if any."""
    found = sorted((out / "checkpoints").glob("epoch-*.json"))
    if not found:
        return "-"
    state = (json.loads(found[-1].read_text()).get("task") or {}).get("grad_scaler")
    return (
        "-"
        if not state
        else f"{state.get('scale')} (growth_tracker {state.get('_growth_tracker')})"
    )


def train_one(
    name: str, spec: Any, data: Any, device: str, mode: str, out: Path, deadline: float
) -> dict[str, Any]:
    from worker.training.engine import TrainingFailed, train

    watch = Watch(deadline)
    row: dict[str, Any] = {
        "spec": name,
        "family": spec.family,
        "device": device,
        "mode": mode,
        "out": str(out),
    }
    started = time.perf_counter()
    try:
        result = train(spec, data, out, [watch], device=device)
    except TrainingFailed as exc:
        row.update(
            status="FAILED",
            reason=str(exc),
            nan="nan" in str(exc).lower() or "inf" in str(exc).lower(),
        )
        print(f"  TrainingFailed: {exc}")
    except Exception as exc:
        fail(f"{name} on {device} mode {mode}")
        row.update(status="ERROR", reason=f"{type(exc).__name__}: {exc}", nan=False)
    else:
        last = result.history[-1] if result.history else {}
        values = [v for h in result.history for v in h.values()] + list(
            result.test_metrics.values()
        )
        speeds = [h["samples_per_second"] for h in result.history]
        row.update(
            status=result.status + (" (deadline)" if watch.timed_out else ""),
            epochs=result.epochs_done,
            val=fmt(last),
            test=fmt(result.test_metrics, "test_"),
            sps_last=speeds[-1] if speeds else float("nan"),
            sps_warm=(sum(speeds[1:]) / len(speeds[1:])) if len(speeds) > 1 else float("nan"),
            nan=not all(math.isfinite(v) for v in values),
            weights=finite_weights(result.model_path),
            model=str(result.model_path) if result.model_path else None,
        )
    row.update(
        amp=watch.amp,
        ran_on=watch.device,
        wall=time.perf_counter() - started,
        scale=grad_scale(out),
    )
    print(
        f"  {name:<26} {device:<4} {mode:<4} -> amp {row['amp']:<8} on {row['ran_on']:<6} {row['status']:<10} "
        f"ep {row.get('epochs', '-')} {row['wall']:6.1f}s  samples/s last {row.get('sps_last', float('nan')):9.0f} "
        f"(epochs 2+ {row.get('sps_warm', float('nan')):9.0f})  NaN: {'YES' if row['nan'] else 'no'}  "
        f"weights: {row.get('weights', '-')}  fp16 scale: {row['scale']}\n"
        f"      val: {row.get('val', '-')}   test: {row.get('test', '-')}",
        flush=True,
    )
    return row


def part_train(args: argparse.Namespace) -> None:
    from worker.datasource import load_train_data

    deadline = time.monotonic() + args.limit - 8
    have_cuda = cuda_ok()
    if not have_cuda:
        print("cuda not available: SKIPPING the cuda runs; CPU runs only")
    rows: list[dict[str, Any]] = []
    runs = args.workdir / "runs"
    epochs = args.epochs
    print(f"epochs per run: {epochs}; runs under {runs}")
    for name, fit, section, modes in SPECS:
        if time.monotonic() > deadline:
            print(f"  {name}: SKIPPED (part deadline reached)")
            continue
        try:
            data = load_train_data(load_example(name, epochs, "auto", fit, section))
        except Exception:
            fail(f"{name}: loading its data")
            continue
        plan = [("cuda", m) for m in modes] if have_cuda else []
        plan.append(
            ("cpu", "auto")
        )  # on the CPU every mode is fp32 (amp_dtype): one run stands for all
        for device, mode in plan:
            if time.monotonic() > deadline:
                print(f"  {name} {device} {mode}: SKIPPED (part deadline reached)")
                continue
            try:
                spec = load_example(name, epochs, mode, fit, section)
            except Exception:
                fail(f"{name}: its spec")
                break
            out = runs / f"{name}-{device}-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            rows.append(train_one(name, spec, data, device, mode, out, deadline))
    (args.workdir / "train.json").write_text(json.dumps(rows, indent=1, default=str))
    banner("train: summary")
    print(
        f"{'spec':<26} {'dev':<4} {'mode':<4} {'amp':<8} {'status':<10} {'s/s last':>9} {'s/s 2+':>9} "
        f"{'NaN':<4} val metrics"
    )
    for r in rows:
        print(
            f"{r['spec']:<26} {r['device']:<4} {r['mode']:<4} {r['amp']:<8} {r['status']:<10} "
            f"{r.get('sps_last', float('nan')):>9.0f} {r.get('sps_warm', float('nan')):>9.0f} "
            f"{'YES' if r['nan'] else 'no':<4} {r.get('val', r.get('reason', '-'))}"
        )
    bad = [r for r in rows if r["status"] not in ("completed", "early_stopped") or r["nan"]]
    print(f"train: {len(rows)} runs, {len(bad)} not clean")
    for r in bad:
        print(
            f"  NOT CLEAN: {r['spec']} {r['device']} {r['mode']}: {r['status']} {r.get('reason', '')}"
        )


# -- part 3: checkpoints and resume ----------------------------------------------------------------
def numbers(value: Any) -> list[float]:
    if isinstance(value, bool | str) or value is None:
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in numbers(v)]
    return []


def request_for(spec: Any) -> Any:
    from core.datasets import load_dataset
    from models.families import OperationRequest

    if spec.family == "gan":
        return OperationRequest(count=4, seed=0)
    x = load_dataset(spec.dataset, spec.fit.seed).x[:6]
    return OperationRequest(instances=x.tolist())


def cross_device_predict(model_json: Path, label: str) -> None:
    from models.inference import Predictor

    loaded: dict[str, Any] = {}
    for device in ("cuda", "cpu") if cuda_ok() else ("cpu",):
        started = time.perf_counter()
        predictor = Predictor.load(model_json, device=device)
        load_s = time.perf_counter() - started
        spec = predictor.model.spec
        request = request_for(spec)
        started = time.perf_counter()
        answer = predictor.run(None, request)
        predict_ms = (time.perf_counter() - started) * 1000
        loaded[device] = answer
        flat = numbers(answer.get("predictions")) + numbers(answer.get("probabilities"))
        print(
            f"  {label:<34} load on {device:<4} {load_s * 1000:7.1f} ms, predict {predict_ms:7.1f} ms, "
            f"{len(flat)} numbers, finite: {all(math.isfinite(v) for v in flat)}, "
            f"keys {sorted(answer)}",
            flush=True,
        )
    if len(loaded) == 2:
        a, b = loaded["cuda"], loaded["cpu"]
        na = numbers(a.get("predictions")) + numbers(a.get("probabilities"))
        nb = numbers(b.get("predictions")) + numbers(b.get("probabilities"))
        diff = (
            max((abs(x - y) for x, y in zip(na, nb, strict=False)), default=0.0)
            if len(na) == len(nb)
            else None
        )
        same = a.get("predictions") == b.get("predictions") if not na else None
        print(
            f"  {label:<34} cuda vs cpu: max |diff| {diff if diff is None else f'{diff:.3g}'}"
            f"{'' if same is None else f', same predictions: {same}'}"
            f"{'  (latent draws may differ by device)' if 'gan' in label else ''}",
            flush=True,
        )


def max_weight_diff(a: Path, b: Path) -> float:
    from models.checkpoint import read_checkpoint

    ta, tb = read_checkpoint(a)[0], read_checkpoint(b)[0]
    assert ta.keys() == tb.keys(), (sorted(ta.keys() ^ tb.keys()))[:5]
    return max(
        float((ta[k].double() - tb[k].double()).abs().max()) if ta[k].numel() else 0.0 for k in ta
    )


def scaler_of(ckpt: Path) -> Any:
    return (json.loads(ckpt.read_text()).get("task") or {}).get("grad_scaler")


def resume_check(
    args: argparse.Namespace, first: str, second: str, mode: str, deadline: float
) -> None:
    """Train 3 epochs unbroken on `second`; then 2 epochs on `first` (broken off in epoch 3, as a
    preemption would) and train(..., resume=True) on `second` to 3."""
    from worker.datasource import load_train_data
    from worker.training.engine import Trainer, train

    label = f"resume {first}->{second} {mode}"
    spec = load_example("digits_mlp", 3, mode)
    data = load_train_data(spec)
    base = args.workdir / f"resume-{first}-{second}-{mode}"
    shutil.rmtree(base, ignore_errors=True)
    unbroken = train(spec, data, base / "unbroken", device=second)
    watch = Watch(deadline, stop_after=2)
    broken = train(spec, data, base / "broken", [watch], device=first)
    ckpt2 = base / "broken" / "checkpoints" / "epoch-0002.json"
    print(
        f"  {label}: unbroken {unbroken.status} {unbroken.epochs_done} epochs; first run {broken.status} after "
        f"{broken.epochs_done} epochs (amp {watch.amp} on {watch.device}); epoch-2 checkpoint: {ckpt2.exists()}, "
        f"saved grad_scaler {scaler_of(ckpt2) if ckpt2.exists() else '-'}"
    )
    trainer = Trainer(spec, data, base / "broken", device=second)
    done = trainer.resume()
    scaler = trainer.task.scaler
    print(
        f"  {label}: Trainer.resume() -> {done} epochs done; its scaler "
        f"{None if scaler is None else scaler.state_dict()}"
    )
    watch2 = Watch(deadline)
    resumed = train(spec, data, base / "broken", [watch2], resume=True, device=second)
    ckpt3u, ckpt3r = (base / d / "checkpoints" / "epoch-0003.json" for d in ("unbroken", "broken"))
    assert unbroken.model_path is not None and resumed.model_path is not None
    diff = max_weight_diff(unbroken.model_path, resumed.model_path)
    print(
        f"  {label}: resumed {resumed.status} at {resumed.epochs_done} epochs (amp {watch2.amp} on {watch2.device})\n"
        f"      unbroken val: {fmt(unbroken.history[-1])}\n      resumed  val: {fmt(resumed.history[-1])}\n"
        f"      max |weight diff| resumed vs unbroken: {diff:.3g}; "
        f"epoch-3 grad_scaler unbroken {scaler_of(ckpt3u)} resumed {scaler_of(ckpt3r)}",
        flush=True,
    )


def part_checkpoints(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.limit - 8
    have_cuda = cuda_ok()
    rows_file = args.workdir / "train.json"
    rows = json.loads(rows_file.read_text()) if rows_file.exists() else []
    models = [
        (f"{r['spec']} {r['device']} {r['mode']}", Path(r["model"]))
        for r in rows
        if r.get("model")
        and r["device"] == ("cuda" if have_cuda else "cpu")
        and (r["mode"] == "auto" or r["spec"] == "digits_mlp")
    ]
    if not have_cuda:
        print("cuda not available: predicting on the CPU only, resume CPU->CPU only")
    if not models:
        print("no checkpoints from the train part: training digits_mlp (auto) here")
        from worker.datasource import load_train_data

        spec = load_example("digits_mlp", 2, "auto")
        out = args.workdir / "runs" / "digits_mlp-ckpt"
        shutil.rmtree(out, ignore_errors=True)
        device = "cuda" if have_cuda else "cpu"
        row = train_one("digits_mlp", spec, load_train_data(spec), device, "auto", out, deadline)
        models = [("digits_mlp (here)", Path(row["model"]))] if row.get("model") else []
    banner("checkpoints: a cuda checkpoint loaded and predicting on the CPU (and on cuda)")
    for label, path in models:
        if time.monotonic() > deadline:
            print(f"  {label}: SKIPPED (part deadline reached)")
            continue
        try:
            cross_device_predict(path, label)
        except Exception:
            fail(f"predict from {label}")
    banner("checkpoints: resume (2 epochs, broken off, train(..., resume=True) to 3)")
    pairs = [
        ("cuda", "cuda", "fp16"),
        ("cuda", "cuda", "auto"),
        ("cuda", "cpu", "fp16"),
        ("cpu", "cuda", "fp16"),
    ]
    for first, second, mode in pairs if have_cuda else [("cpu", "cpu", "fp16")]:
        if time.monotonic() > deadline:
            print(f"  resume {first}->{second} {mode}: SKIPPED (part deadline reached)")
            continue
        try:
            resume_check(args, first, second, mode, deadline)
        except Exception:
            fail(f"resume {first}->{second} {mode}")


# -- part 4: the embedded service ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_job(client: Any, url: str, name: str, body: dict[str, Any], deadline: float) -> None:
    started = time.perf_counter()
    response = client.post(f"{url}/v1/jobs", json=body)
    submit_s = time.perf_counter() - started
    print(f"  {name}: POST /v1/jobs -> {response.status_code} in {submit_s * 1000:.0f} ms")
    if response.status_code != 201:
        print(f"  FAIL {name}: submit answered {response.status_code}: {response.text[:2000]}")
        return
    job_id = response.json()["id"]
    running_at = None
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"{url}/v1/jobs/{job_id}").json()
        if job["status"] == "running" and running_at is None:
            running_at = time.perf_counter() - started
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    done_s = time.perf_counter() - started
    to_running = "never seen" if running_at is None else f"{running_at:.2f}s"
    print(
        f"  {name}: status {job.get('status')} ({job.get('reason')}); device {job.get('device')!r}; "
        f"submit->running {to_running}, submit->end {done_s:.2f}s"
    )
    print(
        f"      progress {job.get('progress')}; latest {job.get('metrics') or job.get('latest_metrics')}; "
        f"test {job.get('test_metrics')}"
    )
    if job.get("device") is None or not str(job.get("device")).startswith("cuda"):
        print(
            f"  {'FAIL' if cuda_ok() else 'NOTE'} {name}: the job's device is {job.get('device')!r}, not cuda"
        )
    speed = client.get(f"{url}/v1/jobs/{job_id}/metrics", params={"name": "samples_per_second"})
    if speed.status_code == 200:
        points = speed.json()
        points = points.get("data", points) if isinstance(points, dict) else points
        print(
            f"      samples_per_second per epoch: {[round(p.get('value', float('nan'))) for p in points]}"
        )
    if job.get("status") != "succeeded":
        print(f"  FAIL {name}: did not succeed: {json.dumps(job)[:3000]}")
        return
    for attempt in ("first (loads the model)", "second"):
        started = time.perf_counter()
        answer = client.post(
            f"{url}/v1/models/{job_id}/predict", json={"instances": [README_DIGIT]}
        )
        took = (time.perf_counter() - started) * 1000
        body_text = (
            answer.text
            if answer.status_code != 200
            else json.dumps({k: v for k, v in answer.json().items() if k != "probabilities"})
        )
        print(
            f"  {name}: predict {attempt}: {answer.status_code} in {took:.0f} ms: {body_text[:400]}"
        )


@contextlib.contextmanager
def embedded_service(
    args: argparse.Namespace,
    deadline: float,
    settings: dict[str, str],
    name: str,
    keep: Path | None = None,
) -> Iterator[tuple[str, Any]]:
    """`fitserve up` in a temp data dir (or `keep`, which outlives it): (its URL, an httpx client
    with its key); its log is summarised (and copied to --out as <name>.log) when it stops."""
    import httpx

    data_dir = keep or Path(tempfile.mkdtemp(prefix="fitserve-cuda-check-"))
    port = free_port()
    env = {
        **os.environ,
        "FITSERVE_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
        **settings,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log_path = data_dir / "service.log"
    cmd = [sys.executable, "-m", "cli.main", "up", "--port", str(port), "--data-dir", str(data_dir)]
    print(f"starting: {' '.join(cmd)} {settings} (FITSERVE_DATA_DIR={data_dir}); log {log_path}")
    started = time.perf_counter()
    with log_path.open("wb") as log:
        up = subprocess.Popen(  # noqa: S603
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )
    (args.workdir / "service.pgid").write_text(str(up.pid))
    url = f"http://127.0.0.1:{port}"
    try:
        ready = False
        while time.monotonic() < deadline and up.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                    and (data_dir / "api_key").exists()
                ):
                    ready = True
                    break
            time.sleep(0.2)
        print(
            f"  service ready: {ready} after {time.perf_counter() - started:.1f}s (exit code {up.poll()})"
        )
        if not ready:
            raise RuntimeError("the service did not become ready")
        key = (data_dir / "api_key").read_text().strip()
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            yield url, client
    finally:
        stop(up, "fitserve up")
        summarise_log(log_path, args, name)
        if keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)


def summarise_log(log_path: Path, args: argparse.Namespace, name: str) -> None:
    text = log_path.read_text(errors="replace").splitlines()
    words = ("Traceback", '"ERROR"', '"WARNING"', '"CRITICAL"', "Error", "Exception")
    flagged = [line for line in text if any(w in line for w in words)]
    shown = text[-15:] if not flagged else text[-60:]
    print(
        f"  service log: {len(text)} lines; {len(flagged)} flagged (warning, error, traceback); "
        f"the last {len(shown)} lines:"
    )
    print("\n".join(f"    | {line[:400]}" for line in shown))
    if flagged:
        print(
            "  flagged lines (first 30):\n"
            + "\n".join(f"    ! {line[:600]}" for line in flagged[:30])
        )
    if args.out:
        shutil.copy(log_path, args.out / f"{name}.log")


def part_service(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.limit - 12
    try:
        with embedded_service(args, deadline, {}, "service") as (url, client):
            mlp = json.loads((EXAMPLES / "digits_mlp.json").read_text())
            service_job(client, url, "digits_mlp", mlp, deadline)
            vgg = json.loads((EXAMPLES / "digits_shallow_vggnet.json").read_text())
            vgg["fit"]["epochs"] = 2
            service_job(
                client, url, "digits_shallow_vggnet (2 epochs, the worker's 2nd job)", vgg, deadline
            )
            # Queues: a cuda job is routed to the GPU worker (it serves cuda where it has a GPU);
            # a cpu job finds no worker serving cpu here and waits, saying why.
            routed = mlp | {"resources": {"device": "cuda"}, "name": "routed-cuda"}
            service_job(client, url, "digits_mlp with resources.device cuda", routed, deadline)
            waiting_job(client, url, mlp | {"resources": {"device": "cpu"}, "name": "cpu-only"})
    except Exception:
        fail("service")


def waiting_job(client: Any, url: str, body: dict[str, Any]) -> None:
    """A job no worker here serves: its status and reason after 3 s, then cancelled."""
    job_id = client.post(f"{url}/v1/jobs", json=body).json()["id"]
    time.sleep(3)
    job = client.get(f"{url}/v1/jobs/{job_id}").json()
    print(
        f"  cpu job on a cuda-only worker: {job['status']}, attempt {job['attempt']}: {job['reason']}"
    )
    client.post(f"{url}/v1/jobs/{job_id}/cancel")


def first_metric(client: Any, url: str, spec: dict[str, Any], deadline: float) -> float:
    """Seconds from POST /v1/jobs to the job's first metric row (polled every 10 ms); then cancelled."""
    started = time.perf_counter()
    job_id = client.post(f"{url}/v1/jobs", json=spec).json()["id"]
    while not client.get(f"{url}/v1/jobs/{job_id}/metrics", params={"limit": 1}).json()["data"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: no metric row")
        time.sleep(0.01)
    took = time.perf_counter() - started
    client.post(f"{url}/v1/jobs/{job_id}/cancel")
    while client.get(f"{url}/v1/jobs/{job_id}").json()["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        time.sleep(0.05)
    return took


def part_first_metric(args: argparse.Namespace) -> None:
    """Submit -> first metric on the GPU, with the training process forked and warmed ahead of its
    job (the default) and without (FITSERVE_SPARE_TRAINING_PROCESS=false): a CUDA context per job."""
    deadline = time.monotonic() + args.limit - 12
    spec = json.loads((EXAMPLES / "digits_mlp.json").read_text())
    spec["fit"] |= {"epochs": 200, "log_every_steps": 1}
    for spare in ("true", "false"):
        try:
            with embedded_service(
                args,
                deadline,
                {"FITSERVE_SPARE_TRAINING_PROCESS": spare},
                f"first_metric_spare_{spare}",
            ) as (url, client):
                warm = first_metric(client, url, spec, deadline)  # the worker's first job
                times = [first_metric(client, url, spec, deadline) for _ in range(3)]
            print(
                f"  spare training process {spare}: submit -> first metric: first job {warm:.2f} s, then "
                f"{', '.join(f'{t:.2f}' for t in times)} s (median {statistics.median(times):.2f} s)",
                flush=True,
            )
        except Exception:
            fail(f"first_metric (spare {spare})")


def until(client: Any, url: str, job_id: str, done: Any, deadline: float) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = client.get(f"{url}/v1/jobs/{job_id}").json()
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def placement_case(
    args: argparse.Namespace,
    first: dict[str, str],
    second: dict[str, str],
    name: str,
    deadline: float,
) -> dict[str, Any]:
    """A job begun under `first` settings, preempted by a stop after its 3rd epoch, then taken up by
    a worker with `second` settings: the job as it ended."""
    spec = json.loads((EXAMPLES / "digits_mlp.json").read_text())
    spec["fit"] |= {"epochs": 150}
    keep = Path(tempfile.mkdtemp(prefix="fitserve-placement-"))
    try:
        with embedded_service(args, deadline, first, f"{name}_first", keep) as (url, client):
            job_id = client.post(f"{url}/v1/jobs", json=spec).json()["id"]
            began = until(client, url, job_id, lambda j: j["progress"]["epoch"] >= 3, deadline)
            print(
                f"  {name}: attempt {began['attempt']} on {began['device']} at {began['precision']}, epoch "
                f"{began['progress']['epoch']}: stopping the service (its job is preempted)"
            )
        with embedded_service(args, deadline, second, f"{name}_second", keep) as (url, client):
            end = until(
                client,
                url,
                job_id,
                lambda j: j["status"] in ("succeeded", "failed", "cancelled"),
                deadline,
            )
        print(
            f"  {name}: ended {end['status']} after attempt {end['attempt']} on {end['device']} at "
            f"{end['precision']}, epoch {end['progress']['epoch']}: {end['reason']}"
        )
        return end
    finally:
        shutil.rmtree(keep, ignore_errors=True)


def part_placement(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.limit - 12
    if not cuda_ok():
        print("  no CUDA: skipped (tests/test_placement.py covers the decisions on the CPU)")
        return
    try:
        end = placement_case(args, {"FITSERVE_DEVICE": "cpu"}, {}, "cpu_then_gpu_worker", deadline)
        kept = (end["status"], end["device"], end["precision"], end["attempt"]) == (
            "succeeded",
            "cpu",
            "fp32",
            2,
        )
        print(
            f"  {'ok' if kept else 'FAIL'}: begun on the CPU, resumed by a GPU worker: kept cpu and fp32"
        )
        end = placement_case(args, {}, {"FITSERVE_DEVICE": "cpu"}, "gpu_then_cpu_worker", deadline)
        refused = end["status"] == "failed" and "has no GPU to resume it on" in (
            end["reason"] or ""
        )
        print(
            f"  {'ok' if refused else 'FAIL'}: begun on cuda at {end['precision']}, refused by a CPU-only worker"
        )
    except Exception:
        fail("placement")


def stop(proc: subprocess.Popen[bytes], what: str) -> None:
    """SIGTERM to the process group we started, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"  {what} ignored SIGTERM for 20 s: SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind in its group
    proc.wait()


# -- the orchestrator ------------------------------------------------------------------------------
def run_part(argv: list[str], limit: float, label: str, workdir: Path) -> None:
    started = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603
        argv, cwd=ROOT, process_group=0, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        code = proc.wait(timeout=limit)
        outcome = f"exit code {code}" + ("" if code == 0 else " FAIL")
    except subprocess.TimeoutExpired:
        outcome = f"OVER ITS {limit:.0f} s LIMIT: killed FAIL"
        stop(proc, label)
    pgid = workdir / "service.pgid"
    if pgid.exists():  # the service part starts `fitserve up` in a group of its own
        try:
            os.killpg(int(pgid.read_text()), signal.SIGKILL)
            print(f"  (killed the leftover service group {pgid.read_text()})")
        except ProcessLookupError:
            pass
        pgid.unlink()
    print(f"== {label}: {outcome} after {time.perf_counter() - started:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch per run; throughput on mlp only"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per training run (default 3, quick 1)"
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
        help="where service.log is copied (default $OUT)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="run directories (default: a temp dir)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every part's time limit")
    parser.add_argument(
        "--part", choices=PARTS, help=argparse.SUPPRESS
    )  # internal: run one part here
    parser.add_argument("--limit", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.epochs = args.epochs or (1 if args.quick else 3)

    if args.part:  # a child: one part, its stacks dumped shortly before the parent's limit
        faulthandler.dump_traceback_later(max(args.limit - 3, 1), exit=False)
        parts = {
            "env": part_env,
            "train": part_train,
            "checkpoints": part_checkpoints,
            "service": part_service,
            "first_metric": part_first_metric,
            "placement": part_placement,
        }
        parts[args.part](args)
        return

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")
    own_workdir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fitserve-cuda-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(
        f"cuda_check: parts {parts}, epochs {args.epochs}, workdir {workdir}, started {time.strftime('%H:%M:%S')}"
    )
    script = str(Path(__file__).resolve())
    common = ["--workdir", str(workdir), "--epochs", str(args.epochs)] + (
        ["--out", str(args.out)] if args.out else []
    )
    for part in parts:
        limit = LIMITS[part] * args.scale
        if part == "throughput":
            bench = str(ROOT / "bench" / "train_throughput.py")
            extra = ["--only", "mlp"] if args.quick else []
            for device in ("cuda", "cpu") if cuda_ok() else ("cpu",):
                banner(
                    f"throughput ({device}): bench/train_throughput.py --quick --rounds 2 {' '.join(extra)}"
                )
                argv = [
                    sys.executable,
                    bench,
                    "--quick",
                    "--rounds",
                    "2",
                    "--device",
                    device,
                    *extra,
                ]
                run_part(argv, limit, f"throughput {device}", workdir)
            if not cuda_ok():
                print("cuda not available: SKIPPED the cuda throughput run")
            continue
        banner(f"{part} (limit {limit:.0f} s)")
        run_part(
            [sys.executable, script, "--part", part, "--limit", str(limit), *common],
            limit,
            part,
            workdir,
        )
    if own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ncuda_check: done in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()

"""The remote commands (`fitserve login`, `submit`, `watch`, `metrics`, `predict`, `cancel`,
`jobs`, `datasets`) as a user runs them against a real service, with their output and exit
codes: 0 succeeded, 1 failed, 2 usage or refused, 3 cancelled. On the embedded service only:
the commands are HTTP clients, and tests/e2e/test_sdk.py runs the SDK under them on both."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.conftest import Service
from tests.e2e.http import example

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.parametrize("service", ["embedded"], indirect=True)
JOB_ID = re.compile(r"^job_[0-9a-f]{32}$")


def environment(config: Path, **extra: str) -> dict[str, str]:
    """This checkout's code on the path, no FITSERVE_ setting but the config file's path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITSERVE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env | {"FITSERVE_CONFIG": str(config)} | extra


def fitserve(
    *args: str, env: dict[str, str], stdin: str | None = None, command: str = "cli.main"
) -> subprocess.CompletedProcess[str]:
    """`fitserve ARGS` (or `fitserve-client ARGS` with command=fitserve_client.cli)."""
    return subprocess.run(
        [sys.executable, "-m", command, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def spec_file(path: Path, **fit: Any) -> Path:
    raw = example("digits_mlp")
    raw["fit"] |= fit
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def env(service: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Logged in, as a user would be: the key from stdin."""
    env = environment(tmp_path_factory.mktemp("cli") / "fitserve" / "config.json")
    done = fitserve("login", "--url", service.url, env=env, stdin=service.keys["a"] + "\n")
    assert done.returncode == 0, done.stderr
    return env


@pytest.fixture(scope="module")
def watched(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """`fitserve submit SPEC --watch` of a 3-epoch job: its run and the job's id."""
    spec = spec_file(tmp_path_factory.mktemp("spec") / "spec.json", epochs=3)
    done = fitserve("submit", str(spec), "--watch", env=env)
    return done, done.stdout.splitlines()[0]


def test_login_writes_its_file_0600_and_the_environment_and_flags_override_it(
    service: Service, env: dict[str, str]
) -> None:
    config = Path(env["FITSERVE_CONFIG"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": service.url, "api_key": service.keys["a"]}
    assert fitserve("jobs", env=env).returncode == 0
    bad_key = fitserve("jobs", env=env | {"FITSERVE_API_KEY": "not-a-key"})
    assert bad_key.returncode == 2 and "a valid API key is required" in bad_key.stderr
    flag = fitserve("jobs", "--api-key", "not-a-key", env=env)
    assert flag.returncode == 2
    nowhere = fitserve("jobs", "--timeout", "2", env=env | {"FITSERVE_URL": "http://127.0.0.1:9"})
    assert nowhere.returncode == 1 and "ConnectError" in nowhere.stderr
    refused = fitserve("login", "--url", service.url, "--api-key", "not-a-key", env=env)
    assert refused.returncode == 2 and "nothing saved" in refused.stderr
    config.chmod(0o644)  # a file made readable by others is made private again
    again = fitserve("login", "--url", service.url, env=env, stdin=service.keys["a"])
    assert again.returncode == 0 and stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["api_key"] == service.keys["a"]


def test_submit_watch_prints_a_line_per_epoch_and_exits_0(watched: tuple[Any, str]) -> None:
    done, job_id = watched
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert JOB_ID.match(job_id) and lines[1:3] == ["job queued", "job running (attempt 1)"]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    for line in epochs:
        assert re.match(r"^epoch \d/3  45/45 steps  \d+\.\ds  loss \d\.\d{4}  accuracy ", line), (
            line
        )
        assert "val_accuracy" in line and "lr " not in line
    assert lines[-1] == "job succeeded: completed 3 epochs"


def test_jobs_and_metrics(env: dict[str, str], watched: tuple[Any, str]) -> None:
    _, job_id = watched
    jobs = fitserve("jobs", "--status", "succeeded", env=env)
    assert jobs.returncode == 0 and jobs.stdout.startswith("ID ")
    row = next(line for line in jobs.stdout.splitlines() if line.startswith(job_id))
    assert row.split()[1:4] == ["digits-mlp", "succeeded", "3/3"]
    table = fitserve("metrics", job_id, env=env).stdout.splitlines()
    assert table[0].split()[:4] == ["epoch", "attempt", "loss", "accuracy"]
    assert [r.split()[0] for r in table[1:]] == ["1", "2", "3"]
    one = fitserve("metrics", job_id, "--name", "val_accuracy", env=env).stdout.splitlines()
    assert one[0].split() == ["epoch", "step", "attempt", "val_accuracy"] and len(one) == 4
    rows = list(csv.DictReader(io.StringIO(fitserve("metrics", job_id, "--csv", env=env).stdout)))
    assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), key=int)
    assert {r["name"] for r in rows} >= {"loss", "val_accuracy", "step_loss"}
    assert [r["epoch"] for r in rows if r["name"] == "val_loss"] == ["1", "2", "3"]


def test_predict_reads_json_csv_and_npy(
    env: dict[str, str], watched: tuple[Any, str], tmp_path: Path
) -> None:
    _, job_id = watched
    x = np.random.default_rng(0).integers(0, 17, size=(5, 64)).astype(float)
    (tmp_path / "list.json").write_text(json.dumps(x.tolist()))
    (tmp_path / "body.json").write_text(json.dumps({"instances": x.tolist()}))
    header = ",".join(f"p{i}" for i in range(64))
    (tmp_path / "rows.csv").write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in x))
    np.save(tmp_path / "x.npy", x)
    answers = []
    for name in ("list.json", "body.json", "rows.csv", "x.npy"):
        done = fitserve("predict", job_id, str(tmp_path / name), env=env)
        assert done.returncode == 0, done.stderr
        answers.append(json.loads(done.stdout))
    assert all(a == answers[0] for a in answers)
    assert answers[0]["operation"] == "predict" and len(answers[0]["predictions"]) == 5
    assert np.asarray(answers[0]["probabilities"]).shape == (5, 10)
    (tmp_path / "x.txt").write_text("1 2 3")
    wrong = fitserve("predict", job_id, str(tmp_path / "x.txt"), env=env)
    assert wrong.returncode == 2 and "use a .json, .csv or .npy file" in wrong.stderr


def test_an_invalid_spec_exits_2_naming_the_field(env: dict[str, str], tmp_path: Path) -> None:
    raw = example("digits_mlp")
    raw["model"]["layers"][1]["units"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    done = fitserve("submit", str(tmp_path / "bad.json"), "--watch", env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert "model.layers.1.dense.units: Input should be greater than or equal to 1" in done.stderr
    missing = fitserve("submit", str(tmp_path / "none.json"), env=env)
    assert missing.returncode == 2 and "No such file" in missing.stderr


def test_a_job_that_fails_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    spec = spec_file(tmp_path / "slow.json", epochs=1000, max_seconds=1)
    done = fitserve("submit", str(spec), "--watch", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("job failed: ran past its time limit of 1 s")


def read_until(fd: int, buffer: bytearray, wanted: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while wanted not in buffer:
        assert time.monotonic() < deadline, f"no {wanted!r} in {bytes(buffer[-500:])!r}"
        if select.select([fd], [], [], 0.5)[0]:
            try:
                buffer += os.read(fd, 65536)
            except OSError:  # the command ended and closed the terminal
                return


def test_cancel_makes_watch_exit_3_and_a_terminal_shows_a_live_bar(
    env: dict[str, str], tmp_path: Path, service: Service
) -> None:
    long = str(spec_file(tmp_path / "long.json", epochs=1000))
    submitted = fitserve("submit", long, "--priority", "7", "--device", "cpu", env=env)
    job_id = submitted.stdout.strip()
    assert submitted.returncode == 0 and JOB_ID.match(job_id), submitted.stderr
    with service.client() as client:  # the options became the spec's own fields
        spec = client.get(f"/v1/jobs/{job_id}").json()["spec"]
    assert (spec["priority"], spec["resources"]["device"]) == (7, "cpu")
    terminal, other_end = pty.openpty()
    watch = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "watch", job_id],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=other_end,
        stderr=other_end,
    )
    os.close(other_end)
    shown = bytearray()
    try:
        read_until(terminal, shown, b"  ETA ", timeout=90)  # the bar: steps, ETA, loss
        cancel = fitserve("cancel", job_id, env=env)
        assert cancel.returncode == 0 and cancel.stdout.strip() == f"{job_id}: cancel requested"
        read_until(terminal, shown, b"job cancelled", timeout=60)
        assert watch.wait(timeout=30) == 3
    finally:
        watch.kill()
        os.close(terminal)
    text = shown.decode(errors="replace")
    assert re.search(r"\r\x1b\[2Kepoch \d+/1000 \[[#-]{24}\] \d+/45  ETA \d+:\d\d", text), text[
        -800:
    ]
    assert "job cancelled: cancelled by request at epoch" in text
    again = fitserve("cancel", job_id, env=env)
    assert again.returncode == 2 and "already ended: cancelled" in again.stderr


TABULAR = {
    "name": "shapes",
    "dataset": {"name": "iris"},
    "model": {"preset": {"name": "mlp", "hidden_units": [16]}},
    "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "fit": {"epochs": 2, "validation_split": 0.2},
}


def test_datasets_and_submit_with_data(
    env: dict[str, str], tmp_path: Path, service: Service
) -> None:
    """Through `fitserve-client` (fitserve_client.cli), the command of machines with the SDK alone."""
    rows = ["width,height,kind"] + [
        f"{a:.3f},{b:.3f},{'round' if a * a + b * b < 1 else 'long'}"
        for a, b in np.random.default_rng(1).normal(size=(120, 2))
    ]
    (tmp_path / "shapes.csv").write_text("\n".join(rows) + "\n")
    client = "fitserve_client.cli"
    uploaded = fitserve("datasets", "upload", str(tmp_path / "shapes.csv"), env=env, command=client)
    dataset_id = uploaded.stdout.strip()
    assert uploaded.returncode == 0 and dataset_id.startswith("ds_"), uploaded.stderr
    assert "shapes.csv: 120 samples, input [2], classification" in uploaded.stderr
    listed = fitserve("datasets", "list", env=env, command=client)
    assert re.search(
        rf"^{dataset_id}\s+shapes\.csv\s+uploaded\s+classification\s+2\s+120$", listed.stdout, re.M
    )
    spec = tmp_path / "spec.json"  # on iris, unless --data says otherwise
    spec.write_text(json.dumps(TABULAR))
    data = ("--data", str(tmp_path / "shapes.csv"), "--target", "kind")
    trained = fitserve("submit", str(spec), *data, "--watch", env=env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "uploaded" in trained.stderr and trained.stdout.splitlines()[-1].startswith(
        "job succeeded"
    )
    with service.client() as http:
        job = http.get(f"/v1/jobs/{trained.stdout.splitlines()[0]}").json()
    assert job["spec"]["dataset"]["target"] == "kind" and job["spec"]["dataset"]["id"].startswith(
        "ds_"
    )
    deleted = fitserve("datasets", "delete", dataset_id, env=env, command=client)
    assert (
        deleted.returncode == 0 and dataset_id not in fitserve("datasets", "list", env=env).stdout
    )
    gone = fitserve("datasets", "delete", dataset_id, env=env, command=client)
    assert gone.returncode == 2 and "not found" in gone.stderr

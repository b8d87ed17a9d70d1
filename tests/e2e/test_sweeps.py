"""Sweeps through the real service (API, worker, each backend): a random-search ASHA sweep of 8
trials on digits prunes at least one trial, and its best trial beats or equals the base spec's
validation accuracy; its trials are ordinary jobs; a bad space is a 422 naming its path; cancel
stops the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Service, wait_for
from tests.e2e.http import example

TERMINAL_JOB = ("succeeded", "failed", "cancelled", "pruned")


def _base() -> dict[str, Any]:
    """digits_mlp with a learning rate too small for its 9 epochs: the sweep's to find a better."""
    raw = example("digits_mlp")
    raw["fit"] |= {"epochs": 9}
    raw["compile"]["optimizer"] = {"type": "adam", "learning_rate": 0.0001}
    raw["model"]["layers"][1]["units"] = 64
    return raw


def _sweep(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "digits-asha",
        "base": _base(),
        "space": {
            "compile.optimizer.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 0.01},
            "model.layers.1.units": {"type": "choice", "values": [32, 64, 256]},
        },
        "sampler": {"type": "random", "seed": 7},
        "pruner": {"type": "asha", "min_resource": 1, "reduction_factor": 3},
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "max_trials": 8,
        "parallelism": 2,
    } | overrides


def _until_ended(client: httpx.Client, sweep_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] != "running":
            return sweep  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} still running after {timeout}s: {sweep}")


def test_an_asha_sweep_prunes_and_its_best_trial_beats_the_base(service: Service) -> None:
    with service.client() as client:
        base = client.post("/v1/jobs", json=_base()).json()
        created = client.post("/v1/sweeps", json=_sweep())
        assert created.status_code == 201, created.text
        sweep = _until_ended(client, created.json()["id"], timeout=600)
        base_job = wait_for(client, base["id"], TERMINAL_JOB, timeout=120)
        listed = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert sweep["status"] == "succeeded", sweep
    trials = sweep["trials"]
    assert len(trials) == 8 and sweep["trials_finished"] == 8
    statuses = [t["status"] for t in trials]
    assert "pruned" in statuses and set(statuses) <= {"succeeded", "pruned"}, trials
    pruned = next(t for t in trials if t["status"] == "pruned")
    assert pruned["reason"].startswith("pruned by the sweep's asha pruner after epoch ")
    assert pruned["epoch"] < 9  # it stopped before the base's epochs
    best = sweep["best"]
    assert best["value"] >= base_job["metrics"]["val_accuracy"], (best, base_job["metrics"])
    assert best["value"] == max(t["value"] for t in trials if t["status"] == "succeeded")
    assert best["spec"]["model"]["layers"][1]["units"] == best["params"]["model.layers.1.units"]
    # each trial is an ordinary job in the job list
    assert {t["job_id"] for t in trials} <= {j["id"] for j in listed}


def test_a_bad_space_is_refused_naming_its_path(service: Service) -> None:
    with service.client() as client:
        answer = client.post(
            "/v1/sweeps",
            json=_sweep(space={"model.layers.7.units": {"type": "choice", "values": [8]}}),
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][:3] == ["body", "space", "model.layers.7.units"]


def test_cancel_stops_the_sweep_and_its_trials(service: Service) -> None:
    slow = _sweep(max_trials=20, parallelism=1, pruner={"type": "none"})
    slow["base"]["fit"]["epochs"] = 500
    with service.client() as client:
        sweep = client.post("/v1/sweeps", json=slow).json()
        deadline = time.monotonic() + 60
        while not sweep["trials"] and time.monotonic() < deadline:
            time.sleep(0.2)
            sweep = client.get(f"/v1/sweeps/{sweep['id']}").json()
        cancelled = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        job = wait_for(client, sweep["trials"][0]["job_id"], TERMINAL_JOB, timeout=60)
        again = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
        time.sleep(2)  # a few ticks: no trial starts after the cancel
        after = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert job["status"] == "cancelled"
    assert again.status_code == 409
    assert len(after["trials"]) == 1 and after["trials_created"] == 1


def test_the_cli_and_the_sdk_run_and_read_a_grid_sweep(service: Service, tmp_path: Path) -> None:
    from fitserve_client import Client

    grid = _sweep(
        space={"model.layers.1.units": {"type": "choice", "values": [16, 32]}},
        sampler={"type": "grid"},
        pruner={"type": "none"},
    )
    grid["base"]["fit"]["epochs"] = 2
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps(grid))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITSERVE_")} | {
        "FITSERVE_URL": service.url,
        "FITSERVE_API_KEY": service.keys["a"],
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "sweep", "start", str(spec), "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sweep_id, header, *rows = done.stdout.strip().splitlines()
    assert header.split()[:4] == ["TRIAL", "STATUS", "val_accuracy", "EPOCHS"]
    assert sorted(row.split()[-1] for row in rows) == ["16", "32"]  # each grid point once
    with Client(service.url, service.keys["a"]) as fs:
        sweep = fs.sweeps.get(sweep_id)
        listed = fs.sweeps.list(status="succeeded").data
    assert sweep.status == "succeeded" and sweep.best is not None
    assert sweep.best.value == max(t.value for t in sweep.trials if t.value is not None)
    assert sweep_id in {s.id for s in listed}

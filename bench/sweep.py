"""What pruning saves: a 16-trial ASHA sweep on digits against the same 16 trials without pruning,
through a real `fitserve up` (embedded database and broker, one worker). Both sweeps draw the
same trials (a seeded random sampler draws trial n from the sweep's seed and n), so the only
difference is the pruner. Printed: wall time from the POST to the sweep's end, epochs trained
over all trials, trials pruned, and the best validation accuracy, side by side.

    PYTHONPATH=. .venv/bin/python bench/sweep.py [--trials 16] [--epochs 9] [--parallelism 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def sweep_body(
    trials: int, epochs: int, parallelism: int, pruner: dict[str, Any]
) -> dict[str, Any]:
    base = json.loads((ROOT / "examples" / "digits_mlp.json").read_text())
    base["fit"] |= {"epochs": epochs}
    return {
        "name": f"bench-{pruner['type']}",
        "base": base,
        "space": {
            "compile.optimizer.learning_rate": {"type": "loguniform", "low": 1e-5, "high": 0.3},
            "model.layers.1.units": {"type": "choice", "values": [16, 64, 256]},
        },
        "sampler": {"type": "random", "seed": 11},
        "pruner": pruner,
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "max_trials": trials,
        "parallelism": parallelism,
    }


def run(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    created = client.post("/v1/sweeps", json=body)
    created.raise_for_status()
    sweep_id = created.json()["id"]
    while (sweep := client.get(f"/v1/sweeps/{sweep_id}").json())["status"] == "running":
        time.sleep(0.25)
    sweep["wall_s"] = time.perf_counter() - started
    return sweep  # type: ignore[no-any-return]


def ready(url: str, data: Path) -> bool:
    try:
        return (data / "api_key").exists() and httpx.get(f"{url}/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--parallelism", type=int, default=1)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="fitserve-bench-sweep-"))
    port = 8600 + os.getpid() % 300
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITSERVE_")}
    env |= {"FITSERVE_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    log = (data / "service.log").open("wb")
    up = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not ready(url, data):
            if time.monotonic() > deadline or up.poll() is not None:
                raise SystemExit(f"the service did not start; see {data / 'service.log'}")
            time.sleep(0.3)
        key = (data / "api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            asha = {"type": "asha", "min_resource": 1, "reduction_factor": 3}
            results = {
                name: run(client, sweep_body(args.trials, args.epochs, args.parallelism, pruner))
                for name, pruner in (("no pruning", {"type": "none"}), ("asha", asha))
            }
    finally:
        up.terminate()
        up.wait(timeout=60)
    print(
        f"{args.trials} trials of digits_mlp, {args.epochs} epochs each, parallelism "
        f"{args.parallelism}, one worker (embedded service)"
    )
    print(f"{'':12}{'wall s':>9}{'epochs':>8}{'pruned':>8}{'best val_accuracy':>19}")
    for name, sweep in results.items():
        epochs = sum(t["epoch"] for t in sweep["trials"])
        pruned = sum(t["status"] == "pruned" for t in sweep["trials"])
        best = sweep["best"]["value"] if sweep["best"] else float("nan")
        print(f"{name:12}{sweep['wall_s']:9.1f}{epochs:8d}{pruned:8d}{best:19.4f}")
    plain, asha_run = results["no pruning"], results["asha"]
    print(
        f"time saved by pruning: {1 - asha_run['wall_s'] / plain['wall_s']:.0%} "
        f"({plain['wall_s']:.1f} s -> {asha_run['wall_s']:.1f} s)"
    )


if __name__ == "__main__":
    main()

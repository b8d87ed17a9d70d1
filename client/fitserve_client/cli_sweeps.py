"""`fitserve sweep ...`: start a hyperparameter sweep from a JSON file, show its trials and best,
list sweeps, cancel one. Part of the remote commands (cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fitserve_client import files
from fitserve_client.client import Client
from fitserve_client.types import Sweep


def cmd_sweep(args: argparse.Namespace, fs: Client) -> int:
    if args.action == "start":
        body = json.load(sys.stdin) if str(args.file) == "-" else json.loads(args.file.read_text())
        sweep = fs.sweeps.create(body.pop("base"), body.pop("space"), **body)
        print(sweep.id, flush=True)
        if not args.wait:
            return 0
        sweep = fs.sweeps.wait(sweep.id)
        show(sweep)
        return 0 if sweep.status == "succeeded" else 1
    if args.action == "show":
        show(fs.sweeps.get(args.sweep))
    elif args.action == "cancel":
        print(f"{args.sweep}: {fs.sweeps.cancel(args.sweep).status}")
    else:
        rows = [
            [s.id, s.name, s.status, f"{s.trials_finished}/{s.trial_budget}", _best(s)]
            for s in fs.sweeps.list(limit=100).data
        ]
        files.write_table(sys.stdout, ["ID", "NAME", "STATUS", "TRIALS", "BEST"], rows)
    return 0


def _best(sweep: Sweep) -> str:
    return "-" if sweep.best is None else f"{sweep.best.value:.6g}"


def show(sweep: Sweep) -> None:
    """The trials as a table on stdout; the sweep's state and best on stderr."""
    paths = list(sweep.spec.get("space", {}))
    rows = [
        [t.number, t.status, "-" if t.value is None else f"{t.value:.6g}", t.epoch]
        + [json.dumps(t.params.get(p)) for p in paths]
        for t in sweep.trials
    ]
    files.write_table(
        sys.stdout, ["TRIAL", "STATUS", sweep.objective.metric, "EPOCHS", *paths], rows
    )
    best = sweep.best
    summary = f"{sweep.id}: {sweep.status}; {sweep.trials_finished}/{sweep.trial_budget} trials"
    if best is not None:
        summary += (
            f"; best: trial {best.trial} ({best.job_id}) {sweep.objective.metric} {best.value:.6g}"
        )
    print(summary, file=sys.stderr)


def add_actions(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> Any:
    actions = p.add_subparsers(dest="action", required=True)
    start = actions.add_parser(
        "start",
        parents=[common],
        help="start a sweep from a JSON file (- for stdin); prints its id",
    )
    start.add_argument("file", type=Path, help="the sweep: base, space, sampler, pruner...")
    start.add_argument(
        "--wait", action="store_true", help="then wait and show it; exit 0 if it succeeded"
    )
    show_p = actions.add_parser("show", parents=[common], help="a sweep's trials and its best")
    show_p.add_argument("sweep")
    stop = actions.add_parser("cancel", parents=[common], help="end a sweep and cancel its trials")
    stop.add_argument("sweep")
    actions.add_parser("list", parents=[common], help="the sweeps, newest first")
    return actions

"""The `fitserve` command: train and validate in-process, the service commands (cli/service.py)
and the remote commands against a running service (the SDK's, fitserve_client/cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fitserve_client.cli import add_commands as add_remote_commands
from pydantic import ValidationError
from rich.console import Console

from core.settings import get_settings
from core.spec import JobSpec


def load_spec(path: Path) -> JobSpec:
    return JobSpec.model_validate(json.loads(path.read_text()))


def format_validation(exc: ValidationError) -> str:
    return "\n".join(
        f"  {'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from cli.progress import RichProgress, metrics_table
    from core.datasets import DatasetError, load_file
    from models.errors import SpecError
    from worker.datasource import load_train_data, train_data
    from worker.training.engine import TrainingFailed, train

    console = Console(stderr=True)
    try:
        spec = load_spec(args.spec)
        data = (
            train_data(spec, load_file(args.data, target=args.target, task=spec.dataset.task))
            if args.data
            else load_train_data(spec)
        )
    except ValidationError as exc:
        console.print(f"[red]invalid spec {args.spec}:[/]\n{format_validation(exc)}")
        return 2
    except (DatasetError, OSError, json.JSONDecodeError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    out = (
        args.out
        or get_settings().runs_dir
        / f"{spec.name.replace(' ', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    try:
        result = train(
            spec, data, out, [RichProgress(console)], resume=args.resume, device=args.device
        )
    except SpecError as exc:
        console.print(f"[red]invalid spec at {'.'.join(map(str, exc.loc))}: {exc}[/]")
        return 2
    except TrainingFailed as exc:
        console.print(f"[red]training failed: {exc}[/]")
        return 1
    table_console = Console()
    if not table_console.is_terminal:
        table_console = Console(width=200)  # a pipe or a log file: never cut a column
    table_console.print(metrics_table(result.history, result.test_metrics))
    console.print(f"{result.status} after {result.epochs_done} epochs")
    print(f"checkpoint: {result.model_path.resolve() if result.model_path else None}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from core.datasets import load_dataset
    from models.errors import SpecError
    from models.validation import dry_run

    try:
        spec = load_spec(args.spec)
        report = dry_run(spec, load_dataset(spec.dataset, spec.fit.seed).info())
    except ValidationError as exc:
        print(f"invalid spec {args.spec}:\n{format_validation(exc)}", file=sys.stderr)
        return 2
    except SpecError as exc:
        print(f"invalid spec at {'.'.join(map(str, exc.loc))}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fitserve", description="Training as a service, in the Keras vocabulary."
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a job spec in this process")
    t.add_argument("spec", type=Path)
    t.add_argument(
        "--data", type=Path, help="a CSV or NPZ file to train on instead of the spec's dataset"
    )
    t.add_argument("--target", help="the CSV column to predict (default: the last)")
    t.add_argument(
        "--out", type=Path, help="run directory (default: $FITSERVE_DATA_DIR/runs/<name>-<time>)"
    )
    t.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    t.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    t.set_defaults(run=_cmd_train)
    v = sub.add_parser(
        "validate", help="check a spec against its dataset and print the dry-run report"
    )
    v.add_argument("spec", type=Path)
    v.set_defaults(run=_cmd_validate)
    from cli.service import add_commands

    add_commands(sub)
    add_remote_commands(sub)  # login, submit, jobs, watch, metrics, predict, cancel, datasets
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "data_dir", None) is not None:
        os.environ["FITSERVE_DATA_DIR"] = str(args.data_dir)  # before the settings are first read
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

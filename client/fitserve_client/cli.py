"""The remote commands, for `fitserve` (the server's command adds them) and `fitserve-client`:
login, submit, jobs, watch, metrics, predict, cancel, datasets.

Exit codes, so scripts can chain them:
  0  done; for submit --watch and watch: the job succeeded
  1  the job failed, or the service could not be reached or failed itself (5xx, 429 after retries)
  2  a usage error: bad arguments, an unreadable file, a request the API refused (401, 404, 409,
     413, 422)
  3  the job was cancelled, or pruned by its sweep (stopped early, not failed)
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pydantic

from fitserve_client import cli_models, cli_sweeps, files
from fitserve_client.client import DEFAULT_TIMEOUT, Client
from fitserve_client.config import DEFAULT_URL, resolve, save_config
from fitserve_client.errors import AuthenticationError, FitserveError, ValidationError
from fitserve_client.jobs import load_spec
from fitserve_client.progress import ProgressPrinter
from fitserve_client.types import TERMINAL, JobStatus

EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 1, 2, 3
EXIT_BY_STATUS = {
    "succeeded": 0,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "pruned": EXIT_CANCELLED,
}
Command = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def guarded(command: Command) -> Command:
    """Errors as a message on stderr and the documented exit code, never a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ValidationError as exc:
            _err("refused:\n" + "\n".join(f"  {line}" for line in exc.message.split("; ")))
            return EXIT_USAGE
        except FitserveError as exc:
            _err(f"error: {exc}")
            usage = exc.status is not None and 400 <= exc.status < 500 and exc.status != 429
            return EXIT_USAGE if usage else EXIT_FAILED
        except pydantic.ValidationError as exc:  # an answer this client cannot read
            _err(f"error: unexpected answer from the service: {exc}")
            return EXIT_FAILED
        except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as Python advises
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED
        except (OSError, ValueError) as exc:  # a file that cannot be read, bad JSON
            _err(f"error: {exc}")
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130

    return run


def client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.api_key, timeout=args.timeout)


def watch_job(fs: Client, job_id: str) -> int:
    printer = ProgressPrinter(sys.stdout)
    with fs.jobs.stream(job_id) as events:
        for event in events:
            printer(event)
    return EXIT_BY_STATUS.get(fs.jobs.get(job_id).status, EXIT_FAILED)


def cmd_login(args: argparse.Namespace) -> int:
    url = args.url or resolve().url
    key = args.api_key
    if not key:
        key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        _err("error: no API key given")
        return EXIT_USAGE
    if not args.no_check:
        with Client(url, key, timeout=args.timeout, max_retries=1) as fs:
            try:
                fs.jobs.list(limit=1)
            except AuthenticationError:
                _err(f"error: {url} refused this API key; nothing saved")
                return EXIT_USAGE
    path = save_config(url, key)
    print(f"logged in to {url}; saved to {path}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    spec = json.load(sys.stdin) if str(args.spec) == "-" else args.spec
    if args.priority is not None or args.device is not None:  # the spec's own, overridden
        spec = load_spec(spec)
        if args.priority is not None:
            spec["priority"] = args.priority
        if args.device is not None:
            spec["resources"] = {**spec.get("resources", {}), "device": args.device}
    with client(args) as fs:
        dataset = None
        if args.data:
            dataset = fs.datasets.upload(args.data, target=args.target, task=args.task)
            _err(f"uploaded {args.data} as {dataset.id}")
        job = fs.jobs.submit(spec, dataset=dataset)
        print(job.id, flush=True)
        return watch_job(fs, job.id) if args.watch else 0


def cmd_watch(args: argparse.Namespace) -> int:
    with client(args) as fs:
        return watch_job(fs, args.job)


def cmd_jobs(args: argparse.Namespace) -> int:
    with client(args) as fs:
        page = fs.jobs.list(status=args.status, limit=args.limit)
    rows = [
        [
            j.id,
            j.name,
            j.status,
            f"{j.progress.epoch}/{j.progress.epochs}",
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            j.reason,
        ]
        for j in page.data
    ]
    files.write_table(sys.stdout, ["ID", "NAME", "STATUS", "EPOCH", "CREATED", "REASON"], rows)
    if page.count > len(page.data):
        _err(f"{len(page.data)} of {page.count} jobs (--limit for more)")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    with client(args) as fs:
        points = fs.jobs.metrics(args.job, name=args.name)
    if args.csv:
        files.write_metrics_csv(sys.stdout, points)
    elif args.name:
        rows = [[p.epoch, p.step, p.attempt, f"{p.value:.6g}"] for p in points]
        files.write_table(sys.stdout, ["epoch", "step", "attempt", args.name], rows)
    else:
        files.write_table(sys.stdout, *files.epoch_table(points))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    instances = files.read_instances(args.file)
    fields = {k: v for k, v in (("count", args.count), ("seed", args.seed)) if v is not None}
    with client(args) as fs:
        answer = fs.models.predict(
            args.job, instances, version=args.version, operation=args.operation, **fields
        )
    print(json.dumps(files.jsonable(answer.model_dump(exclude_none=True))))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with client(args) as fs:
        return cli_models.cmd_models(args, fs)


def cmd_sweep(args: argparse.Namespace) -> int:
    with client(args) as fs:
        return cli_sweeps.cmd_sweep(args, fs)


def cmd_cancel(args: argparse.Namespace) -> int:
    with client(args) as fs:
        job = fs.jobs.cancel(args.job)
    print(f"{job.id}: {job.status if job.status in TERMINAL else 'cancel requested'}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    with client(args) as fs:
        if args.action == "upload":
            ds = fs.datasets.upload(args.file, name=args.name, target=args.target, task=args.task)
            print(ds.id)
            _err(f"{ds.name}: {ds.samples} samples, input {ds.input_shape}, {ds.task}")
        elif args.action == "delete":
            fs.datasets.delete(args.dataset)
            _err(f"deleted {args.dataset}")
        else:
            rows = [
                [
                    d.id or "-",
                    d.name,
                    d.source,
                    d.task,
                    "x".join(map(str, d.input_shape)),
                    d.samples,
                ]
                for d in fs.datasets.list().data
            ]
            files.write_table(
                sys.stdout, ["ID", "NAME", "SOURCE", "TASK", "INPUT", "SAMPLES"], rows
            )
    return 0


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help=f"the service (default: $FITSERVE_URL, the login file, {DEFAULT_URL})"
    )
    common.add_argument("--api-key", help="default: $FITSERVE_API_KEY, then the login file")
    common.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request and per read"
    )
    return common


def _dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="the CSV column to predict (default: the last)")
    p.add_argument("--task", choices=["classification", "regression"], help="default: inferred")


def add_commands(sub: Any) -> None:
    """Add the remote commands to an argparse subparsers object (`add_subparsers()`)."""
    c = _common()

    def command(name: str, run: Command, help: str, common: bool = True) -> argparse.ArgumentParser:
        parents = [c] if common else []
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=parents, help=help, description=help
        )
        p.set_defaults(run=guarded(run))
        return p

    p = command("login", cmd_login, "save the service's URL and an API key (file mode 0600)")
    p.add_argument("--no-check", action="store_true", help="save without trying the key")
    p = command("submit", cmd_submit, "submit a job spec to the service; prints the job's id")
    p.add_argument("spec", type=Path, help="a job spec (JSON), or - for stdin")
    p.add_argument("--data", type=Path, help="a .csv or .npz file to upload and train on")
    _dataset_options(p)
    p.add_argument("--watch", action="store_true", help="then follow it; exit as `watch` does")
    p.add_argument("--priority", type=int, help="0-9, higher first (the spec's `priority`)")
    p.add_argument(
        "--device", choices=("cpu", "cuda", "any"), help="the spec's resources.device: its queue"
    )
    p = command("jobs", cmd_jobs, "list the jobs, newest first")
    p.add_argument("--status", choices=get_args(JobStatus), help="only jobs in this status")
    p.add_argument("--limit", type=int, default=20)
    p = command("watch", cmd_watch, "follow a job: a line per epoch; exit 0 if it succeeded")
    p.add_argument("job")
    p = command("metrics", cmd_metrics, "a job's metrics: a table per epoch, or every point")
    p.add_argument("job")
    p.add_argument("--name", help="only this metric (loss, val_accuracy, step_loss...)")
    p.add_argument("--csv", action="store_true", help="every point as CSV")
    p = command("predict", cmd_predict, "run a model on a .json/.csv/.npy file")
    p.add_argument("job", help="a succeeded job's id, or a registered model's name")
    p.add_argument("--version", help="a registered model's version number or alias")
    p.add_argument("file", type=Path)
    p.add_argument("--operation", help="the family's operation (default: its first)")
    p.add_argument("--count", type=int, help="sample / generate: how many")
    p.add_argument("--seed", type=int, help="sample / generate: a seed")
    p = command("cancel", cmd_cancel, "cancel a job")
    p.add_argument("job")
    # --url and the like go after the action (`datasets list --url ...`), so only there.
    p = command("datasets", cmd_datasets, "uploaded datasets: upload, list, delete", common=False)
    actions = p.add_subparsers(dest="action", required=True)
    up = actions.add_parser("upload", parents=[c], help="upload a .csv or .npz file; prints its id")
    up.add_argument("file", type=Path)
    up.add_argument("--name", help="default: the file's name")
    _dataset_options(up)
    actions.add_parser("list", parents=[c], help="the built-in datasets and the uploads")
    rm = actions.add_parser("delete", parents=[c], help="delete an uploaded dataset")
    rm.add_argument("dataset")
    p = command(
        "models", cmd_models, "registered models: register, alias, show, list", common=False
    )
    cli_models.add_actions(p, c)
    p = command(
        "sweep", cmd_sweep, "hyperparameter sweeps: start, show, list, cancel", common=False
    )
    cli_sweeps.add_actions(p, c)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fitserve-client", description="Fitserve's remote commands, against a running service."
    )
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

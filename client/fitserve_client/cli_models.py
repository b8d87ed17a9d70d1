"""`fitserve models ...`: register a succeeded job under a name, list and show names, move an
alias (`production`, `staging`...). Part of the remote commands (cli.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fitserve_client import files
from fitserve_client.client import Client


def cmd_models(args: argparse.Namespace, fs: Client) -> int:
    if args.action == "register":
        version = fs.models.register(args.name, args.job, aliases=args.alias or ())
        print(version.version)
        aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
        print(
            f"{version.name} version {version.version}: {version.job_id}{aliases}", file=sys.stderr
        )
    elif args.action == "alias":
        model = fs.models.set_alias(args.name, args.alias, args.version)
        print(f"{model.name}: {args.alias} -> version {model.aliases[args.alias]}", file=sys.stderr)
    elif args.action == "show":
        model = fs.models.get(args.name)
        rows = [
            [v.version, v.job_id or "(deleted)", v.job_status or "-", ",".join(v.aliases)]
            for v in model.versions or []
        ]
        files.write_table(sys.stdout, ["VERSION", "JOB", "STATUS", "ALIASES"], rows)
    else:
        page = fs.models.list(limit=100)
        rows = [
            [m.name, m.latest_version or "-", ",".join(f"{a}={v}" for a, v in m.aliases.items())]
            for m in page.data
        ]
        files.write_table(sys.stdout, ["NAME", "LATEST", "ALIASES"], rows)
    return 0


def add_actions(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> Any:
    actions = p.add_subparsers(dest="action", required=True)
    reg = actions.add_parser(
        "register", parents=[common], help="a succeeded job as the next version; prints it"
    )
    reg.add_argument("name")
    reg.add_argument("job")
    reg.add_argument("--alias", action="append", help="move this alias to it (repeatable)")
    alias = actions.add_parser("alias", parents=[common], help="create or move an alias")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)
    show = actions.add_parser("show", parents=[common], help="a model's versions and aliases")
    show.add_argument("name")
    actions.add_parser("list", parents=[common], help="the registered models")
    return actions

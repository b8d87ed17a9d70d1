"""docker-compose.yml cannot start here (no Docker engine): read it against the settings
and the command line instead, so it stays honest."""

from __future__ import annotations

from pathlib import Path

import yaml

from cli.main import parser
from core.settings import Settings

COMPOSE = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text()
)
FIELDS = {
    f"FITSERVE_{(field.alias or name).removeprefix('FITSERVE_').upper()}"
    for name, field in Settings.model_fields.items()
}


def test_every_fitserve_variable_is_a_setting() -> None:
    for name, service in COMPOSE["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("FITSERVE_"):
                assert variable in FIELDS, (name, variable)


def test_every_fitserve_command_parses() -> None:
    commands = [
        s["command"]
        for s in COMPOSE["services"].values()
        if s.get("command", [""])[0] == "fitserve"
    ]
    assert len(commands) == 4  # migrate, api, worker, worker-gpu
    for command in commands:
        parser().parse_args(command[1:])


def test_the_stack_shares_artifacts_and_waits_for_migrations() -> None:
    services = COMPOSE["services"]
    for name in ("api", "worker", "worker-gpu"):
        assert "artifacts:/data" in services[name]["volumes"]
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
        assert services[name]["environment"]["FITSERVE_DATA_DIR"] == "/data"
    assert services["migrate"]["command"] == ["fitserve", "db", "upgrade"]
    gpu = services["worker-gpu"]
    assert (
        gpu["profiles"] == ["gpu"]
        and gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    )
    assert all("healthcheck" in services[s] for s in ("postgres", "redis", "api"))
    # each pool serves its own device kind's queue: cuda jobs land on the GPU worker only
    queues = {name: services[name]["command"] for name in ("worker", "worker-gpu")}
    assert queues["worker"][2:4] == ["--queues", "cpu"], queues
    assert queues["worker-gpu"][2:4] == ["--queues", "cuda"], queues

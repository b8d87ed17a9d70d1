"""The docs against the code they describe: the spec's field reference is regenerated and compared,
every route, setting, metric series, log field, bench, fault test, command and import rule is
checked to be in its page, every relative link resolves, and nothing points outside the repository."""

from __future__ import annotations

import ast
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from cli.main import parser
from cli.spec_docs import job_schema, render, slug, spliced
from core.logging import JobContextFilter, JsonFormatter, bind_job
from core.settings import Settings
from core.spec import JobSpec
from models.families import OPERATION_NAMES
from tests.test_layout import ALLOWED

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SPEC, API, OPERATIONS, ARCHITECTURE = (
    DOCS / f"{n}.md" for n in ("spec", "api", "operations", "architecture")
)
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def text(path: Path) -> str:
    return path.read_text()


def code_spans(document: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", document))


# -- spec.md ---------------------------------------------------------------------------------


class TestSpecDoc:
    def test_the_field_reference_is_the_one_the_schema_generates(self) -> None:
        current = text(SPEC)
        assert spliced(current, render()) == current, (
            "docs/spec.md is out of date: run python -m cli.spec_docs"
        )

    def test_every_field_of_every_object_in_the_schema_is_named(self) -> None:
        """Walked here on its own, not through the generator: each property of each object, each
        variant of each union and each allowed value appears in the page."""
        schema = job_schema()
        spans = code_spans(text(SPEC))
        names = spans | {s.rsplit(".", 1)[-1] for s in spans}
        headings = set(re.findall(r"^#### `([^`]+)`$", text(SPEC), re.MULTILINE))
        missing = []
        for name, definition in {"JobSpec": schema, **schema["$defs"]}.items():
            for prop, sub in definition.get("properties", {}).items():
                if prop not in names:
                    missing.append(f"{name}.{prop}")
                if (
                    "const" in sub
                    and name.endswith(("Layer", "Preset", "Schedule"))
                    and sub["const"] not in headings
                ):
                    missing.append(f"{name}: heading {sub['const']}")
                for value in _enum_values(sub):
                    if str(value) not in spans:
                        missing.append(f"{name}.{prop} = {value}")
        assert not missing, missing

    def test_every_optimizer_type_has_its_heading(self) -> None:
        headings = set(re.findall(r"^#### `([^`]+)`$", text(SPEC), re.MULTILINE))
        assert {"sgd", "adagrad", "rmsprop", "adam", "adamw"} <= headings

    def test_every_json_example_is_a_valid_spec(self) -> None:
        blocks = re.findall(r"```json\n(.*?)```", text(SPEC), re.DOTALL)
        assert blocks
        for block in blocks:
            JobSpec.model_validate(json.loads(block))

    def test_every_example_file_is_named(self) -> None:
        document = text(SPEC)
        for path in sorted((ROOT / "examples").glob("*.json")):
            assert path.name in document, path.name

    def test_the_families_table_lists_each_family_s_predict_operations_in_order(self) -> None:
        table = text(SPEC).split("\n## Model families\n", 1)[1].split("\n## ", 1)[0]
        rows = {
            m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \|(.*)$", table, re.MULTILINE)
        }
        assert set(rows) == set(OPERATION_NAMES)
        for family, operations in OPERATION_NAMES.items():
            cells = [c.strip() for c in rows[family].split("|")]
            assert re.findall(r"`(\w+)`", cells[2]) == list(operations), (family, cells[2])


def _enum_values(schema: dict[str, Any]) -> list[Any]:
    found: list[Any] = list(schema.get("enum", []))
    for key in ("anyOf", "oneOf"):
        for alternative in schema.get(key, []):
            found += _enum_values(alternative)
    if isinstance(schema.get("items"), dict):
        found += _enum_values(schema["items"])
    return found


# -- api.md ----------------------------------------------------------------------------------


def _openapi() -> dict[str, Any]:
    from api.main import app

    return app.openapi()


def _route_sections() -> dict[tuple[str, str], str]:
    """(method, path) -> the text of its section, heading included."""
    document = text(API)
    found = {}
    parts = re.split(rf"^(?=### (?:{'|'.join(METHODS)}) )", document, flags=re.MULTILINE)
    for part in parts[1:]:
        heading = part.splitlines()[0].removeprefix("### ").split()
        section = re.split(r"^## ", part, flags=re.MULTILINE)[0]
        found[(heading[0], heading[1])] = section
    return found


class TestApiDoc:
    def test_the_page_and_the_openapi_schema_list_the_same_routes(self) -> None:
        routes = {(m.upper(), p) for p, ops in _openapi()["paths"].items() for m in ops}
        assert set(_route_sections()) == routes

    def test_each_route_section_names_its_parameters_body_fields_and_answers(self) -> None:
        schema = _openapi()
        sections = _route_sections()
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                section = sections[(method.upper(), path)]
                for parameter in op.get("parameters", []):
                    name = parameter["name"]
                    if name.lower() != "authorization":  # headers are case-insensitive
                        found = (
                            name.lower() in section.lower()
                            if parameter["in"] == "header"
                            else name in section
                        )
                        assert found, (method, path, name)
                for field in _body_fields(schema, op):
                    assert f"`{field}`" in section, (method, path, field)
                for code in op["responses"]:
                    if code != "422":  # FastAPI declares it for every route with a parameter
                        assert re.search(rf"\b{code}\b", section), (method, path, code)

    def test_every_route_named_in_the_prose_exists(self) -> None:
        routes = {(m.upper(), p) for p, ops in _openapi()["paths"].items() for m in ops}
        for page in PAGES:
            for method, path in re.findall(rf"`({'|'.join(METHODS)}) (/[^`?\s]*)", text(page)):
                assert (method, path) in routes, (page.name, method, path)


def _body_fields(schema: dict[str, Any], op: dict[str, Any]) -> list[str]:
    """A request body's top-level fields, unless the body is the job spec (docs/spec.md has those)."""
    for content in op.get("requestBody", {}).get("content", {}).values():
        body = content["schema"]
        if "$ref" in body:
            name = body["$ref"].rsplit("/", 1)[-1]
            if name == "JobSpec":
                return []
            body = schema["components"]["schemas"][name]
        return list(body.get("properties", {}))
    return []


# -- operations.md ---------------------------------------------------------------------------


def _setting_default(field: Any) -> str | None:
    """How the settings tables write a default; None: written `unset`."""
    value = field.default
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class TestOperationsDoc:
    def test_every_setting_has_a_row_with_its_default(self) -> None:
        rows = [line for line in text(OPERATIONS).splitlines() if line.startswith("| `FITSERVE_")]
        for name, field in Settings.model_fields.items():
            variable = f"FITSERVE_{(field.alias or name).removeprefix('FITSERVE_').upper()}"
            row = next((r for r in rows if r.startswith(f"| `{variable}` |")), None)
            assert row is not None, f"{variable} has no row in docs/operations.md"
            default = row.split("|")[2].strip()
            wanted = _setting_default(field)
            assert default == ("unset" if wanted is None else f"`{wanted}`"), (
                variable,
                default,
                wanted,
            )

    def test_every_metric_series_is_listed(self) -> None:
        source = (ROOT / "api" / "observability.py").read_text()
        series = set(re.findall(r'"(fitserve_[a-z_]+)"', source))
        assert len(series) >= 9
        document = text(OPERATIONS)
        for name in series:
            assert f"`{name}" in document, name

    def test_every_json_log_field_is_listed(self) -> None:
        try:
            raise ValueError("an error")
        except ValueError:
            record = logging.LogRecord(
                "fitserve.test", logging.ERROR, __file__, 1, "m", None, sys.exc_info()
            )
        record.stack_info = "a stack"
        bind_job("job_x", 1)
        try:
            JobContextFilter().filter(record)
        finally:
            bind_job(None)
        fields = json.loads(JsonFormatter().format(record))
        assert {
            "time",
            "level",
            "logger",
            "message",
            "job_id",
            "attempt",
            "exc_info",
            "stack_info",
        } == set(fields)
        spans = code_spans(text(OPERATIONS))
        for field in fields:
            assert field in spans, field

    def test_every_bench_is_described(self) -> None:
        document = text(OPERATIONS)
        for path in sorted((ROOT / "bench").glob("*.py")):
            assert f"`bench/{path.name}`" in document, path.name

    def test_every_fault_test_is_listed(self) -> None:
        document = text(OPERATIONS)
        for path in sorted((ROOT / "tests" / "faults").glob("test_*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                    assert f"`{path.name}::{node.name}`" in document, node.name

    def test_every_fitserve_command_is_described(self) -> None:
        commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        document = text(OPERATIONS)
        for command in commands:
            assert f"`fitserve {command}" in document, command


# -- architecture.md -------------------------------------------------------------------------


class TestArchitectureDoc:
    def test_the_import_rules_are_those_tests_test_layout_checks(self) -> None:
        table = text(ARCHITECTURE).split("### What may import what", 1)[1].split("\n\n")[2]
        rules = {}
        for row in table.splitlines()[2:]:
            package_cell, allowed_cell = row.strip("|").split("|")
            rules[re.findall(r"`([^`]+)`", package_cell)[0]] = set(
                re.findall(r"`([^`]+)`", allowed_cell)
            )
        assert rules == ALLOWED

    def test_the_layers_table_names_every_package(self) -> None:
        spans = code_spans(text(ARCHITECTURE))
        for package in (
            "core/",
            "models/",
            "worker/",
            "worker/training/",
            "api/",
            "cli/",
            "migrations/",
        ):
            assert package in spans, package


# -- every page ------------------------------------------------------------------------------


def _headings(document: str) -> set[str]:
    """GitHub's anchors of a page's headings (a repeated one gets -1, -2...)."""
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in document.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"^#{1,6} ", line):
            continue
        anchor = slug(line.lstrip("#"))
        count = seen.get(anchor, 0)
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
        seen[anchor] = count + 1
    return anchors


def _links(document: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", document, flags=re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    for link in _links(text(page)):
        if re.match(r"^[a-z]+:", link):
            continue  # a URL: nothing in these pages is one, and none would be checked here
        target, _, anchor = link.partition("#")
        path = (page.parent / unquote(target)).resolve() if target else page
        assert path.exists(), f"{page.name}: {link} does not exist"
        assert path.is_relative_to(ROOT), f"{page.name}: {link} is outside the repository"
        if anchor and path.suffix == ".md":
            assert anchor in _headings(path.read_text()), (
                f"{page.name}: {link} names no heading of {path.name}"
            )


def test_no_page_links_outside_the_repository() -> None:
    for page in PAGES:
        for link in _links(text(page)):
            assert not re.match(r"^[a-z]+:", link), f"{page.name}: {link}"


# What .gitignore keeps out, for a copy of the repository without git.
IGNORED = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".fitserve",
    "data",
    "runs",
    "build",
    "dist",
}


def _repository_files() -> list[Path]:
    """What git tracks, and what it would (new files that are not ignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return [
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and not (IGNORED & set(p.relative_to(ROOT).parts))
            and not any(part.endswith(".egg-info") for part in p.parts)
        ]
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_nothing_in_the_repository_points_outside_it() -> None:
    # Spelled in pieces, so this file does not find itself.
    needles = ("../" + "shared", "/" + "work/")
    offenders = []
    for path in _repository_files():
        try:
            content = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {n}" for n in needles if n in content]
    assert not offenders, offenders

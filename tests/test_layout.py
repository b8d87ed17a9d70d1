"""The import rules of docs/architecture.md ("What may import what"), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = {"api", "worker", "models", "core", "cli"}
OURS = SERVER | {"fitserve_client"}
# package -> the packages of ours it may import
ALLOWED = {
    "core": {"core"},
    # core.spec is the job spec's package: its layers, optimizers and families too
    "models": {"models", "core.spec"},
    "worker/training": {"worker.training", "models", "core.spec"},
    "worker": {"worker", "models", "core"},
    "api": {"api", "core", "models"},
    # The SDK is a distribution of its own, installed without the server: nothing of the server.
    "client/fitserve_client": {"fitserve_client"},
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in OURS}


def allowed(name: str, rules: set[str]) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in rules)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    if package == "worker":
        files = [f for f in files if "training" not in f.parts]
    assert files
    for path in files:
        for name in imports(path):
            # `from core import layers` names the module core.spec.layers; judge the module, not the
            # package. A bare server package (`import core`, for OMP_WAIT_POLICY) is allowed to the
            # server's packages, never to the SDK; `import fitserve_client` is always judged.
            if name in SERVER and not package.startswith("client"):
                continue
            assert allowed(name, ALLOWED[package]), f"{path.relative_to(ROOT)} imports {name}"


def test_the_wheel_holds_every_server_package(tmp_path: Path) -> None:
    """A non-editable install (the Docker image's) gets every package and the dashboard."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # Built from a copy: setuptools writes build/ and egg-info beside the sources it builds.
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "node_modules")
    shutil.copytree(ROOT, source, ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(source)], check=True, timeout=300, capture_output=True
    )
    (wheel,) = tmp_path.glob("fitserve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    ours = {
        str(init.parent.relative_to(ROOT))
        for top in sorted(SERVER)
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert packaged == ours
    assert any(n.startswith("api/dashboard/") and n.endswith(".js") for n in names)

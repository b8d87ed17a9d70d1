"""The dashboard's files, read as text: the page runs only scripts from its own files, no module
puts a string into the page as HTML or keeps the key anywhere but sessionStorage, every import
and asset resolves, the vendored library has its licence, and the wheel ships every file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from api.routes.dashboard import ROOT as DASHBOARD

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((DASHBOARD / "js").rglob("*.js"))
# What would put a string into the page as markup, or run one as code.
AS_HTML = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(")


def test_the_page_runs_only_its_own_script_files() -> None:
    page = (DASHBOARD / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert scripts and all(body.strip() == "" for _, body in scripts), "an inline script"
    assert all(re.search(r'src="/ui/[^"]+"', attributes) for attributes, _ in scripts)
    assert not re.search(r"\sstyle=", page) and not re.search(r"\son\w+=", page)
    for url in re.findall(r'(?:src|href)="/ui/([^"]+)"', page):
        assert (DASHBOARD / url).is_file(), url


def test_no_module_writes_markup_or_keeps_the_key_elsewhere() -> None:
    assert len(SCRIPTS) >= 10
    for path in SCRIPTS:
        source = path.read_text()
        for needle in (*AS_HTML, "localStorage", "document.cookie", 'setAttribute("style"'):
            assert needle not in source, f"{path.name}: {needle}"
        if path.name != "api.js":
            assert "sessionStorage" not in source, path.name  # one module holds the key


def test_every_import_resolves() -> None:
    for path in SCRIPTS:
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', path.read_text()):
            assert (path.parent / target).resolve().is_file(), f"{path.name}: {target}"


def test_the_vendored_charting_library_is_pinned_with_its_licence() -> None:
    (folder,) = (DASHBOARD / "vendor").iterdir()
    version = folder.name.removeprefix("uplot-")
    assert {p.name for p in folder.iterdir()} == {
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "LICENSE",
        "VERSION",
    }
    assert f"(v{version})" in (folder / "uPlot.iife.min.js").read_text()[:100]
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert f"npm pack uplot@{version}" in (folder / "VERSION").read_text()
    assert f"/ui/vendor/uplot-{version}/" in (DASHBOARD / "index.html").read_text()


def test_the_package_data_takes_every_dashboard_file() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    package = DASHBOARD.parent
    taken = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    assert taken == {p for p in DASHBOARD.rglob("*") if p.is_file()}

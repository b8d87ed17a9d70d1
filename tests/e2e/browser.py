"""What the dashboard's browser tests share: Chromium through Playwright (Debian's own browser at
/usr/bin/chromium, nothing downloaded), a page that records what must never happen (a dialog, a
script error, a Content-Security-Policy violation), and a submit as a user's script makes it."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fitserve_client import Client

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FITSERVE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = (
    Path(os.environ.get("FITSERVE_TEST_ARTIFACTS", ROOT / "tests" / "artifacts")) / "dashboard"
)
VIEWPORT = {"width": 1280, "height": 800}
# Every <script> of the page's documents sees a CSP violation as this event; kept for the test.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


def launch_chromium() -> Iterator[Any]:
    """Chromium under Playwright; without either the test fails (it never skips) and says what
    to install."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright for Python: pip install -e '.[dev]'")
    path = shutil.which(CHROMIUM) or CHROMIUM
    if not Path(path).exists():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium "
            "(or set FITSERVE_CHROMIUM to a Chromium binary)"
        )
    playwright = sync_playwright().start()
    try:
        # --no-sandbox: the tests may run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()
    finally:
        playwright.stop()


def submit(url: str, key: str, spec: dict[str, Any]) -> str:
    """Submit a job as a user's script would, through the SDK, and answer its id."""
    with Client(url, key) as fitserve:
        return fitserve.jobs.submit(spec).id


@dataclass
class Dashboard:
    """One signed-in browser page, and what it saw that it must not."""

    page: Any
    url: str
    key: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(
        default_factory=list
    )  # uncaught exceptions, CSP refusals in the console

    def open(self, route: str) -> None:
        self.page.goto(f"{self.url}/#{route}")

    def chart(self, chart_id: str) -> dict[str, Any] | None:
        """What a chart plots, read from the plot: {series: [{label, x, y}]}, or None."""
        found: dict[str, Any] | None = self.page.evaluate(
            "(id) => window.fitserveCharts.read(id)", chart_id
        )
        return found

    def series(self, chart_id: str, label: str) -> tuple[list[float], list[float]]:
        chart = self.chart(chart_id)
        for s in (chart or {}).get("series", []):
            if s["label"] == label:
                return s["x"], s["y"]
        return [], []

    def wait_series(
        self, chart_id: str, label: str, length: int, timeout: float = 20
    ) -> tuple[list[float], list[float]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            x, y = self.series(chart_id, label)
            if len(x) >= length:
                return x, y
            time.sleep(0.1)
        raise AssertionError(f"chart {chart_id}: {label} has {len(x)} points, not {length}")

    def draw_zero(self) -> None:
        """A 0 drawn on the try-the-model canvas with the mouse."""
        box = self.page.locator("canvas.sketch").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        mouse = self.page.mouse
        mouse.move(cx, cy - 95)
        mouse.down()
        for degrees in range(0, 375, 15):
            angle = math.radians(degrees)
            mouse.move(cx + 60 * math.sin(angle), cy - 95 * math.cos(angle))
        mouse.up()

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path))
        return path

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("() => window.__cspViolations || []")
        return found

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.errors == [], f"page errors: {self.errors}"
        assert self.violations() == [], f"CSP violations: {self.violations()}"


def api_series(client: httpx.Client, job_id: str, name: str, x: str) -> tuple[list, list]:
    """A metric's points as the API lists them: (their `x`: step or epoch, their values)."""
    points = client.get(f"/v1/jobs/{job_id}/metrics", params={"name": name}).json()["data"]
    return [p[x] for p in points], [p["value"] for p in points]


def new_dashboard(browser: Any, url: str, key: str) -> Dashboard:
    """A fresh browser context (its own sessionStorage), signed in through the sign-in form."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(20_000)
    dash = Dashboard(page, url, key)

    def on_dialog(dialog: Any) -> None:
        dash.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            dash.errors.append(message.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: dash.errors.append(f"uncaught: {error}"))
    page.goto(f"{url}/")
    page.fill("#key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("table.jobs")
    return dash

"""The dashboard's answers, without a browser, on the embedded service (static files): every one
(the page, its files, a missing file) carries the strict Content-Security-Policy and its companions; the page's own
files are revalidated, the vendored library's are immutable; none of it is in the OpenAPI
schema or takes a key."""

from __future__ import annotations

import httpx
import pytest

from api.routes.dashboard import CONTENT_SECURITY_POLICY
from tests.e2e.conftest import Service


@pytest.mark.parametrize("service", ["embedded"], indirect=True)  # static files: one backend
def test_every_dashboard_answer_carries_a_strict_content_security_policy(
    service: Service,
) -> None:
    index = httpx.get(f"{service.url}/")
    script = httpx.get(f"{service.url}/ui/js/main.js")
    vendor = httpx.get(f"{service.url}/ui/vendor/uplot-1.6.32/uPlot.iife.min.js")
    missing = httpx.get(f"{service.url}/ui/js/nothing.js")
    for answer in (index, script, vendor, missing):
        csp = answer.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY and "unsafe" not in csp, csp
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    assert (index.status_code, script.status_code, missing.status_code) == (200, 200, 404)
    assert index.headers["cache-control"] == script.headers["cache-control"] == "no-cache"
    assert vendor.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.head(f"{service.url}/").status_code == 200
    again = {"If-None-Match": script.headers["etag"]}
    assert httpx.get(f"{service.url}/ui/js/main.js", headers=again).status_code == 304
    # Nothing outside the dashboard's folder is served, however the path is spelled.
    for path in ("/ui/%2e%2e/routes/dashboard.py", "/ui/..%2fmain.py", "/ui/%2e%2e%2fmain.py"):
        assert httpx.get(f"{service.url}{path}").status_code == 404, path
    assert "/" not in httpx.get(f"{service.url}/openapi.json").json()["paths"]

"""`fitserve up` as a person runs it: in a terminal (a real pseudo-terminal here) it prints plain
log lines and the new local key once; Ctrl-C (SIGINT to the terminal's process group) stops the
API and its worker within seconds, saying so, and the running job is preempted; the next start
resumes it. With LOG_FORMAT=json, or with no terminal, the lines are JSON."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, _base_env, free_port
from tests.helpers import EXAMPLES

STOP_LIMIT_SECONDS = 15  # measured 1.9-2.2 s on 2 loaded cores; the bound leaves CI room


class Terminal:
    """`fitserve up` with a pseudo-terminal as its stdin, stdout and stderr, in its own session
    (as a shell's foreground job), so a Ctrl-C reaches it and its worker alike."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        master, child = pty.openpty()
        self.master, self.output = master, b""
        self.process = subprocess.Popen(
            [str(BIN / "fitserve"), "up", "--port", str(port)],
            env=env,
            stdin=child,
            stdout=child,
            stderr=child,
            start_new_session=True,
        )
        os.close(child)

    def read(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the other side closed: everything has been read
                    return

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def ctrl_c(self) -> float:
        """SIGINT to the process group, as the terminal sends it; the seconds until it exited."""
        began = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        while self.process.poll() is None and time.monotonic() - began < 60:
            self.read(0.1)
        self.read(0.3)
        return time.monotonic() - began

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.master)


def wait_ready(url: str, terminal: Terminal, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        terminal.read(0.3)
        assert terminal.process.poll() is None, terminal.text[-3000:]
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
    raise AssertionError(f"not ready in {timeout} s:\n{terminal.text[-3000:]}")


def job_row(data_dir: Path, job_id: str) -> tuple[str, int, int]:
    with sqlite3.connect(data_dir / "fitserve.db") as db:
        status, attempt, epoch = db.execute(
            "SELECT status, attempt, epoch FROM job WHERE id = ?", (job_id,)
        ).fetchone()
    return status, attempt, epoch


def until(terminal: Terminal, check, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, terminal.text[-3000:]
        terminal.read(0.3)


@pytest.mark.timeout(300)
def test_up_in_a_terminal_reads_plainly_stops_on_ctrl_c_and_resumes(tmp_path: Path) -> None:
    env = _base_env(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = Terminal(env, port)
    try:
        wait_ready(url, first)
        # /readyz can answer before the pty has handed over the startup lines: read until they come.
        until(first, lambda: "Application startup complete" in first.text, timeout=30)
        key = (tmp_path / "api_key").read_text().strip()
        # The key once, on the terminal; the logs as plain lines, not JSON.
        assert first.text.count(key) == 1
        lines = [line for line in first.text.splitlines() if " INFO " in line]
        assert any("uvicorn.error: Application startup complete" in line for line in lines)
        assert not any(line.lstrip().startswith("{") for line in first.text.splitlines())
        spec = json.loads((EXAMPLES / "digits_mlp.json").read_text())
        spec["fit"]["epochs"] = 500  # runs until it is stopped
        auth = {"Authorization": f"Bearer {key}"}
        job = httpx.post(f"{url}/v1/jobs", json=spec, headers=auth, timeout=60).json()
        until(first, lambda: job_row(tmp_path, job["id"])[2] >= 2)
        stopped_in = first.ctrl_c()
    finally:
        first.close()
    assert first.process.returncode == 0, first.text[-3000:]
    assert stopped_in < STOP_LIMIT_SECONDS, first.text[-3000:]
    assert "fitserve: stopping: the API is down" in first.text
    assert f"job {job['id']} attempt 1: preempted at epoch" in first.text
    assert "fitserve: stopped in" in first.text
    assert "Traceback" not in first.text  # a job handed back while stopping is no error
    status, attempt, epoch = job_row(tmp_path, job["id"])
    assert (status, attempt) == ("preempted", 1) and epoch >= 2

    # The next start resumes it; LOG_FORMAT=json makes the terminal's lines JSON, key not repeated.
    second = Terminal({**env, "LOG_FORMAT": "json"}, port)
    try:
        wait_ready(url, second)
        until(second, lambda: job_row(tmp_path, job["id"])[:2] == ("running", 2))
        cancel = httpx.post(f"{url}/v1/jobs/{job['id']}/cancel", headers=auth, timeout=60)
        assert cancel.status_code == 200, cancel.text
        until(second, lambda: job_row(tmp_path, job["id"])[0] == "cancelled")
        assert second.ctrl_c() < STOP_LIMIT_SECONDS
    finally:
        second.close()
    assert key not in second.text
    logs = [line for line in second.text.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in logs]
    assert any(r["message"] == "Application startup complete." for r in records)
    assert any(r.get("job_id") == job["id"] for r in records)
    resumed = [r["message"] for r in records if "resuming after epoch" in r["message"]]
    assert len(resumed) == 1 and f"job {job['id']} attempt 2" in resumed[0], resumed
    after = int(resumed[0].split("resuming after epoch ")[1].split(",")[0])
    assert 1 <= after <= epoch  # from its last checkpoint, not from the start

"""Training processes forked ahead of their jobs (worker/process.py), in a fresh interpreter: the
spare takes the next job, a new spare is forked as it does, and a spare that died meanwhile is
replaced by a fresh fork. (Forking pytest itself, after other tests ran torch, is not safe.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.db import session_scope
from core.tables import Job
from tests.helpers import digits_mlp
from tests.test_runner import _submit

SCENARIO = """
import logging, os, signal, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from worker import process
first_job, second_job = sys.argv[1:3]
process.prepare_spare()
spare = process._spare
print("spare", spare.pid, spare.alive())
print("first", process.run_in_child(first_job, "task1"))
replacement = process._spare
print("replacement", replacement.pid, replacement.pid != spare.pid, replacement.alive())
os.kill(replacement.pid, signal.SIGKILL)
while replacement.alive():  # a spare that died while it waited: reaped within moments
    time.sleep(0.01)
print("second", process.run_in_child(second_job, "task2"))
process.dismiss_spare()
print("dismissed", process._spare is None)
"""


def test_a_spare_takes_the_next_job_and_a_dead_one_is_replaced(
    service_env: str, tmp_path: Path
) -> None:
    jobs = [_submit(digits_mlp(epochs=1).model_dump(mode="json")) for _ in range(2)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, *jobs],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    spare_pid = said["spare"].split()[0]
    assert (
        said["spare"].endswith("True")
        and said["first"] == "succeeded"
        and said["second"] == "succeeded"
    )
    replacement_pid = said["replacement"].split()[0]
    assert said["replacement"].endswith("True True") and said["dismissed"] == "True"
    # The first job ran in the spare forked before it came; the second not in the killed replacement.
    assert f":{spare_pid}:task1" in done.stderr
    assert f":{replacement_pid}:task2" not in done.stderr and ":task2" in done.stderr
    with session_scope() as s:
        assert [s.get(Job, j).status for j in jobs] == ["succeeded", "succeeded"]  # type: ignore[union-attr]

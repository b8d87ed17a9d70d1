"""The Celery worker: `celery -A worker.celery_app worker`, or `fitserve worker`.

Training code is imported here, before the pool forks, so a job does not pay for
importing torch; each forked process makes its own database engine.
"""

from __future__ import annotations

import os
import socket

from core.queue import TRAIN_TASK, celery_app
from worker import runner
from worker.training import engine  # noqa: F401 - preloaded before fork

app = celery_app()


@app.task(name=TRAIN_TASK, bind=True, ignore_result=True)
def train_task(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    """Takes an id, never an object: the row is loaded (and claimed) by the runner."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    return runner.run_job(job_id, owner)

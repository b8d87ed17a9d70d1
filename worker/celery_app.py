"""The Celery worker: `celery -A worker.celery_app worker`, or `fitserve worker`.

Training code is imported here, before the pool forks, so a job does not pay for
importing torch; each forked process makes its own database engine.

Each job trains in a process forked from the pool process (`process.run_in_child`), so an
out-of-memory kill ends that attempt, not the worker; that process is forked ahead of its job and
warms the device up while none waits (a CUDA context costs seconds). Shutdown (SIGTERM to the worker): the main
process passes the signal on to its pool processes, and they to their training process, whose
running job stops at the next step and is preempted (re-queued, resumed elsewhere from
its last epoch checkpoint). The main process also runs the reaper/sweeper thread.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from core.queue import TRAIN_TASK, celery_app
from core.settings import get_settings
from worker import process
from worker.capacity import this_worker, worker_name
from worker.maintenance import Maintenance
from worker.reporter import STOPPING
from worker.training import engine  # noqa: F401 - preloaded before fork
from worker.training.task import FAMILIES


def preload() -> None:
    """Import, before the pool forks, what a job would otherwise import in its own training
    process every time: the first step's row came 2 s after the claim without this (scikit-learn's
    dataset loaders 1.1 s, torch._dynamo, which torch.optim imports for the first optimizer, 1.1 s).
    Imports only: nothing runs that would start torch's thread pools before a fork."""
    import sklearn.datasets  # noqa: F401
    import torch._dynamo  # noqa: F401

    for module in FAMILIES.values():
        importlib.import_module(module)


class _RejectWithoutTraceback(logging.Filter):
    """A job handed back by a stopping worker is expected, not an error: Celery's line about it
    stays (`reject requeue=True: the worker is shutting down`), its traceback goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], Reject):
            record.exc_info, record.exc_text = None, None
        return True


preload()
app = celery_app()
logging.getLogger("celery.app.trace").addFilter(_RejectWithoutTraceback())
_maintenance: list[Maintenance] = []


@app.task(name=TRAIN_TASK, bind=True, ignore_result=True)
def train_task(self, job_id: str, queue: str = process.NAMED) -> str:  # type: ignore[no-untyped-def]
    """A wake-up for `queue`: the training process claims the next job of that queue this worker
    can take (the database decides which; `job_id` names the job whose submit sent it). Ids only,
    never objects. A message from before queues has no `queue` and trains its own job."""
    # In the pool process, SIGTERM asks the running job to stop and be preempted (never kills it).
    # Installed here: billiard resets the pool process's handlers after worker_process_init.
    signal.signal(signal.SIGTERM, _stop_requested)
    if STOPPING.is_set():
        # This pool process is shutting down, yet was handed a job (the one it just preempted, as
        # often as not): back to the broker unclaimed, so no attempt is spent on a worker that stops.
        raise Reject("the worker is shutting down", requeue=True)
    return process.run_in_child(job_id, str(self.request.id), queue)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _stop_requested(*_: Any) -> None:
    STOPPING.set()


@worker_process_init.connect
def _on_pool_process(**_: Any) -> None:
    STOPPING.clear()  # a fresh pool process, forked from a main process that may be shutting down
    if get_settings().spare_training_process:
        process.prepare_spare()  # the first job's training process, warming up before it comes


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", None) or 1
    thread = Maintenance(settings, worker_name(), this_worker(settings), int(concurrency))
    thread.start()
    _maintenance.append(thread)


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    for thread in _maintenance:
        thread.stop()
    for pid in _children(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

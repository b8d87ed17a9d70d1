"""Training processes: each job trains in a process forked from its pool process, so a training
process killed (out of memory, SIGKILL) does not take its worker down: its lease is expired at
once with the reason, and the reaper re-queues the job. SIGTERM to the pool process is passed on:
the job is preempted.

The process is forked before its job, as a spare that waits for one: it pays a process's first-use
costs while no job waits on them, the device's above all (on a GPU: the CUDA context and the cuBLAS
handle, about 6 s per process on an H200). The pool process keeps one spare ready and hands the
next job to it; a spare that died meanwhile is replaced by a fresh fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from typing import NoReturn

from core.db import patiently, session_scope
from core.queue import enqueue_training
from core.repository import claims as claims_repo
from core.repository import jobs as jobs_repo
from core.settings import get_settings
from worker.reporter import STOPPING

log = logging.getLogger("fitserve.worker")
NAMED = "-"  # a wake-up's queue that means "this job itself": an old message's


def _die_with_parent() -> None:
    """The training process gets SIGTERM (and so preempts its job) if the pool process dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def warm_device() -> None:
    """Pay the device's first-use costs before a job waits on them: CUDA's context and cuBLAS
    handle on a GPU, torch's thread pool on the CPU."""
    import torch

    from worker.training.engine import pick_device

    device = pick_device(get_settings().device)
    x = torch.ones(8, 8, device=device)
    (x @ x).sum().item()


def _serve(job_read: int, result_write: int) -> NoReturn:
    """The training process: warm up, wait for `job_id task_id queue` on the pipe, claim and
    train, write what happened. An empty pipe (the pool process dismissed it, or died) ends it."""
    code = 1
    try:
        _die_with_parent()
        signal.signal(
            signal.SIGTERM, lambda *_: STOPPING.set()
        )  # a job stops at a step and is preempted
        try:
            warm_device()
        except Exception:  # the job will meet the same error and fail with it as its reason
            log.exception("the training process could not warm its device up")
        with os.fdopen(job_read, "rb") as pipe:
            message = pipe.read().decode()
        if message:
            job_id, task_id, queue = message.split()
            owner = f"{socket.gethostname()}:{os.getpid()}:{task_id}"
            outcome = _claim_and_run(job_id, owner, queue)
            os.write(result_write, outcome.encode())
        code = 0
    finally:
        os._exit(code)


def _claim_and_run(job_id: str, owner: str, queue: str) -> str:
    from worker.capacity import this_worker
    from worker.runner import run_job, run_next

    if queue == NAMED:
        return run_job(job_id, owner)
    return run_next(queue, owner, this_worker(get_settings()))


class TrainingProcess:
    def __init__(self) -> None:
        job_read, self._job = os.pipe()
        self._result, result_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._job)
            os.close(self._result)
            _serve(job_read, result_write)
        os.close(job_read)
        os.close(result_write)

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def hand(self, job_id: str, task_id: str, queue: str) -> bool:
        """Give it its wake-up (closing the pipe, so it reads the whole message); False if it is
        gone. It claims the next job of `queue`, or the job `job_id` itself if `queue` is NAMED."""
        try:
            os.write(self._job, f"{job_id} {task_id} {queue}".encode())
            return True
        except OSError:
            return False
        finally:
            os.close(self._job)

    def wait(self) -> tuple[int, str]:
        """(its wait status, what it said happened)."""
        try:
            _, status = os.waitpid(self.pid, 0)
        finally:
            with os.fdopen(self._result, "rb") as pipe:
                outcome = pipe.read().decode()
        return status, outcome

    def dismiss(self) -> None:
        """No job for it: it reads an empty pipe and exits."""
        os.close(self._job)
        os.close(self._result)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


_spare: TrainingProcess | None = None


def prepare_spare() -> None:
    """Fork the next job's training process now, so it warms up while nothing waits on it."""
    global _spare
    if _spare is None or not _spare.alive():
        _spare = TrainingProcess()


def dismiss_spare() -> None:
    global _spare
    if _spare is not None:
        spare, _spare = _spare, None
        spare.dismiss()


def _take(job_id: str, task_id: str, queue: str) -> TrainingProcess:
    global _spare
    child, _spare = _spare, None
    if child is None or not child.alive() or not child.hand(job_id, task_id, queue):
        child = TrainingProcess()
        child.hand(job_id, task_id, queue)
    return child


def run_in_child(job_id: str, task_id: str, queue: str = NAMED) -> str:
    """Claim and train in a training process: the next job of `queue`, or the job `job_id` when
    `queue` is NAMED (a message from before queues named only its job). Returns what happened
    (`killed` if it was)."""
    child = _take(job_id, task_id, queue)
    if (
        get_settings().spare_training_process and not STOPPING.is_set()
    ):  # none for a worker shutting down
        prepare_spare()

    def pass_on(*_: object) -> None:
        STOPPING.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, pass_on)
    if STOPPING.is_set():  # a SIGTERM that came before the handler
        pass_on()
    try:
        status, outcome = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if os.WIFSIGNALED(status):
        owner = f"{socket.gethostname()}:{child.pid}:{task_id}"
        _lapse(job_id, queue, owner, os.WTERMSIG(status))
        return "killed"
    return outcome or "lost"


def _owned(owner: str) -> str | None:
    with session_scope() as session:
        return claims_repo.owned_by(session=session, owner=owner)


def _lapse(job_id: str, queue: str, owner: str, number: int) -> None:
    name = signal.Signals(number).name
    reason = f"the training process was killed by {name}" + (
        " (out of memory?)" if number == 9 else ""
    )
    patience = get_settings().database_patience_seconds
    held = patiently(lambda: _owned(owner), patience=patience, what=f"{owner}: its job")
    if held is not None:

        def lapse() -> None:
            with session_scope() as session:
                jobs_repo.lapse(session=session, job_id=held, owner=owner, reason=reason)

        patiently(lapse, patience=patience, what=f"job {held}: lapse")
        log.warning("job %s: %s; its lease is expired for the reaper", held, reason)
        return
    # It died before it claimed anything (a spare killed just as it was woken): wake another
    # worker now rather than leave the job to the sweeper's grace period.
    log.warning("%s died (%s) before it claimed a job; waking another worker", owner, reason)
    try:
        if queue == NAMED:
            with session_scope() as session:
                queue = claims_repo.queues_of(session=session, job_ids=[job_id]).get(job_id, "any")
        enqueue_training(job_id, queue)
    except Exception:
        log.exception("job %s: enqueue after its training process died unclaimed failed", job_id)

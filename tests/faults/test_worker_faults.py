"""Workers really broken: SIGKILL mid-training, SIGTERM (shutdown), a job whose worker dies every
time, and a corrupt checkpoint. PostgreSQL + Redis, real `fitserve worker` and `fitserve api` processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.faults.conftest import FaultService

Row = dict[str, Any]
OnDisk = dict[int, tuple[int, int]]  # epoch -> (inode, mtime) of its checkpoint's JSON


def _pid(row: Row) -> int:
    return int(row["lease_owner"].split(":")[1])  # host:pid:task


def _first_epoch(service: FaultService, job_id: str, attempt: int) -> int | None:
    """The earliest epoch of the metric rows an attempt wrote. Rows are insert-or-ignore on (step, name), so a
    replayed step keeps the earlier attempt's row: this says where an attempt's new points begin, not where it
    resumed (the checkpoint files say that)."""
    first = service.sql(
        "SELECT min(epoch) FROM metric WHERE job_id = :j AND attempt = :a", j=job_id, a=attempt
    )
    return None if first[0][0] is None else int(first[0][0])


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie writes nothing more
    except FileNotFoundError:
        return False


def _wait_dead(*pids: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still alive: {[pid for pid in pids if _alive(pid)]}"
        time.sleep(0.02)


def _worker(service: FaultService) -> subprocess.Popen[bytes]:
    return next(p for p in service.processes if p.args[1] == "worker" and p.poll() is None)  # type: ignore[index]


def _kill_worker(service: FaultService, row: Row) -> float:
    """SIGKILL the whole worker (main, pool and training processes): the machine is gone, no goodbye, the lease
    just lapses. Returns when all three are dead, with the time of the kill."""
    training = _pid(row)
    pool = _parent(training)
    worker = _worker(service)
    for pid in (worker.pid, training, pool):
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    worker.wait(timeout=10)
    _wait_dead(training, pool)
    return killed


def _kill_training(row: Row) -> float:
    """SIGKILL the training process only, as an out-of-memory kill would; its worker lives on."""
    training = _pid(row)
    os.kill(training, signal.SIGKILL)
    killed = time.monotonic()
    _wait_dead(training)
    return killed


def _mid_epoch(attempt: int, epoch: int) -> Callable[[Row], bool]:
    """A predicate: the attempt is running epoch `epoch` or later, in the first half of an epoch (so the kill lands
    before that epoch's checkpoint)."""
    return lambda r: (
        r["status"] == "running"
        and r["attempt"] == attempt
        and r["epoch"] >= epoch
        and 0 < r["step"] < r["steps"] // 2
    )


def _checkpoint_dir(service: FaultService, job_id: str) -> Path:
    return service.data_dir / "artifacts" / "jobs" / job_id / "checkpoints"  # core.storage.job_dir


def _on_disk(service: FaultService, job_id: str) -> OnDisk:
    """Each complete epoch checkpoint (its JSON is written last, by rename): epoch -> (inode, mtime)."""
    found = {}
    for path in _checkpoint_dir(service, job_id).glob("epoch-*.json"):
        stat = path.stat()
        found[int(path.stem.removeprefix("epoch-"))] = (stat.st_ino, stat.st_mtime_ns)
    return found


def _weights_sha256(service: FaultService, job_id: str) -> dict[int, str]:
    """epoch -> sha256 of each checkpoint's weights file as on disk (checked against its JSON)."""
    found = {}
    for path in _checkpoint_dir(service, job_id).glob("epoch-*.json"):
        meta = json.loads(path.read_text())
        digest = hashlib.sha256(path.with_name(meta["weights"]).read_bytes()).hexdigest()
        assert digest == meta["sha256"], (path.name, digest, meta["sha256"])
        found[int(path.stem.removeprefix("epoch-"))] = digest
    return found


def _rewritten(before: OnDisk, after: OnDisk) -> set[int]:
    """The epochs of `before` whose checkpoint was written again (a rename gives a new inode)."""
    return {epoch for epoch, stat in before.items() if after.get(epoch) != stat}


def _resumed(service: FaultService, job_id: str, attempt: int, killed: float) -> float:
    """Seconds from the kill until the attempt runs."""
    service.until(
        job_id, lambda r: r["status"] == "running" and r["attempt"] == attempt, timeout=45
    )
    return time.monotonic() - killed


def test_a_sigkilled_worker_s_job_is_reaped_and_resumes_from_its_checkpoint(
    faulty: FaultService,
) -> None:
    job_id = faulty.submit(epochs=6)
    row = faulty.until(job_id, lambda r: r["status"] == "running" and r["epoch"] >= 2)
    killed = _kill_worker(faulty, row)
    faulty.start("worker")  # a fresh worker: its reaper re-queues the job, and it resumes it
    resumed = _resumed(faulty, job_id, 2, killed)
    print(f"\nresumed {resumed:.1f} s after the kill (lease 3 s, worker start included)")
    done = faulty.finish(job_id, timeout=120)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done["reason"]
    second = faulty.sql(
        "SELECT min(epoch) FROM metric WHERE job_id = :j AND attempt = 2 AND name = 'loss'",
        j=job_id,
    )[0][0]
    assert (
        second is not None and second >= 2
    )  # from the epoch-1 checkpoint or later, not from scratch
    faulty.metrics_are_unique(job_id)


def test_a_job_killed_mid_epoch_then_with_its_worker_resumes_twice_and_ends_like_an_unbroken_run(
    faulty: FaultService,
) -> None:
    fit = {
        "epochs": 6,
        "keep_checkpoints": 100,
    }  # every checkpoint kept: the files show where each attempt resumed
    unbroken_id = faulty.submit(**fit)
    unbroken = faulty.finish(unbroken_id)
    assert (unbroken["status"], unbroken["attempt"]) == ("succeeded", 1), unbroken["reason"]
    job_id = faulty.submit(**fit)

    killed = _kill_training(faulty.until(job_id, _mid_epoch(attempt=1, epoch=2)))
    on_disk = [_on_disk(faulty, job_id)]  # no more writes: the training process is dead
    to_second = _resumed(
        faulty, job_id, 2, killed
    )  # the same worker takes it up again: no lease to wait out

    killed = _kill_worker(
        faulty, faulty.until(job_id, _mid_epoch(attempt=2, epoch=max(on_disk[0]) + 2))
    )
    on_disk.append(_on_disk(faulty, job_id))
    faulty.start("worker")
    to_third = _resumed(faulty, job_id, 3, killed)
    print(
        f"\ntraining process killed -> attempt 2 running: {to_second:.1f} s (same worker, no lease wait)"
        f"\nwhole worker killed -> attempt 3 running: {to_third:.1f} s (lease 3 s, fresh worker start)"
    )

    done = faulty.finish(job_id, timeout=120)
    assert (done["status"], done["attempt"], done["reason"]) == (
        "succeeded",
        3,
        "completed 6 epochs",
    )
    final = _on_disk(faulty, job_id)
    assert sorted(final) == list(range(1, 7))
    assert 0 < max(on_disk[0]) < max(on_disk[1]) < 6, on_disk
    for attempt, before in enumerate(on_disk, start=2):
        # Each attempt resumed from the newest checkpoint it found: it wrote none of the earlier ones again
        # (one from scratch, or from an older checkpoint, would have).
        assert _rewritten(before, final) == set(), (attempt, before, final)
        first = _first_epoch(faulty, job_id, attempt)
        assert first is not None and first > max(before), (attempt, first, before)
    faulty.metrics_are_unique(job_id)

    # Resume is meant to be bit for bit on one device (seeds derived from (seed, epoch), optimizer, schedule and
    # batch-norm state restored); the tolerance allows for run-to-run noise should it not be: 0.03 is ~11 of the
    # 359 validation samples, above the spread of this model's accuracy across seeds.
    ours, theirs = done["metrics"]["val_accuracy"], unbroken["metrics"]["val_accuracy"]
    losses = done["metrics"]["val_loss"], unbroken["metrics"]["val_loss"]
    print(
        f"final val_accuracy: resumed twice {ours:.4f}, unbroken {theirs:.4f} (identical: {ours == theirs}; "
        f"val_loss {losses[0]:.6f} vs {losses[1]:.6f})"
    )
    ours_sha, theirs_sha = _weights_sha256(faulty, job_id), _weights_sha256(faulty, unbroken_id)
    print(
        f"epoch checkpoints with the same sha256 as the unbroken run's: "
        f"{sum(ours_sha[e] == theirs_sha[e] for e in ours_sha)} of {len(ours_sha)}"
    )
    assert abs(ours - theirs) <= 0.03


def test_a_corrupt_newest_checkpoint_is_skipped_and_the_job_resumes_from_the_one_before(
    faulty: FaultService,
) -> None:
    job_id = faulty.submit(epochs=6, keep_checkpoints=100)
    _kill_worker(
        faulty, faulty.until(job_id, _mid_epoch(attempt=1, epoch=3))
    )  # no checkpoint written after this
    before = _on_disk(faulty, job_id)
    newest = max(before)
    assert newest >= 2 and sorted(before) == list(range(1, newest + 1)), before
    weights = _checkpoint_dir(faulty, job_id) / f"epoch-{newest:04d}.safetensors"
    damaged = bytearray(weights.read_bytes())
    for i in range(
        len(damaged) - 64, len(damaged)
    ):  # the tail: tensor data, the header still parses
        damaged[i] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    faulty.start("worker")

    done = faulty.finish(job_id, timeout=120)
    assert (done["status"], done["attempt"], done["reason"]) == (
        "succeeded",
        2,
        "completed 6 epochs",
    )
    after = _on_disk(faulty, job_id)
    assert sorted(after) == list(range(1, 7))
    # Resumed from epoch newest-1: the corrupt checkpoint was written again (by a re-run of its epoch), the
    # ones before it were not (as from scratch they would have been).
    assert _rewritten(before, after) == {newest}, (newest, before, after)
    first = _first_epoch(faulty, job_id, 2)
    assert first is not None and first >= newest, first
    faulty.metrics_are_unique(job_id)
    logs = faulty.tail(
        2000
    )  # the operator is told which checkpoint was skipped, and where the job resumed
    assert (
        f"checkpoint epoch-{newest:04d}.json skipped, resuming from an older one: epoch-{newest:04d}.safetensors"
        f": does not match its sha256" in logs
    )
    assert f"resuming after epoch {newest - 1}, from its checkpoint" in logs

    print(
        f"\nepoch {newest}'s checkpoint corrupted: attempt 2 resumed from epoch {newest - 1}'s, wrote epoch "
        f"{newest}'s again; its first new metric rows are in epoch {first}"
    )

    with faulty.client() as client:
        listed = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
    on_disk = _weights_sha256(faulty, job_id)  # every file intact, the re-written one included
    assert {
        c["epoch"]: c["sha256"] for c in listed
    } == on_disk  # the list is what is on disk, epoch for epoch
    assert [c["attempt"] for c in listed] == [1] * newest + [2] * (6 - newest), listed


def test_sigterm_preempts_the_job_which_resumes_on_another_worker(faulty: FaultService) -> None:
    job_id = faulty.submit(epochs=6)
    faulty.until(job_id, lambda r: r["status"] == "running" and r["epoch"] >= 1)
    worker = _worker(faulty)
    worker.send_signal(signal.SIGTERM)
    preempted = faulty.until(job_id, lambda r: r["status"] != "running", timeout=30)
    assert preempted["status"] in ("preempted", "queued"), preempted
    assert worker.wait(timeout=30) is not None
    faulty.start("worker")
    done = faulty.finish(job_id, timeout=120)
    row = faulty.row(job_id)
    assert (done["status"], row["attempt"], row["preemptions"]) == ("succeeded", 2, 1), done[
        "reason"
    ]
    faulty.metrics_are_unique(job_id)


def test_a_job_cancelled_as_its_training_process_dies_ends_cancelled(faulty: FaultService) -> None:
    """Cancel, then the training process dies before it reads the flag: the reaper ended the job back
    in `queued` with the flag set, which no claim and no sweep would touch, for ever (holding an
    active-jobs slot). It ends `cancelled` now."""
    job_id = faulty.submit(epochs=200)
    training = _pid(faulty.until(job_id, lambda r: r["status"] == "running" and r["epoch"] >= 1))
    os.kill(training, signal.SIGSTOP)  # frozen: it cannot see the cancel
    with faulty.client() as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    os.kill(training, signal.SIGKILL)
    done = faulty.finish(job_id, timeout=60)
    assert done["status"] == "cancelled", done
    assert done["reason"].startswith(
        "cancelled by request; its attempt ended before it could stop (the training process was killed by SIGKILL"
    ), done["reason"]
    assert faulty.row(job_id)["attempt"] == 1  # never claimed again


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(
    faulty: FaultService,
) -> None:
    job_id = faulty.submit(epochs=200)
    kills: list[float] = []
    for attempt in (
        1,
        2,
        3,
    ):  # FITSERVE_MAX_ATTEMPTS=3; the training process dies, as in an out-of-memory kill
        row = faulty.until(
            job_id, lambda r, a=attempt: r["status"] == "running" and r["attempt"] == a
        )  # type: ignore[misc]
        if kills:
            print(
                f"\nattempt {attempt} running {time.monotonic() - kills[-1]:.1f} s after its kill (no lease wait)"
            )
        kills.append(_kill_training(row))
    done = faulty.finish(job_id, timeout=60)
    assert done["status"] == "failed"
    assert (
        done["reason"]
        == "gave up after 3 attempts: the training process was killed by SIGKILL (out of memory?)"
    )
    assert _worker(faulty).poll() is None  # the worker itself survived the three kills
    assert faulty.row(job_id)["attempt"] == 3


def test_a_job_whose_message_was_lost_is_enqueued_again_by_the_sweeper(
    faulty: FaultService,
) -> None:
    done_id = faulty.submit(epochs=1)
    assert faulty.finish(done_id, timeout=60)["status"] == "succeeded"
    # As if the broker had been down at submit (or flushed since): a committed row, no message.
    lost = f"job_{os.urandom(16).hex()}"
    faulty.sql(
        "INSERT INTO job (id, tenant_id, name, spec, status, attempt, max_attempts, preemptions, "
        "cancel_requested, epoch, epochs, step, steps, parameters, estimated_memory_bytes, latest_metrics, "
        "test_metrics, created_at, updated_at) SELECT :new, tenant_id, name, spec, 'queued', 0, 3, 0, false, "
        "0, epochs, 0, 0, parameters, 0, '{}', '{}', now(), now() FROM job WHERE id = :old RETURNING id",
        new=lost,
        old=done_id,
    )
    started = time.monotonic()
    done = faulty.finish(lost, timeout=60)
    assert done["status"] == "succeeded", done["reason"]
    assert 5 <= time.monotonic() - started < 30  # FITSERVE_QUEUED_GRACE_SECONDS=5

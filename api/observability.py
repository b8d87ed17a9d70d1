"""What /metrics exposes: a registry of this API process's own instruments (predict latency,
process info) and a collector that reads the rest from the database and the broker at scrape
time. No tenant data: job counts by state, queue depth and step time over all running jobs.

Instruments are per process: with `fitserve api --workers N` each scrape sees one process's
predict histogram (the database and broker figures are the same from any of them)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select

from core.db import hot_read
from core.queue import broker_queues, queue_depth
from core.settings import get_settings
from core.tables import JOB_STATUSES, Job, JobStatus

log = logging.getLogger("fitserve.api")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

PREDICT_SECONDS = Histogram(
    "fitserve_predict_seconds",
    "Time to answer POST /v1/models/{id}/predict in this API process (every answer, errors included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)

BATCH_SIZE = Histogram(
    "fitserve_batch_size",
    "Predict requests (not rows) answered by each forward pass the batcher runs in this API "
    "process (1: a request that ran alone; a merged pass that failed is not counted, its "
    "requests then run alone; requests that may not be merged, or to models with batching off, "
    "are not counted).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)

RUNNING_JOBS_LIMIT = 1000  # the step-time query reads at most this many running jobs


def jobs_by_state(connection: Connection) -> dict[str, int]:
    """One GROUP BY over the job table; every state is present, zero when none."""
    counts: dict[str, int] = dict.fromkeys(JOB_STATUSES, 0)
    for status, count in connection.execute(select(Job.status, func.count()).group_by(Job.status)):
        counts[str(status)] = int(count)
    return counts


def running_step_times(connection: Connection) -> list[tuple[float, float, int]]:
    """(epoch_seconds, samples_per_second, steps) of each running job's latest finished epoch."""
    rows = connection.execute(
        select(Job.latest_metrics, Job.steps)
        .where(Job.status == JobStatus.RUNNING)
        .limit(RUNNING_JOBS_LIMIT)
    )
    out = []
    for latest, steps in rows:
        latest = latest or {}
        seconds = latest.get("epoch_seconds")
        if isinstance(seconds, int | float) and seconds > 0:
            rate = latest.get("samples_per_second")
            out.append(
                (
                    float(seconds),
                    float(rate) if isinstance(rate, int | float) else 0.0,
                    int(steps or 0),
                )
            )
    return out


class ServiceCollector(Collector):
    """Read at each scrape; a source that cannot be read yields fitserve_up{source}=0 instead."""

    def describe(self) -> list[Any]:
        # Without it, registering would call collect(): a database query at import time.
        return []

    def collect(self) -> Iterator[Any]:
        settings = get_settings()
        up = GaugeMetricFamily(
            "fitserve_source_up", "1 when the source answered this scrape", labels=["source"]
        )
        try:
            counts, step_times = hot_read(lambda c: (jobs_by_state(c), running_step_times(c)))
            up.add_metric(["database"], 1)
        except Exception as exc:
            log.warning("metrics: database unreadable: %s", type(exc).__name__)
            counts, step_times = None, None
            up.add_metric(["database"], 0)
        if counts is not None:
            jobs = GaugeMetricFamily(
                "fitserve_jobs", "Jobs by state (all tenants)", labels=["state"]
            )
            for state, count in counts.items():
                jobs.add_metric([state], count)
            yield jobs
        if step_times is not None:
            yield from _step_time_families(step_times)
        try:
            depths = [(name, queue_depth(name)) for name in broker_queues(settings.queue)]
            up.add_metric(["broker"], 1)
            gauge = GaugeMetricFamily(
                "fitserve_queue_depth", "Messages waiting in the broker queue", labels=["queue"]
            )
            for name, depth in depths:
                gauge.add_metric([name], depth)
            yield gauge
        except Exception as exc:
            log.warning("metrics: broker unreadable: %s", type(exc).__name__)
            up.add_metric(["broker"], 0)
        yield up


def _step_time_families(step_times: list[tuple[float, float, int]]) -> Iterator[GaugeMetricFamily]:
    epoch = [s for s, _, _ in step_times]
    steps = [s / n for s, _, n in step_times if n > 0]
    yield GaugeMetricFamily(
        "fitserve_running_jobs_with_epoch", "Running jobs that finished an epoch", value=len(epoch)
    )
    yield GaugeMetricFamily(
        "fitserve_epoch_seconds_max",
        "Slowest latest epoch among running jobs (0: none)",
        value=max(epoch, default=0.0),
    )
    yield GaugeMetricFamily(
        "fitserve_epoch_seconds_mean",
        "Mean latest epoch time of running jobs (0: none)",
        value=sum(epoch) / len(epoch) if epoch else 0.0,
    )
    yield GaugeMetricFamily(
        "fitserve_step_seconds_mean",
        "Mean time per training step of running jobs (0: none)",
        value=sum(steps) / len(steps) if steps else 0.0,
    )
    yield GaugeMetricFamily(
        "fitserve_samples_per_second",
        "Training samples per second, summed over running jobs",
        value=sum(r for _, r, _ in step_times),
    )


REGISTRY.register(ServiceCollector())

"""The Celery app as both sides see it: the API only sends `fitserve.train(job_id, queue)`, the
worker registers the task on the same app. JSON only; the database, not Celery's result
backend, holds every job's state."""

from __future__ import annotations

import time
from functools import lru_cache

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy

from core.resources import KINDS, broker_queue
from core.settings import Settings, get_settings

TRAIN_TASK = "fitserve.train"


class EmbeddedTransport(kombu_sqlalchemy.Transport):
    """kombu's SQLAlchemy transport with its polling interval set on the transport itself:
    that transport hands every transport option to `create_engine`, so none can carry it."""

    polling_interval = 0.05


TRANSPORT_ALIASES["fitserve-sqla"] = "core.queue:EmbeddedTransport"


def broker_url(settings: Settings) -> str:
    url = settings.broker_url
    return "fitserve-sqla+" + url.removeprefix("sqla+") if url.startswith("sqla+") else url


def transport_options(settings: Settings) -> dict[str, object]:
    if settings.broker_url.startswith(("redis", "rediss")):
        # Redis redelivers an unacked message after this: longer than any training run.
        return {"visibility_timeout": 7 * 24 * 3600}
    return {}  # the SQLAlchemy transport passes every option to create_engine


def make_celery(settings: Settings) -> Celery:
    EmbeddedTransport.polling_interval = settings.broker_poll_seconds
    app = Celery("fitserve", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,  # a worker that dies mid-job leaves the message to be redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one job per process, no job waits behind another
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives any broker outage; it never gives up
        broker_transport_options=transport_options(settings),
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


@lru_cache(maxsize=1)
def celery_app() -> Celery:
    return make_celery(get_settings())


def enqueue_training(job_id: str, queue: str) -> None:
    """Wake a worker of the job's queue (`cpu`, `cuda` or `any`). Called only after the job row is
    committed. The message names the job, but a woken worker claims whichever job of that queue
    the database puts first (priority, then the tenants' turns): one message per waiting job, so
    every job is claimed by some wake-up."""
    prefix = get_settings().queue
    celery_app().send_task(TRAIN_TASK, args=[job_id, queue], queue=broker_queue(prefix, queue))


def broker_queues(prefix: str) -> list[str]:
    """Every queue of a deployment: its `any` queue and one per device kind."""
    return [broker_queue(prefix, kind) for kind in ("any", *KINDS)]


def declare_queues(names: list[str], attempts: int = 5) -> None:
    """Declare a worker's queues before it consumes them: on the embedded broker two workers
    starting at once race to insert the same queue row, and Celery treats the loser's
    IntegrityError as unrecoverable. Declared here, a lost race is simply tried again."""
    for attempt in range(attempts):
        try:
            with celery_app().connection_for_write() as connection:
                connection.ensure_connection(max_retries=3)
                for name in names:
                    connection.default_channel.queue_declare(queue=name, passive=False)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def queue_depth(queue: str) -> int:
    """Messages waiting in the queue: LLEN on Redis, visible rows in kombu's SQLAlchemy table."""
    with celery_app().connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
        declared = connection.default_channel.queue_declare(queue=queue, passive=False)
        return int(declared.message_count)

"""The FastAPI application: `uvicorn api.main:app`, or `fitserve api` / `fitserve up`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api import errors
from api import sweeps as sweep_service
from api.authn import KeyCheck
from api.hub import Hub
from api.limits import BodyLimit, body_limits
from api.model_cache import ModelCache
from api.name_cache import NameCache
from api.predict_gate import PredictGate
from api.rate_limit import RateLimit
from api.routes import (
    dashboard,
    datasets,
    events,
    export,
    health,
    jobs,
    metrics,
    models,
    registry,
    sweeps,
    v2,
)
from api.submit import warm_up
from api.uploads import ParsePool
from core.db import hot_read
from core.repository import registry as registry_repo
from core.repository import tenants as tenants_repo
from core.settings import get_settings

log = logging.getLogger("fitserve.api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Before the first connection is accepted: /readyz answering means a submit is fast too.
    await run_in_threadpool(warm_up)
    await app.state.hub.start()
    advancing = asyncio.create_task(advance_sweeps(get_settings().sweep_tick_seconds))
    try:
        yield
    finally:
        advancing.cancel()
        await app.state.hub.close()
        app.state.parse_pool.close()


async def advance_sweeps(tick: float) -> None:
    """Move every running sweep on (api/sweeps.py), in a thread: it starts trials' dry runs."""
    while True:
        await asyncio.sleep(tick)
        try:
            await run_in_threadpool(sweep_service.advance_all)
        except Exception:  # the database is down: the next tick tries again
            log.warning("advancing sweeps failed", exc_info=True)


def create_app() -> FastAPI:
    settings = get_settings()
    # Predict runs one small batch per request, many requests at once: one thread each.
    torch.set_num_threads(1)
    app = FastAPI(
        title="Fitserve",
        version="0.1.0",
        description="Training as a service: post a Keras-style job spec, poll or stream it, call predict.",
        lifespan=lifespan,
    )
    app.state.hub = Hub(settings)
    app.state.parse_pool = ParsePool(settings.upload_parse_processes)
    app.state.models = ModelCache(settings.model_cache_count, settings.model_cache_bytes)
    app.state.names = NameCache(
        lambda: hot_read(lambda connection: registry_repo.registry_mark(connection=connection)),
        settings.revocation_check_seconds,
    )
    app.state.predict_gate = PredictGate(
        lambda: hot_read(lambda connection: tenants_repo.revocation_mark(connection=connection)),
        settings.revocation_check_seconds,
    )
    errors.install(app)
    app.add_middleware(
        BodyLimit,
        limit_for=body_limits(settings),
        idle_seconds=settings.body_idle_timeout_seconds,
        total_seconds=settings.body_read_timeout_seconds,
    )
    # Outside the body limit: a caller without a valid key is refused before its body is read.
    app.add_middleware(
        KeyCheck,
        check_seconds=settings.revocation_check_seconds,
        failures_per_second=settings.auth_failures_per_second,
        failure_burst=settings.auth_failure_burst,
    )
    # Added last, so outermost: a key over its rate is refused before its body is read.
    app.add_middleware(
        RateLimit, rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst
    )
    for module in (health, jobs, events, datasets, registry, models, export, v2, sweeps):
        app.include_router(module.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    dashboard.install(app)
    return app


app = create_app()

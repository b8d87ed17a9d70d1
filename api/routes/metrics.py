"""GET /metrics: Prometheus text format. On by default (FITSERVE_METRICS_ENABLED) and without
auth unless FITSERVE_METRICS_TOKEN is set; it holds no tenant data. API keys are not accepted
here: the token is a separate secret for the scraper."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.errors import responses
from api.observability import REGISTRY
from core.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses=responses(401))
def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
    token = get_settings().metrics_token
    if token is not None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip(), token.get_secret_value()
        ):
            raise HTTPException(
                401,
                "the metrics token is required: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

"""Metrics: this collector's Prometheus registry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.api.deps import Context

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
def prometheus_metrics(context: Context) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)

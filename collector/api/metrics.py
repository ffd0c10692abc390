"""Metrics: this collector's Prometheus registry."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.api.deps import AccessDep, Context, Now, authenticated
from collector.api.problems import Forbidden, problem

router = APIRouter(tags=["operations"])


async def _guard(request: Request, context: Context, access: AccessDep, now: Now) -> None:
    """With ``api.metrics_auth: key``, a principal that sees every site (the figures are the whole
    collector's); with ``none``, anyone."""
    if context.settings.metrics_auth == "none":
        return
    principal = await authenticated(request, access, now, None, None)
    if principal.sites is not None:
        raise Forbidden("/metrics needs a key or user that sees every site")


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(_guard)],
    responses={401: problem("No valid credentials"), 403: problem("A key or user scoped to some sites")},
)
def prometheus_metrics(context: Context) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)

"""The gateway's own routes: the composite read, the merged document and the probes.

Everything under /users, /orders, /notifications and /admin never reaches this router: the
proxy (gateway.proxy) answers it first.
"""

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.errors import Problem, Unauthorized
from common.http import draining
from common.openapi import BEARER, raises
from common.version import VERSION
from gateway import service
from gateway.context import GatewayContextDep
from gateway.proxy import forwarded_headers
from gateway.schemas import Overview

router = APIRouter(tags=["gateway"])
FORWARDED_TO_PARTS = frozenset(
    {"authorization", "x-forwarded-for", "x-request-id", "x-correlation-id", "traceparent"}
)


@router.get(
    "/me/overview",
    response_model=Overview,
    summary="The caller's account at a glance: user, latest orders, unread notifications",
)
@raises(Unauthorized, security=BEARER)
async def me_overview(request: Request, context: GatewayContextDep) -> Overview:
    if not request.headers.get("authorization", "").lower().startswith("bearer "):
        raise Unauthorized("A bearer token is required.")
    settings = context.settings
    headers = {
        name: value
        for name, value in forwarded_headers(request.scope, settings.trusted_proxies)
        if name in FORWARDED_TO_PARTS
    }
    return await service.overview(context.upstreams, headers, settings)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, context: GatewayContextDep) -> dict[str, Any]:
    """Every service's public operations and the gateway's own, in one document."""
    return await context.merged_document.get(request.app.openapi(), context.upstreams)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The gateway serves; each upstream's breaker")
@raises(503)  # draining
async def readyz(context: GatewayContextDep) -> dict[str, Any]:
    """Ready as soon as it serves: a service down behind it is that service's routes' 503,
    not a reason to take the whole front door out of rotation. Not ready while a rollout
    drains it (its drain file exists); the body names the release (``version``)."""
    if draining(context.settings):
        raise Problem("Not ready: draining", status=503)
    upstreams = context.upstreams
    return {
        "status": "ready",
        "version": VERSION,
        "upstreams": {name: upstream.breaker.state for name, upstream in upstreams.items()},
    }


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

"""The gateway: app factory and the ``gateway-api`` entry point.

Built from common.http's parts like every service (problem+json errors, X-Request-ID,
metrics and access log, load shedding, offline docs), without a database or Redis: the
gateway stores nothing. Its lifespan opens one keep-alive pool per upstream.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common import openapi
from common.docs import install_docs
from common.edge import EdgeLimitsMiddleware
from common.errors import install_error_handlers
from common.http import (
    NO_NATIVE_TELEMETRY,
    LoadShedMiddleware,
    RequestContextMiddleware,
    edge_limits,
    serve,
)
from common.tracing import instrument_app
from common.version import publish_build_info
from gateway.context import GATEWAY, GatewayContext, upstreams_of
from gateway.proxy import Proxy, ProxyMiddleware
from gateway.router import router
from gateway.service import MergedDocument
from gateway.settings import Settings
from gateway.upstreams import open_upstreams


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    proxy = Proxy(settings.trusted_proxies)
    merged_document = MergedDocument(settings.openapi_cache_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_upstreams(settings) as upstreams:
            GATEWAY.put(app, GatewayContext(settings, proxy, merged_document, upstreams))
            yield

    publish_build_info(settings.service_name)
    app = FastAPI(
        title="gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        generate_unique_id_function=openapi.operation_id,
        telemetry=NO_NATIVE_TELEMETRY,
    )
    install_error_handlers(app)
    openapi.install(app)  # its own operations documented as every service's are
    app.add_middleware(ProxyMiddleware, proxy=proxy, settings=settings, upstreams_of=upstreams_of)
    app.add_middleware(LoadShedMiddleware, max_in_flight=settings.http.max_in_flight)
    # The edge limits apply here first (413, 408), on the body as it streams through.
    app.add_middleware(EdgeLimitsMiddleware, **edge_limits(settings), stream_body=True)
    app.add_middleware(RequestContextMiddleware)
    instrument_app(app)
    app.include_router(router)
    install_docs(app, openapi_url="/openapi.json")
    return app


def run() -> None:
    serve("gateway.main:create_app", Settings())

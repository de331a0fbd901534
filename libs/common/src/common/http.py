"""The pieces every service's FastAPI app is built from.

:func:`create_service_app` gives a service its lifespan (one engine and one Redis client per
process, closed on shutdown), problem+json errors, the request middleware (X-Request-ID,
metrics, one JSON access-log line per request) and the probes ``/healthz``, ``/readyz`` and
``/metrics``. A service adds only its own routers.
"""

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from redis.asyncio import Redis
from sqlalchemy import Table
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import openapi, serving
from common.bus import Outbox
from common.context import SHARED, AppContext
from common.db import Database, PoolBounds, check_connection_budget, create_engine
from common.docs import install_docs
from common.edge import EdgeLimitsMiddleware, edge_protocol
from common.errors import Problem, install_error_handlers, problem_response, remember_request_ids
from common.fastread import ANSWERED_AT, FastRead, FastReads
from common.logging import configure_logging, correlation_id_var, request_id_var
from common.ratelimit import RateLimiter
from common.redis import create_redis
from common.replica import RecentWriteMiddleware, Replica, create_replica_engine
from common.settings import ServiceSettings
from common.tracing import configure_tracing, instrument_app
from common.version import VERSION, publish_build_info

logger = logging.getLogger("common.http")

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_SHED = Counter(
    "http_requests_shed_total", "Requests refused with a 503 because the process was at capacity"
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight", "Requests holding a load-shedding slot (streams excluded)"
)
HTTP_STREAMS_OPEN = Gauge("http_streams_open", "Streaming responses open (SSE)")
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
REQUEST_ID_HEADER = "x-request-id"
CORRELATION_ID_HEADER = "x-correlation-id"
MAX_ID_LENGTH = 128

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _incoming_id(value: bytes | None) -> str | None:
    """A client-sent id is echoed only if it is short and printable (it ends up in logs)."""
    if not value or len(value) > MAX_ID_LENGTH:
        return None
    text = value.decode("latin-1")
    return text if text.isprintable() else None


class RequestContextMiddleware:
    """X-Request-ID in and out, request metrics and an access log line, in plain ASGI.

    Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task per request and does not
    buffer streaming responses (the notifications stream depends on that).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = _incoming_id(headers.get(REQUEST_ID_HEADER.encode())) or uuid.uuid4().hex
        correlation_id = _incoming_id(headers.get(CORRELATION_ID_HEADER.encode())) or request_id
        # Also kept in the scope: the 500 handler runs outside this middleware (Starlette's
        # ServerErrorMiddleware is outermost), after the context variables are reset.
        remember_request_ids(scope, request_id, correlation_id)
        request_token = request_id_var.set(request_id)
        correlation_token = correlation_id_var.set(correlation_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            path = scope["path"]
            route = (
                scope.get(ANSWERED_AT) or getattr(scope.get("route"), "path", None) or "unmatched"
            )
            if path not in PROBE_PATHS:
                labels = (scope["method"], route, str(status))
                HTTP_REQUESTS.labels(*labels).inc()
                HTTP_LATENCY.labels(*labels).observe(elapsed)
            if path not in PROBE_PATHS and logger.isEnabledFor(logging.INFO):
                logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(request_token)
            correlation_id_var.reset(correlation_token)


class Capacity:
    """What one process serves at once: ``max_in_flight`` requests (load shedding) and, apart
    from them, ``max_streams`` open streaming responses. Shared by :class:`LoadShedMiddleware`
    and the :data:`STREAM_SLOT` dependency (the app's :class:`common.context.AppContext`)."""

    def __init__(self, max_in_flight: int, max_streams: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_streams = max_streams
        self.in_flight = 0
        self.streams = 0


def _at_capacity(scope: Scope, detail: str) -> Response:
    HTTP_SHED.inc()
    return problem_response(503, detail, instance=scope["path"], headers={"Retry-After": "1"})


class LoadShedMiddleware:
    """Past capacity, answer at once: 503 with ``Retry-After`` instead of a growing queue.

    A process serves at most ``http.max_in_flight`` requests at a time (probes aside). Under
    overload, requests beyond that would queue for the event loop and the database pool, and
    every accepted order would slow to seconds; refused at the door, they cost almost
    nothing and the client knows to come back, while accepted ones keep a bounded latency.

    A request that took a stream slot (:data:`STREAM_SLOT`) gives its in-flight slot back as
    soon as its response starts: an open event stream costs a connection and a task, not one
    of the slots every short request needs. Its stream slot is released when it ends. The
    routes whose paths are ``stream_paths`` (those that take :data:`STREAM_SLOT`, found by
    :func:`create_service_app`) never take an in-flight slot at all: a burst of streams being
    opened must not fill the slots short requests need; the stream cap bounds them instead.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int = 64,
        capacity: Capacity | None = None,
        stream_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.capacity = capacity or Capacity(max_in_flight, max_streams=max_in_flight)
        self.stream_paths = stream_paths

    @property
    def in_flight(self) -> int:
        return self.capacity.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        capacity = self.capacity
        if scope["path"] in self.stream_paths:
            try:
                await self.app(scope, receive, send)
            finally:
                if scope.get(STREAM_KEY):
                    capacity.streams -= 1
            return
        if capacity.in_flight >= capacity.max_in_flight:
            await _at_capacity(scope, "The service is at capacity; retry shortly.")(
                scope, receive, send
            )
            return
        capacity.in_flight += 1
        holding = True

        async def send_releasing_streams(message: Message) -> None:
            nonlocal holding
            if holding and message["type"] == "http.response.start":
                if not scope.get(STREAM_KEY) and _is_event_stream(message):
                    # A stream no STREAM_SLOT counted (a proxied one, in a gateway): counted
                    # now, past the cap's check; it still gives its slot back.
                    capacity.streams += 1
                    scope[STREAM_KEY] = True
                if scope.get(STREAM_KEY):
                    holding = False
                    capacity.in_flight -= 1
            await send(message)

        try:
            await self.app(scope, receive, send_releasing_streams)
        finally:
            if holding:
                capacity.in_flight -= 1
            if scope.get(STREAM_KEY):
                capacity.streams -= 1


def _is_event_stream(message: Message) -> bool:
    return any(
        name.lower() == b"content-type" and value.lower().startswith(b"text/event-stream")
        for name, value in message.get("headers", [])
    )


STREAM_KEY = "common.http.stream"


async def stream_slot(request: Request) -> None:
    """Route dependency of a streaming response: one of the process's ``http.max_streams``
    stream slots (503 with ``Retry-After`` when all are taken), held until the response
    ends; the request's load-shedding slot is given back when the response starts."""
    capacity = SHARED.of(request.app).capacity
    if request.scope.get(STREAM_KEY):
        return
    if capacity.streams >= capacity.max_streams:
        raise Problem(
            f"This process already serves {capacity.max_streams} open streams; retry shortly.",
            status=503,
            headers={"Retry-After": "1"},
        )
    capacity.streams += 1
    request.scope[STREAM_KEY] = True


STREAM_SLOT = Depends(stream_slot)


def stream_paths(routers: Sequence[APIRouter]) -> frozenset[str]:
    """The paths of the routes that take :data:`STREAM_SLOT` (their streams are bounded by
    the stream cap, not by the load-shedding slots)."""
    return frozenset(
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        and any(dependency.dependency is stream_slot for dependency in route.dependencies)
    )


def edge_limits(settings: ServiceSettings) -> dict[str, Any]:
    """The options of :class:`common.edge.EdgeLimitsMiddleware` from ``settings``:
    ``app.add_middleware(EdgeLimitsMiddleware, **edge_limits(settings))``, in a service (done
    by :func:`create_service_app`) or a gateway. The header deadline is :func:`serve`'s."""
    return {
        "max_body_bytes": settings.http.max_body_bytes,
        "body_timeout_seconds": settings.http.body_timeout_seconds,
    }


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread
# pool, a thread hop per request for what is an attribute lookup.
async def get_database(request: Request) -> Database:
    return SHARED.of(request.app).db


async def get_redis(request: Request) -> Redis:
    return SHARED.of(request.app).redis


DatabaseDep = Annotated[Database, Depends(get_database)]
RedisDep = Annotated[Redis, Depends(get_redis)]


PROBE_TIMEOUT_SECONDS = 2.0
# After SIGTERM, in-flight requests get this long (Kubernetes' grace period is sized to it).
GRACEFUL_SHUTDOWN_SECONDS = 20
# Rendered once: /readyz is polled often. The version says which release answers (upgrades).
READY_BODY = json.dumps({"status": "ready", "version": VERSION}, separators=(",", ":"))


async def _check(name: str, probe: Awaitable[Any]) -> str | None:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            await probe
    except Exception as exc:  # any failure means "not ready"; the reason goes in the body
        return f"{name}: {type(exc).__name__}"
    return None


def draining(settings: ServiceSettings) -> bool:
    """Is a rollout draining this process (its ``drain_file`` exists; see the settings)?"""
    return bool(settings.drain_file) and os.path.exists(settings.drain_file)


def probes_router(tag: str) -> APIRouter:
    """``tag``: the service's name, so the probes' operation ids (``users_healthz``) stay
    unique in the gateway's merged document."""
    router = APIRouter(tags=[tag])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Postgres and Redis are reachable")
    async def readyz(request: Request, db: DatabaseDep, redis: RedisDep) -> Response:
        if draining(SHARED.of(request.app).settings):
            return problem_response(503, "Not ready: draining", instance=request.url.path)
        failures = [
            failure
            for failure in await asyncio.gather(
                _check("postgres", db.ping()), _check("redis", redis.ping())
            )
            if failure
        ]
        if failures:
            return problem_response(
                503,
                "Not ready: " + ", ".join(failures),
                instance=request.url.path,
                headers={"Retry-After": "1"},  # as every 503 (the document says so)
            )
        return Response(READY_BODY, media_type="application/json")

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


# Our own spans (common.tracing) and metrics cover requests; FastAPI's native OpenTelemetry
# would add a second set, and even unused it looks up the global providers (environment reads)
# on every request: 1-2% of a read's CPU in a py-spy profile of users-api.
NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    routers: Sequence[APIRouter],
    outbox_table: Table | None = None,
    lifespan: Lifespan | None = None,
    fast_reads: Sequence[FastRead] = (),
) -> FastAPI:
    """A FastAPI app with the shared lifespan, errors, middleware and probes.

    ``outbox_table``: the service's outbox; the app's units of work then publish through
    it (common.bus.Outbox), so what a request publishes leaves right after its commit.
    ``lifespan`` is the service's own extra start-up/shut-down, run inside the shared one
    (it can use ``SHARED.of(app)``, the :class:`common.context.AppContext`, and puts the
    service's own context in its slot). ``fast_reads``: routes whose common answer comes from
    the caller's one Redis call (:mod:`common.fastread`).
    """
    capacity = Capacity(settings.http.max_in_flight, settings.http.max_streams)

    @asynccontextmanager
    async def shared_lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(settings)
        outbox = None if outbox_table is None else Outbox(redis, outbox_table, settings=settings)
        db = Database(create_engine(settings), outbox=outbox)
        replica_engine = create_replica_engine(settings)
        replica = (
            None
            if replica_engine is None
            else Replica(replica_engine, retry_seconds=settings.replica.retry_seconds)
        )
        SHARED.put(
            app,
            AppContext(
                settings=settings,
                db=db,
                redis=redis,
                replica=replica,
                rate_limiter=RateLimiter.from_settings(settings, redis),
                capacity=capacity,
            ),
        )
        try:
            await check_connection_budget(
                db.engine,
                PoolBounds.api(settings),
                process=f"{settings.service_name}-api",
                prefix=settings.model_config.get("env_prefix", ""),
                behind_pooler=settings.behind_pooler,
            )
            async with AsyncExitStack() as stack:
                if outbox is not None:
                    await stack.enter_async_context(outbox.running(db))
                if lifespan is not None:
                    await stack.enter_async_context(lifespan(app))
                yield
        finally:
            await redis.aclose()
            await db.dispose()
            if replica is not None:
                await replica.dispose()

    publish_build_info(settings.service_name)
    # /docs from the installed Swagger UI (common.docs): it renders without internet.
    app = FastAPI(
        title=title,
        lifespan=shared_lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
        telemetry=NO_NATIVE_TELEMETRY,
    )
    install_error_handlers(app)
    openapi.install(app)
    if fast_reads:  # innermost: every middleware below still sees its requests
        app.add_middleware(FastReads, reads=fast_reads)
    if settings.database_replica_url:
        app.add_middleware(
            RecentWriteMiddleware,
            service=settings.service_name,
            seconds=settings.replica.stick_seconds,
        )
    HTTP_IN_FLIGHT.set_function(lambda: capacity.in_flight)  # the process's app: one per process
    HTTP_STREAMS_OPEN.set_function(lambda: capacity.streams)
    # Added last, so outermost: a shed or refused request still gets its X-Request-ID; the
    # edge limits come before load shedding, so a slot is taken only once the body is in.
    app.add_middleware(LoadShedMiddleware, capacity=capacity, stream_paths=stream_paths(routers))
    app.add_middleware(EdgeLimitsMiddleware, **edge_limits(settings))
    app.add_middleware(RequestContextMiddleware)
    instrument_app(app)
    app.include_router(probes_router(settings.service_name))
    for router in routers:
        app.include_router(router)
    install_docs(app)
    return app


def shared_listener(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT: several processes (``REPLICAS=n`` of one API)
    listen on one port, and the kernel spreads new connections over them: one local entry
    point per service, no proxy. A replica that dies stops getting connections at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def serve(app_factory: str, settings: ServiceSettings) -> None:
    """Run an API with uvicorn; SIGTERM lets in-flight requests finish first.

    Process-wide concerns (logging, tracing) are set up here, at the entry point, not in the
    app factory: tests build many apps in one process.
    """
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)
    where: dict[str, Any] = {"host": settings.host, "port": settings.port}
    listener = shared_listener(settings.host, settings.port) if settings.reuse_port else None
    if listener is not None:  # kept referenced: a collected socket would close its fd
        where = {"fd": listener.fileno()}
    serving.run(
        app_factory,
        factory=True,
        **where,
        log_config=None,
        access_log=False,
        # Off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 (its default
        # forwarded_allow_ips) and rewrite the peer. Whom to believe is one setting,
        # trusted_proxies, applied in one place (common.ratelimit.client_address).
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=30,
        # The request line and headers within a deadline (common.edge), or a 408.
        http=edge_protocol(settings.http.header_timeout_seconds),
    )

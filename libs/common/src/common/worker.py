"""The worker runtime: what every service's ``worker`` entry point runs.

A worker process holds one engine and one Redis client (like the API's lifespan) and runs:

* the service's bus consumers (:class:`common.bus.Consumer`, usually one group per service),
* the outbox relay, so messages its handlers publish leave right after each commit,
* periodic timers (saga deadlines, inbox pruning...): each run guarded, so an exception is
  logged and the timer keeps going,
* trimming of the streams its consumers read,
* a tiny HTTP server on ``settings.worker_port`` with ``GET /healthz`` (200 while the loop
  answers and every component runs, 503 when one died, so Kubernetes restarts the pod) and
  ``GET /metrics`` (Prometheus text). No web framework for two routes.

SIGTERM or SIGINT: stop reading, let in-flight handlers finish, stop timers, flush the
outbox one last time, close Postgres and Redis, exit 0. A service's ``worker.py``::

    def run() -> None:
        settings = Settings()
        run_worker(
            settings,
            consumers=lambda ctx: [
                Consumer(ctx.database, ctx.redis, group="users", handlers=HANDLERS,
                         inbox_table=models.inbox, settings=settings)
            ],
            outbox_table=models.outbox,
            timers=[Timer("expire-sagas", 1.0, expire_sagas)],
        )
"""

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import Table

from common.bus import inbox
from common.bus.consumer import Consumer, Handler
from common.bus.outbox import OutboxRelay
from common.bus.periodic import Periodic
from common.bus.streams import StreamTrimmer
from common.contracts import Message
from common.db import Database, create_engine
from common.logging import configure_logging
from common.redis import create_redis
from common.settings import ServiceSettings
from common.tracing import configure_tracing

logger = logging.getLogger("common.worker")

REQUEST_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class WorkerContext:
    """What consumers and timers are built from: the process's settings and clients."""

    settings: ServiceSettings
    database: Database
    redis: Redis


@dataclass(frozen=True)
class Timer:
    """``run(context)`` now and then every ``interval_seconds`` after each run ends."""

    name: str
    interval_seconds: float
    run: Callable[[WorkerContext], Awaitable[None]]


ConsumersFactory = Callable[[WorkerContext], Sequence[Consumer]]


def bus_consumer(
    context: WorkerContext,
    *,
    group: str,
    handlers: Mapping[type[Message], Handler],
    inbox_table: Table,
) -> Consumer:
    """A service's consumer group on the worker's own clients and settings."""
    return Consumer(
        context.database,
        context.redis,
        group=group,
        handlers=handlers,
        inbox_table=inbox_table,
        settings=context.settings,
    )


# A component that runs for the worker's whole life (e.g. a dispatcher with its own wake-ups);
# it must return soon after ``stop`` is set.
LongRunning = Callable[[WorkerContext, asyncio.Event], Coroutine[Any, Any, None]]


def run_worker(
    settings: ServiceSettings,
    *,
    consumers: ConsumersFactory,
    outbox_table: Table | None = None,
    timers: Sequence[Timer] = (),
    long_running: Sequence[LongRunning] = (),
) -> None:
    """Run a worker until SIGTERM/SIGINT, then shut down gracefully and return (exit 0)."""
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_worker(
            settings,
            consumers=consumers,
            outbox_table=outbox_table,
            timers=timers,
            long_running=long_running,
            stop=stop,
        )

    # uvloop, as uvicorn uses for the APIs: the stock loop cost workers ~a quarter of their CPU.
    uvloop.run(main())


async def serve_worker(
    settings: ServiceSettings,
    *,
    consumers: ConsumersFactory,
    stop: asyncio.Event,
    outbox_table: Table | None = None,
    timers: Sequence[Timer] = (),
    long_running: Sequence[LongRunning] = (),
) -> None:
    """The worker's body, until ``stop`` is set (``run_worker`` sets it on a signal)."""
    database = Database(create_engine(settings))
    redis = create_redis(settings)
    context = WorkerContext(settings, database, redis)
    relay = (
        OutboxRelay(database, redis, outbox_table, settings=settings)
        if outbox_table is not None
        else None
    )
    bus_consumers = list(consumers(context))
    trimmer = StreamTrimmer(
        redis, [key for consumer in bus_consumers for key in consumer.streams], settings=settings
    )
    inbox_tables = {
        consumer.inbox_table.fullname: consumer.inbox_table for consumer in bus_consumers
    }
    background = [
        Periodic("trim-streams", settings.stream_trim_interval_seconds, trimmer.trim_all),
        *(
            Periodic(
                f"prune-{name}", settings.inbox_prune_interval_seconds, _pruner(table, context)
            )
            for name, table in inbox_tables.items()
        ),
        *(Periodic(timer.name, timer.interval_seconds, _bind(timer, context)) for timer in timers),
    ]

    components: list[asyncio.Task[None]] = []

    def healthy() -> bool:
        return (
            all(consumer.running for consumer in bus_consumers)
            and all(task.running for task in background)
            and not any(component.done() for component in components)
            and (relay is None or relay.running)
        )

    health = HealthServer(settings.host, settings.worker_port, healthy)
    try:
        if relay is not None:
            relay.start()
        for consumer in bus_consumers:
            await consumer.start()
        for task in background:
            task.start()
        components.extend(asyncio.create_task(run(context, stop)) for run in long_running)
        await health.start()
        logger.info(
            "worker started",
            extra={"groups": [c.group for c in bus_consumers], "port": settings.worker_port},
        )
        await stop.wait()
        logger.info("worker stopping")
    finally:
        await asyncio.gather(*(consumer.stop() for consumer in bus_consumers))
        grace = settings.bus_shutdown_timeout_seconds
        await asyncio.gather(*(task.stop(grace) for task in background))
        await asyncio.gather(*components, return_exceptions=True)
        if relay is not None:
            await relay.stop()
        await health.close()
        await redis.aclose()
        await database.dispose()
        logger.info("worker stopped")


def _pruner(table: Table, context: WorkerContext) -> Callable[[], Awaitable[None]]:
    """Keep the inbox from growing for ever: forget what was handled long ago."""
    retention = timedelta(hours=context.settings.inbox_retention_hours)

    async def prune() -> None:
        async with context.database.transaction() as session:
            removed = await inbox.prune(session, table, older_than=retention)
        if removed:
            logger.info("inbox pruned", extra={"table": table.fullname, "removed": removed})

    return prune


def _bind(timer: Timer, context: WorkerContext) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await timer.run(context)

    return run


class HealthServer:
    """``GET /healthz`` and ``GET /metrics`` over bare asyncio streams."""

    def __init__(self, host: str, port: int, healthy: Callable[[], bool]) -> None:
        self.host = host
        self.port = port
        self.healthy = healthy
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                request_line = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers: nothing in them matters here
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            status, content_type, body = self._respond(method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/healthz":
            ok = self.healthy()
            body = json.dumps({"status": "ok" if ok else "unhealthy"}).encode()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        return "404 Not Found", "text/plain", b"not found\n"

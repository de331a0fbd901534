"""The worker runtime: what every service's ``worker`` entry point runs.

A worker process holds one engine and one Redis client (like the API's lifespan) and runs:

* the service's consumer group (:class:`common.bus.Consumer`),
* the service's outbox (:class:`common.bus.Outbox`): what its handlers publish leaves right
  after each commit, and what a dead process left behind is swept up,
* periodic timers (saga deadlines, inbox pruning...): each run guarded, so an exception is
  logged and the timer keeps going,
* trimming of the streams its consumers read,
* a tiny HTTP server on ``settings.worker_port`` with ``GET /healthz`` (200 while the loop
  answers and every component runs, 503 when one died, so Kubernetes restarts the pod) and
  ``GET /metrics`` (Prometheus text). No web framework for two routes.

SIGTERM or SIGINT: stop reading, let in-flight handlers finish, stop timers, flush the
outbox one last time, close Postgres and Redis, exit 0. A service's ``worker.py`` declares
its worker once, and both ``run()`` and the tests start that declaration::

    def spec(settings: Settings) -> WorkerSpec:
        return WorkerSpec(
            group="orders",
            handlers=lambda context: handlers(settings),
            inbox_table=models.inbox,
            outbox_table=models.outbox,
            timers=[Timer("saga-deadlines", 0.5, expire_overdue_sagas)],
        )

    def run() -> None:
        settings = Settings()
        run_worker(settings, spec(settings))
"""

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import Table

from common.bus import inbox
from common.bus.consumer import Consumer, Handlers
from common.bus.inbox import partitioned as partitioned_inbox
from common.bus.outbox import Outbox
from common.bus.periodic import Periodic
from common.bus.streams import StreamTrimmer
from common.contracts import Message
from common.db import Database, PoolBounds, check_connection_budget, create_engine
from common.logging import configure_logging
from common.partition_maintenance import PartitionMaintainer, configured
from common.partitions import PartitionedTable
from common.redis import create_redis
from common.serving import freeze_startup_heap
from common.settings import ServiceSettings
from common.tracing import configure_tracing
from common.version import VERSION, publish_build_info

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
    """``run(context)`` now and then every ``interval_seconds`` after each run ends.

    A run that found nothing to do may return :class:`common.bus.periodic.Idle`: the next
    then waits up to ``idle_interval_seconds`` (see :class:`common.bus.periodic.Periodic`).
    """

    name: str
    interval_seconds: float
    run: Callable[[WorkerContext], Awaitable[object]]
    idle_interval_seconds: float | None = None


# A component that runs for the worker's whole life (e.g. a dispatcher with its own wake-ups);
# it must return soon after ``stop`` is set.
LongRunning = Callable[[WorkerContext, asyncio.Event], Coroutine[Any, Any, None]]
HandlersFactory = Callable[[WorkerContext], Handlers]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a service's worker runs, declared once (``worker.py``'s ``spec()``).

    ``run()`` and the tests start the same declaration, so a test of the worker tests what
    production runs. ``handlers`` is a factory: handlers may need the worker's clients (a
    cache, a publisher), which exist only once the worker runs.
    """

    group: str
    handlers: HandlersFactory
    inbox_table: Table
    outbox_table: Table | None = None
    timers: Sequence[Timer] = ()
    long_running: Sequence[LongRunning] = ()
    # The schema's time-partitioned tables, the inbox's included (common.partitions): the
    # worker creates partitions ahead and drops those past retention (one replica at a time).
    partitioned: Sequence[PartitionedTable] = ()
    # Types whose handling may wait for the group's next read (common.bus.consumer's
    # "Unhurried streams"): their streams wake the worker for no ignored entry.
    unhurried: Collection[type[Message]] = ()


def run_worker(settings: ServiceSettings, spec: WorkerSpec) -> None:
    """Run a worker until SIGTERM/SIGINT, then shut down gracefully and return (exit 0)."""
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_worker(settings, spec, stop)

    # uvloop, as uvicorn uses for the APIs: the stock loop cost workers ~a quarter of their CPU.
    uvloop.run(main())


async def serve_worker(settings: ServiceSettings, spec: WorkerSpec, stop: asyncio.Event) -> None:
    """The worker's body, until ``stop`` is set (``run_worker`` sets it on a signal)."""
    publish_build_info(settings.service_name)
    redis = create_redis(settings)
    outbox = (
        Outbox(redis, spec.outbox_table, settings=settings)
        if spec.outbox_table is not None
        else None
    )
    pool = PoolBounds.worker(settings)
    database = Database(create_engine(settings, pool=pool), outbox=outbox)
    context = WorkerContext(settings, database, redis)
    consumer = Consumer(
        database,
        redis,
        group=spec.group,
        handlers=spec.handlers(context),
        inbox_table=spec.inbox_table,
        settings=settings,
        unhurried=spec.unhurried,
    )
    trimmer = StreamTrimmer(redis, consumer.streams, settings=settings)
    # Past a transaction pooler, maintenance connects to Postgres itself (one connection):
    # its advisory lock is a session's.
    maintenance_engine = (
        create_engine(settings, url=settings.database_direct_url, pool=PoolBounds(1, 0))
        if settings.behind_pooler
        else database.engine
    )
    maintainer = PartitionMaintainer(
        maintenance_engine,
        configured(
            [partitioned_inbox(spec.inbox_table, retention_days=1), *spec.partitioned], settings
        ),
    )
    background = [
        Periodic("trim-streams", settings.stream.trim_interval_seconds, trimmer.trim_all),
        Periodic(
            f"prune-legacy-{spec.inbox_table.fullname}",
            settings.inbox.prune_interval_seconds,
            _pruner(spec.inbox_table, context),
        ),
        Periodic(
            f"partitions-{spec.inbox_table.schema}",
            settings.partition.maintenance_interval_seconds,
            maintainer.run,
        ),
        *(
            Periodic(
                t.name,
                t.interval_seconds,
                _bind(t, context),
                idle_interval_seconds=t.idle_interval_seconds,
            )
            for t in spec.timers
        ),
    ]
    components: list[asyncio.Task[None]] = []

    def healthy() -> bool:
        # Unhealthy (not ready) from the stop signal on: a rollout sees it draining.
        return (
            not stop.is_set()
            and consumer.running
            and all(task.running for task in background)
            and not any(component.done() for component in components)
            and (outbox is None or outbox.alive)
        )

    health = HealthServer(settings.host, settings.worker_port, healthy)
    try:
        await check_connection_budget(
            database.engine,
            pool,
            process=f"{settings.service_name}-worker",
            prefix=settings.model_config.get("env_prefix", ""),
            behind_pooler=settings.behind_pooler,
        )
        if outbox is not None:
            outbox.start(database)
        await consumer.start()
        for task in background:
            task.start()
        components.extend(asyncio.create_task(run(context, stop)) for run in spec.long_running)
        await health.start()
        logger.info("worker started", extra={"group": spec.group, "port": settings.worker_port})
        freeze_startup_heap()
        await stop.wait()
        logger.info("worker stopping")
    finally:
        await consumer.stop()
        grace = settings.bus.shutdown_timeout_seconds
        await asyncio.gather(*(task.stop(grace) for task in background))
        await asyncio.gather(*components, return_exceptions=True)
        if outbox is not None:
            await outbox.stop()
        await health.close()
        await redis.aclose()
        await database.dispose()
        if maintenance_engine is not database.engine:
            await maintenance_engine.dispose()
        logger.info("worker stopped")


def _pruner(table: Table, context: WorkerContext) -> Callable[[], Awaitable[None]]:
    """The previous release's inbox rows (its partition alone: the others are dropped whole
    by the partition maintenance) are forgotten by a DELETE, while there are any."""
    retention = timedelta(hours=context.settings.inbox.retention_hours)

    async def prune() -> None:
        async with context.database.transaction() as uow:
            removed = await inbox.prune_legacy(uow.session, table, older_than=retention)
        if removed:
            logger.info("inbox pruned", extra={"table": table.fullname, "removed": removed})

    return prune


def _bind(timer: Timer, context: WorkerContext) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return await timer.run(context)

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
            body = json.dumps({"status": "ok" if ok else "unhealthy", "version": VERSION}).encode()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        return "404 Not Found", "text/plain", b"not found\n"

"""Reads that may lag go to a Postgres streaming replica (``database_replica_url``).

Which reads: lists (``GET /orders``, ``GET /notifications``, a webhook's delivery history,
the operator's saga list), through the :data:`LaggingSession` dependency. A single order
and its saga (clients read the two together), anything a unit of work reads, and every
write stay on the primary. Without a replica setting, :data:`LaggingSession` is a primary session.

Read-your-writes: a client that has just written must see its write. Every successful
write request of an authenticated caller (a non-GET answered below 400) leaves a marker in
Redis, ``replica:wrote:<service>:<user id>``, for ``replica.stick_seconds``, set *before* the
response goes out (:class:`RecentWriteMiddleware`); while it is there, that caller's lagging
reads go to the primary. Local replay lag is milliseconds; the stick covers far more. A
caller whose marker cannot be checked (Redis down) reads from the primary too.

The replica down: its engine pings each connection it hands out (``pool_pre_ping``), so a
dead replica is found before the request's query; the read then goes to the primary, with
a log line and ``db_replica_fallbacks_total``, and the replica is not tried again for
``replica.retry_seconds``.
"""

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import Counter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.auth import known_caller, optional_user
from common.context import SHARED
from common.db import Database, closing_quietly, create_engine
from common.settings import ServiceSettings
from common.unavailable import is_unavailable

logger = logging.getLogger("common.replica")

LAGGING_READS = Counter(
    "db_lagging_reads_total",
    "Reads that may lag, by where they went (replica|primary) and why",
    ["target", "reason"],
)
REPLICA_FALLBACKS = Counter(
    "db_replica_fallbacks_total", "Times the replica was unreachable and reads fell back"
)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def create_replica_engine(settings: ServiceSettings) -> AsyncEngine | None:
    """The replica's engine (pinging each checkout), or None without a replica setting."""
    if not settings.database_replica_url:
        return None
    return create_engine(settings, url=settings.database_replica_url, pre_ping=True)


class Replica:
    """The replica's sessions, and whether it is worth trying now."""

    def __init__(self, engine: AsyncEngine, *, retry_seconds: float) -> None:
        self.engine = engine
        self.retry_seconds = retry_seconds
        self.sessions = async_sessionmaker(expire_on_commit=False, autoflush=False)
        self._down_until = 0.0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, error: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_seconds
        REPLICA_FALLBACKS.inc()
        logger.warning(
            "read replica unreachable; lagging reads go to the primary",
            extra={"retry_in_s": self.retry_seconds, "error": type(error).__name__},
        )

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def lagging_session(
    database: Database, replica: Replica | None, *, primary_reason: str | None = None
) -> AsyncIterator[AsyncSession]:
    """A read-only session on the replica when there is one, it is up, and nothing
    (``primary_reason``) sends this read to the primary; otherwise on the primary."""
    reason = primary_reason
    if replica is None:
        reason = "no_replica"
    elif not replica.up:
        reason = "replica_down"
    if reason is None and replica is not None:
        try:
            connection = await replica.engine.connect()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            replica.mark_down(exc)
            reason = "replica_down"
        else:
            LAGGING_READS.labels("replica", "ok").inc()
            try:
                async with closing_quietly(replica.sessions(bind=connection)) as session:
                    yield session
            finally:
                with contextlib.suppress(Exception):  # as closing_quietly explains
                    await connection.close()
            return
    LAGGING_READS.labels("primary", reason or "").inc()
    async with database.session() as session:
        yield session


def wrote_key(service: str, user_id: uuid.UUID) -> str:
    return f"replica:wrote:{service}:{user_id}"


async def recently_wrote(redis: Redis, service: str, user_id: uuid.UUID) -> bool:
    """True when the caller wrote within ``replica.stick_seconds`` (or we cannot tell)."""
    try:
        return bool(await redis.exists(wrote_key(service, user_id)))
    except Exception:
        logger.warning("read-your-writes marker unreadable; reading from the primary")
        return True


async def _lagging_session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
    shared = SHARED.of(request.app)
    replica = shared.replica
    reason = None
    if replica is not None:
        user = await optional_user(request)
        service = shared.settings.service_name
        if user is not None and await recently_wrote(shared.redis, service, user.id):
            reason = "recent_write"
    async with lagging_session(shared.db, replica, primary_reason=reason) as session:
        yield session


LaggingSession = Annotated[AsyncSession, Depends(_lagging_session_dependency)]
"""A read session for reads that may lag (lists, histories): see the module's docstring."""


class RecentWriteMiddleware:
    """Marks a caller who has just written (see the module's docstring), before the
    response starts, so the client's next read cannot outrun the marker."""

    def __init__(self, app: ASGIApp, *, service: str, seconds: float) -> None:
        self.app = app
        self.service = service
        self.milliseconds = max(1, round(seconds * 1000))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return

        async def marking_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                user = known_caller(scope)
                if user is not None:
                    await self._mark(SHARED.of_scope(scope).redis, user.id)
            await send(message)

        await self.app(scope, receive, marking_send)

    async def _mark(self, redis: Redis, user_id: uuid.UUID) -> None:
        try:
            await redis.set(wrote_key(self.service, user_id), "1", px=self.milliseconds)
        except Exception:
            logger.warning("read-your-writes marker not set", exc_info=True)

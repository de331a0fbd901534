"""Transactional outbox: a message is published if and only if its transaction commits.

``publish(session, message)`` only INSERTs a row into the service's ``outbox`` table, in the
caller's transaction: the state change and the message commit together or not at all. The
:class:`OutboxRelay` then moves committed rows to Redis:

* fast path: ``publish`` marks the session, and the :class:`~common.db.Database` calls the
  relay's commit listener after that unit of work commits; the listener wakes the relay,
  which publishes within milliseconds. Service code does nothing beyond ``publish``.
* sweeper: the relay also wakes every ``outbox_sweep_interval_seconds`` and at start, for
  rows whose process died between commit and publish (any process of the service will do).

Rows are taken with ``FOR UPDATE SKIP LOCKED`` so the relays of many processes share the
work without sending a row twice at once; rows are deleted in the same transaction after
XADD succeeded. A crash between XADD and that commit re-sends the rows later: delivery is
at-least-once, and the consumers' inbox makes the duplicate harmless.
"""

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Uuid,
    delete,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import metrics
from common.bus.envelope import ENVELOPE_FIELD, Envelope
from common.bus.streams import stream_key
from common.contracts import Message
from common.db import Database
from common.logging import correlation_id_var, event_id_var
from common.settings import ServiceSettings

logger = logging.getLogger("common.bus.outbox")

_BINDING_KEY = "common.bus.outbox"
_PUBLISHED_KEY = "common.bus.outbox.published"


def add_outbox_table(metadata: MetaData) -> Table:
    """The ``outbox`` table in ``metadata``'s schema; call once in a service's models.py."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("message_id", Uuid, nullable=False),
        Column("stream", String(200), nullable=False),
        Column("envelope", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


@dataclass(frozen=True)
class OutboxBinding:
    """Where ``publish`` writes for one Database: its outbox table and the service's name."""

    table: Table
    source: str
    stream_prefix: str = "bus:"


class OutboxNotBound(RuntimeError):
    """``publish`` was called on a session of a Database without an outbox."""


def bind_outbox(database: Database, table: Table, *, source: str, stream_prefix: str) -> None:
    """Make ``publish`` on this Database's sessions write to ``table`` as ``source``.

    :class:`OutboxRelay` does this itself; call it directly only where messages are written
    but no relay runs in the process (a script, a test).
    """
    database.session_info[_BINDING_KEY] = OutboxBinding(table, source, stream_prefix)


def envelope_for(
    message: Message,
    *,
    source: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Envelope:
    """An envelope whose ids default to the current context's.

    In an HTTP request ``correlation_id_var`` holds the request's correlation id; in a bus
    handler it holds the incoming message's, and ``event_id_var`` the incoming message's id.
    So whatever a handler publishes continues the same conversation, caused by the message
    being handled, without anyone passing ids around.
    """
    return Envelope.wrap(
        message,
        source=source,
        correlation_id=correlation_id or correlation_id_var.get(),
        causation_id=causation_id or event_id_var.get(),
    )


async def publish(
    session: AsyncSession,
    message: Message,
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Envelope:
    """Add ``message`` to the outbox in the session's transaction; it is sent after commit."""
    binding = session.info.get(_BINDING_KEY)
    if not isinstance(binding, OutboxBinding):
        raise OutboxNotBound(
            "this session's Database has no outbox: start an OutboxRelay for it "
            "(or call common.bus.bind_outbox) before publishing"
        )
    envelope = envelope_for(
        message,
        source=binding.source,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
    await session.execute(
        binding.table.insert().values(
            message_id=envelope.id,
            stream=stream_key(binding.stream_prefix, message.STREAM),
            envelope=envelope.model_dump(mode="json"),
        )
    )
    session.info[_PUBLISHED_KEY] = True
    return envelope


class OutboxRelay:
    """Moves committed outbox rows to their Redis streams; one per process that publishes.

    Use it as an async context manager in an API's lifespan
    (``async with OutboxRelay(db, redis, outbox, settings=settings): yield``); the worker
    runtime starts one itself. Constructing it binds the outbox to ``database`` (see
    :func:`bind_outbox`); starting it registers the commit listener and the sweeper.
    """

    def __init__(
        self,
        database: Database,
        redis: Redis,
        table: Table,
        *,
        settings: ServiceSettings,
        source: str | None = None,
    ) -> None:
        self.database = database
        self.redis = redis
        self.table = table
        self.batch_size = settings.outbox_batch_size
        self.sweep_interval_seconds = settings.outbox_sweep_interval_seconds
        self.shutdown_timeout_seconds = settings.bus_shutdown_timeout_seconds
        bind_outbox(
            database,
            table,
            source=source or settings.service_name,
            stream_prefix=settings.bus_stream_prefix,
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "OutboxRelay":
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        """Register the fast path and start the loop; the first pass sweeps at once."""
        self._stopping = False
        self.database.add_commit_listener(self._on_commit)
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop after a final flush, so what was committed before shutdown is sent now."""
        self.database.remove_commit_listener(self._on_commit)
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self.shutdown_timeout_seconds)
        except TimeoutError:
            logger.warning("outbox relay did not stop in time; rows stay for the sweeper")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        self._wake.set()

    def _on_commit(self, session: AsyncSession) -> None:
        if session.info.get(_PUBLISHED_KEY):
            self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sweep_interval_seconds):
                    await self._wake.wait()
            self._wake.clear()
            await self._flush_logged()
        await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            logger.exception("outbox relay failed; the rows stay and are retried")

    async def flush(self) -> int:
        """Publish every committed row (batch by batch); returns how many were sent."""
        sent = 0
        while True:
            count = await self.publish_batch()
            sent += count
            if count < self.batch_size:
                return sent

    async def publish_batch(self) -> int:
        """Publish the oldest ``batch_size`` rows not being published by another relay."""
        table = self.table
        async with self.database.transaction() as session:
            rows = (
                await session.execute(
                    select(table.c.id, table.c.stream, table.c.envelope)
                    .order_by(table.c.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            pipe = self.redis.pipeline(transaction=False)
            for row in rows:
                pipe.xadd(row.stream, {ENVELOPE_FIELD: _dumps(row.envelope)})
            await pipe.execute()
            await session.execute(delete(table).where(table.c.id.in_([row.id for row in rows])))
        for row in rows:
            metrics.PUBLISHED.labels(row.stream, str(row.envelope.get("type", ""))).inc()
        return len(rows)


def _dumps(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, separators=(",", ":"))

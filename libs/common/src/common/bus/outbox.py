"""Transactional outbox: a message is published if and only if its transaction commits.

``uow.publish(message)`` (common.db.UnitOfWork) only collects the message; just before the
unit of work commits, :meth:`Outbox.write` INSERTs all its messages' rows in one statement,
in the same transaction as the state change: both commit, or neither. Then:

* right after the commit, :meth:`Outbox.committed` sends those rows from memory, in one
  pipelined XADD, in the committing task (no second transaction, no wake-up); their ids
  are deleted later, many commits' worth in one DELETE;
* the sweeper (every ``outbox.sweep_interval_seconds``, in any process of the service) sends
  what a process left behind: rows older than ``outbox.sweep_grace_seconds`` (it died between
  commit and XADD, or Redis was down then), taken with ``FOR UPDATE SKIP LOCKED`` so many
  sweepers share the work, and deleted in the same transaction after their XADD.
  Idle, it sleeps longer (docs/design.md section 8: idle cost): after a sweep that sent
  nothing it waits until the oldest row left comes due, at most the grace (a row written
  from then on comes due no sooner), less one interval for a transaction that was open
  meanwhile. So no row is swept later than at the busy cadence.

A crash between XADD and DELETE sends a row again later: delivery is at-least-once, and the
consumers' inbox makes the duplicate harmless.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
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
from common.bus.statements import OutboxStatements
from common.bus.streams import stream_key
from common.contracts import Message
from common.db import Database, DriverConnection
from common.logging import correlation_id_var, event_id_var
from common.settings import ServiceSettings

logger = logging.getLogger("common.bus.outbox")


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


@dataclass(frozen=True)
class Outgoing:
    """A message on its way out: its envelope, its stream key and its JSON (made once)."""

    envelope: Envelope
    stream: str
    json: str


class Outbox:
    """A service's outbox: the table units of work write to, and what sends its rows.

    Give it to the process's Database (``Database(engine, outbox=outbox)``), then keep it
    running for the process's life (``async with outbox.running(database): ...``); the API
    lifespan (common.http) and the worker runtime (common.worker) do both. Without
    :meth:`running` (a script, a test), committed rows simply stay in the table.
    """

    def __init__(
        self,
        redis: Redis,
        table: Table,
        *,
        settings: ServiceSettings,
        source: str | None = None,
    ) -> None:
        self.redis = redis
        self.table = table
        self.source = source or settings.service_name
        self.stream_prefix = settings.bus.stream_prefix
        self.batch_size = settings.outbox.batch_size
        self.sweep_interval_seconds = settings.outbox.sweep_interval_seconds
        self.sweep_grace = timedelta(seconds=settings.outbox.sweep_grace_seconds)
        self.delete_delay_seconds = settings.outbox.delete_delay_seconds
        self.shutdown_timeout_seconds = settings.bus.shutdown_timeout_seconds
        self._statements = OutboxStatements(table)
        self._database: Database | None = None
        self._sent: list[int] = []  # sent from memory, their rows not deleted yet
        self._oldest_age_seconds: float | None = None  # seen by the last empty sweep
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- what units of work call (common.db.Outbox) ------------------------------------------

    def prepare(
        self, message: Message, *, correlation_id: str | None, causation_id: str | None
    ) -> Outgoing:
        envelope = envelope_for(
            message, source=self.source, correlation_id=correlation_id, causation_id=causation_id
        )
        return Outgoing(
            envelope, stream_key(self.stream_prefix, message.STREAM), envelope.to_json()
        )

    async def write(
        self, connection: DriverConnection, outgoing: Sequence[Outgoing]
    ) -> list[tuple[int, Outgoing]]:
        """One INSERT for all the unit of work's messages; their rows."""
        return await self._statements.write(connection, outgoing)

    async def committed(self, rows: Sequence[tuple[int, Outgoing]]) -> None:
        """Send committed rows now, from memory; the sweeper takes them if this fails."""
        if not self.sending:
            return
        await self._xadd((item.stream, item.json) for _, item in rows)
        self.staged_sent(rows)

    def stage(self, pipe: Pipeline, rows: Sequence[tuple[int, Outgoing]]) -> bool:
        """Queue committed rows' XADDs on the caller's pipeline (one round trip with its own
        commands, e.g. the consumer's XACK); False when not sending: the sweeper takes them."""
        if not self.sending or not rows:
            return False
        for _, item in rows:
            pipe.xadd(item.stream, {ENVELOPE_FIELD: item.json})
        return True

    def staged_sent(self, rows: Sequence[tuple[int, Outgoing]]) -> None:
        """The staged XADDs went through: count them, delete their rows soon."""
        for _, item in rows:
            metrics.PUBLISHED.labels(item.stream, item.envelope.type).inc()
        self._sent.extend(row_id for row_id, _ in rows)
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self, database: Database) -> AsyncIterator["Outbox"]:
        """Send and sweep for ``database``'s units of work while the block runs."""
        self.start(database)
        try:
            yield self
        finally:
            await self.stop()

    def start(self, database: Database) -> None:
        """Start the loop; its first pass sweeps at once (rows a dead process left)."""
        self._database = database
        self._stopping = False
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        """Stop after a final pass: sent rows deleted, rows left behind past the grace sent."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self.shutdown_timeout_seconds)
        except TimeoutError:
            logger.warning("outbox did not stop in time; its rows stay for the sweeper")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def sending(self) -> bool:
        """True while committed rows are sent from memory (until stop begins)."""
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def alive(self) -> bool:
        """The worker's health: the loop has not died."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        """Delete what was sent when woken, ``outbox.delete_delay_seconds`` later so that many
        commits' rows go in one DELETE; sweep every ``outbox.sweep_interval_seconds``; a last
        pass of both at stop."""
        next_sweep = time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_sweep - time.monotonic())):
                    await self._wake.wait()
                    if not self._stopping:
                        await asyncio.sleep(self.delete_delay_seconds)
            self._wake.clear()
            await self._logged(self.delete_sent())
            if time.monotonic() >= next_sweep:
                swept = await self._logged(self.sweep(older_than=self.sweep_grace))
                next_sweep = time.monotonic() + self.next_sweep_in(swept)
        # A last pass: delete what was sent, sweep what is past the grace. Not every row:
        # a fresher one may be another live process's, sent a moment ago and not deleted yet.
        await self._logged(self.delete_sent())
        await self._logged(self.sweep(older_than=self.sweep_grace))

    async def _logged(self, step: Awaitable[int]) -> int | None:
        """The step's count, or None when it failed (logged; its rows stay for a retry)."""
        try:
            return await step
        except Exception:
            logger.exception("outbox pass failed; the rows stay and are retried")
            return None

    def next_sweep_in(self, swept: int | None) -> float:
        """Seconds until the next sweep: the interval after a sweep that sent or failed;
        after an empty one, until the oldest row left comes due (at most the grace), less
        one interval: a row committed meanwhile has its transaction's start for its age."""
        interval = self.sweep_interval_seconds
        if swept != 0:
            return interval
        grace = self.sweep_grace.total_seconds()
        age = self._oldest_age_seconds
        due_in = grace if age is None else grace - age
        return max(interval, due_in - interval)

    # -- deleting and sweeping ----------------------------------------------------------------

    async def delete_sent(self) -> int:
        """Delete the rows sent from memory since the last call, in one statement."""
        ids, self._sent = self._sent, []
        if not ids:
            return 0
        try:
            async with self._db().autocommit() as connection:
                await self._statements.delete_ids(connection, ids)
        except Exception:
            self._sent.extend(ids)  # next pass; at worst the sweeper sends them again
            raise
        return len(ids)

    async def flush(self) -> int:
        """Send every committed row still in the table, whatever its age (tests, shutdown)."""
        await self.delete_sent()
        return await self.sweep(older_than=timedelta(0))

    async def sweep(self, *, older_than: timedelta) -> int:
        """Send rows older than ``older_than`` that no process sent (batch by batch)."""
        sent = 0
        while True:
            count = await self._sweep_batch(older_than)
            sent += count
            if count < self.batch_size:
                return sent

    async def _sweep_batch(self, older_than: timedelta) -> int:
        table = self.table
        cutoff = datetime.now(UTC) - older_than
        async with self._db().transaction() as uow:
            rows = (
                await uow.session.execute(
                    select(table.c.id, table.c.stream, table.c.envelope)
                    .where(table.c.created_at <= cutoff)
                    .order_by(table.c.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                self._oldest_age_seconds = await self._oldest_row_age(uow.session)
                return 0
            await self._xadd((row.stream, _dumps(row.envelope)) for row in rows)
            await uow.session.execute(delete(table).where(table.c.id.in_([r.id for r in rows])))
        for row in rows:
            metrics.PUBLISHED.labels(row.stream, str(row.envelope.get("type", ""))).inc()
        return len(rows)

    async def _oldest_row_age(self, session: AsyncSession) -> float | None:
        """Age of the table's oldest row by Postgres' clock (rows not yet due, or locked by
        another sweeper); None when it is empty. What the idle cadence waits for."""
        age = func.extract("epoch", func.clock_timestamp() - func.min(self.table.c.created_at))
        value = (await session.execute(select(age))).scalar_one_or_none()
        return None if value is None else float(value)

    async def _xadd(self, entries: Any) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for stream, envelope_json in entries:
            pipe.xadd(stream, {ENVELOPE_FIELD: envelope_json})
        await pipe.execute()

    def _db(self) -> Database:
        if self._database is None:
            raise RuntimeError("the outbox is not running: start it with a Database first")
        return self._database


def _dumps(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, separators=(",", ":"))

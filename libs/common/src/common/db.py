"""PostgreSQL access: one pooled async engine per process and a typed unit of work.

Every service owns one Postgres schema. Its tables hang off a :class:`MetaData` built by
:func:`schema_metadata`, which also fixes the constraint naming convention so that Alembic
migrations get stable, predictable names.

Business code never commits. A :class:`Database` hands out units of work::

    async with db.transaction() as uow:
        moved = await repository.transition_and_record(uow.connection, ...)  # asyncpg, prepared
        order = await repository.get_order(uow.session, ...)    # the ORM, same transaction
        uow.publish(ReserveCredit(...))              # leaves only if this commits
        uow.after_commit(wake_dispatcher)
        uow.after_commit_redis(AfterCommit(redis, lambda pipe: pipe.incr(key)))  # pipelined

:class:`UnitOfWork` is the one place where "this happens if and only if the transaction
commits" lives: its messages are written to the service's outbox in the same transaction
(one INSERT for all of them, just before COMMIT) and handed to the outbox to be sent right
after it; its after-commit callbacks run once the commit succeeded. Using a unit of work
after its transaction ended raises :class:`UnitOfWorkClosed`, and publishing through a
Database that has no outbox raises :class:`NoOutbox`: both fail loudly, never silently drop.
"""

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

import asyncpg
from sqlalchemy import Connection, MetaData, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from common.redis import AfterCommit as RedisAfterCommit
from common.redis import send_after_commit
from common.settings import ServiceSettings
from common.unavailable import is_unavailable

if TYPE_CHECKING:  # the bus builds on this module, not the other way round
    from redis.asyncio.client import Pipeline

    from common.bus.envelope import Envelope
    from common.bus.outbox import Outgoing
    from common.contracts import Message

logger = logging.getLogger("common.db")

DriverConnection: TypeAlias = asyncpg.Connection
"""The asyncpg connection a unit of work's hot-path statements run on, in its transaction
(:attr:`UnitOfWork.connection`): prepared once per connection, no ORM per call."""

AfterCommit = Callable[[], Awaitable[object] | object]
"""Called once the transaction committed; a coroutine it returns is awaited."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """MetaData for one service's schema, with the shared naming convention."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class PoolBounds:
    """How many Postgres connections one process's pool keeps, and may open at most.

    An API serves many requests at once; a worker needs few connections (its batches in
    flight, the outbox, its timers), so it has its own, smaller bounds. The stack's budget,
    every process's ``most`` times the replicas plus room for operators, must fit the
    server's ``max_connections`` (docs/design.md section 9; checked per process at start by
    :func:`check_connection_budget`).
    """

    size: int
    overflow: int
    setting_names: tuple[str, str] = ("db_pool_size", "db_max_overflow")

    @property
    def most(self) -> int:
        return self.size + self.overflow

    @classmethod
    def api(cls, settings: ServiceSettings) -> "PoolBounds":
        return cls(settings.db.pool_size, settings.db.max_overflow)

    @classmethod
    def worker(cls, settings: ServiceSettings) -> "PoolBounds":
        return cls(
            settings.worker_db.pool_size,
            settings.worker_db.max_overflow,
            ("worker_db_pool_size", "worker_db_max_overflow"),
        )


IDLE_PING_SECONDS = 2.0
"""A pooled connection that sat unused longer than this is pinged before it is handed out."""


def create_engine(
    settings: ServiceSettings,
    *,
    url: str | None = None,
    pre_ping: bool = False,
    pool: PoolBounds | None = None,
    idle_ping_seconds: float = IDLE_PING_SECONDS,
) -> AsyncEngine:
    """The process's one engine; pool sizes and timeouts come from settings.

    ``url`` and ``pre_ping``: the read replica's engine (common.replica) uses the same
    settings on another server, and pings each connection it hands out, so that a replica
    gone down is noticed before a query and the read falls back to the primary.
    ``pool``: the bounds (an API's by default; the worker runtime gives the worker's).
    ``idle_ping_seconds``: without ``pre_ping``, only connections idle longer are pinged
    (:func:`ping_after_idle`).
    """
    bounds = pool or PoolBounds.api(settings)
    server_settings = {"application_name": settings.service_name}
    # Another url is the replica's, or Postgres itself (partition maintenance): no pooler.
    through_pooler = url is None and settings.behind_pooler
    if not through_pooler:
        # A transaction pooler refuses this startup parameter (PgBouncer tracks only those
        # the server reports): its server connections set it themselves (connect_query, in
        # scripts/stack.sh and deploy/), and command_timeout below bounds every statement
        # here as well.
        server_settings["statement_timeout"] = str(settings.db.statement_timeout_ms)
    engine = create_async_engine(
        url or settings.database_url,
        pool_size=bounds.size,
        max_overflow=bounds.overflow,
        pool_timeout=settings.db.pool_timeout_seconds,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db.pool_timeout_seconds,
            "command_timeout": settings.db.statement_timeout_ms / 1000 or None,
            "server_settings": server_settings,
        },
    )
    if not pre_ping:
        ping_after_idle(engine, idle_ping_seconds)
    return engine


_CHECKED_IN_AT = "common.db.checked_in_at"


def ping_after_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a pooled connection before handing it out, only if it sat unused > ``idle_seconds``.

    A Postgres or PgBouncer restart closes every pooled connection. Unpinged, each process's
    first transaction afterwards meets a dead one and answers 503 (the pool then replaces them
    all), and a replica that got no traffic during the outage hands that 503 to its next client,
    minutes later. ``pool_pre_ping`` would add a round trip to every transaction of the hot
    path; a connection in steady use is handed out again within milliseconds and never pinged,
    one idle for seconds costs one round trip. A dead one is replaced before anyone sees it
    (a ``DisconnectionError`` from a checkout hook makes the pool connect afresh).
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def remember_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at <= idle_seconds:
            return  # new, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(
                f"a pooled connection idle {idle_seconds:g} s+ is dead"
            ) from exc


class ConnectionBudgetExceeded(RuntimeError):
    """The process's pool cannot fit in what the Postgres server has free."""


_BUDGET_SQL = text(
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
)


async def check_connection_budget(
    engine: AsyncEngine,
    pool: PoolBounds,
    *,
    process: str,
    prefix: str = "",
    behind_pooler: bool = False,
) -> None:
    """Refuse to start a process whose pool cannot fit in the server's free connections.

    Free: ``max_connections``, less the connections reserved for superusers, less every
    client connection open now but this check's own (one of the pool's). Past that, the pool
    would meet "too many clients" errors under load, as 503s far from their cause; failing
    at start says why. A server that does not answer is not checked (the process starts and
    reports it in /readyz, as in any outage). Nor is a pool ``behind_pooler`` (a transaction
    pooler, ``database_direct_url`` set): its connections are the pooler's clients, and the
    pooler's own bound (PgBouncer's ``max_db_connections``) is what must fit the server.
    """
    if behind_pooler:
        logger.info(
            "behind a connection pooler: the pooler bounds the server's connections",
            extra={"component": process, "pool_most": pool.most},
        )
        return
    try:
        async with engine.connect() as connection:
            limit, reserved, in_use = (await connection.execute(_BUDGET_SQL)).one()
    except Exception as exc:
        if is_unavailable(exc):
            logger.warning("Postgres unreachable: connection budget not checked")
            return
        raise
    free = limit - reserved - (in_use - 1)
    if pool.most > free:
        size, overflow = (f"{prefix}{name}".upper() for name in pool.setting_names)
        raise ConnectionBudgetExceeded(
            f"{process}: its Postgres pool may open {pool.most} connections ({size}="
            f"{pool.size} + {overflow}={pool.overflow}), but the server has only {free} free"
            f" (max_connections {limit}, {reserved} reserved for superusers, {in_use - 1} in"
            f" use by other clients). Lower {size} or {overflow}, raise max_connections, or"
            " size the stack's budget (docs/design.md section 9)."
        )
    logger.info(
        "connection budget checked",
        extra={"component": process, "pool_most": pool.most, "free": free, "limit": limit},
    )


class Outbox(Protocol):
    """Where a unit of work's messages go (``common.bus.outbox.Outbox`` implements it)."""

    def prepare(
        self, message: "Message", *, correlation_id: str | None, causation_id: str | None
    ) -> "Outgoing":
        """Wrap ``message`` for sending (its envelope and stream), this service its source."""
        ...

    async def write(
        self, connection: DriverConnection, outgoing: Sequence["Outgoing"]
    ) -> list[tuple[int, "Outgoing"]]:
        """Insert the messages' outbox rows on ``connection``, in its transaction; the rows,
        each with its message."""
        ...

    async def committed(self, rows: Sequence[tuple[int, "Outgoing"]]) -> None:
        """The rows' transaction committed: send them now (or leave them to the sweeper)."""
        ...

    def stage(self, pipe: "Pipeline", rows: Sequence[tuple[int, "Outgoing"]]) -> bool:
        """Queue committed rows' XADDs on ``pipe``, the caller's own round trip; False when
        this outbox is not sending (its rows are then left to the sweeper)."""
        ...

    def staged_sent(self, rows: Sequence[tuple[int, "Outgoing"]]) -> None:
        """The pipe of :meth:`stage` went through: the rows are sent."""
        ...


class NoOutbox(RuntimeError):
    """``publish`` on a unit of work of a Database that has no outbox."""


class UnitOfWorkClosed(RuntimeError):
    """A unit of work used after its transaction ended (commit or rollback)."""


class NoTransaction(RuntimeError):
    """What needs a transaction (the ORM session, :meth:`UnitOfWork.publish`) asked of a
    single-statement unit of work (:meth:`Database.single_statement`)."""


@dataclass(frozen=True, slots=True)
class InboxClaim:
    """The bus message a single-statement unit of work handles: its effect's statement
    records it in the consumer group's inbox itself (common.bus.statements.InboxRow), so
    the record and the effect commit together, or neither does."""

    message_id: uuid.UUID
    group: str
    occurred_at: datetime


class UnitOfWork:
    """One transaction: its connection, its session, what it publishes, what runs after it.

    The transaction runs on one pooled connection, begun at once. The hot path's statements
    run on :attr:`connection`, the asyncpg connection itself (prepared once per connection,
    no SQLAlchemy compilation or result processing per call); :attr:`session`, for the ORM
    and cold paths, is made on first use and runs in the same transaction. A unit of work
    that never touches its session (every saga message, every order placed) costs a
    checkout, BEGIN, its statements and COMMIT, and no Session at all.

    Made by :meth:`Database.single_statement`, it has no transaction (``transactional``
    False): each statement commits on its own, and what needs a COMMIT to write before
    (the session, :meth:`publish`) raises :class:`NoTransaction`.
    """

    def __init__(
        self,
        raw: PoolProxiedConnection,
        engine: AsyncEngine,
        outbox: Outbox | None,
        *,
        transactional: bool = True,
    ):
        self._raw: PoolProxiedConnection | None = raw
        self._transactional = transactional
        self._adapter: Any = raw.dbapi_connection  # SQLAlchemy's asyncpg adapter
        self._engine = engine
        self._outbox = outbox
        self._session: AsyncSession | None = None
        self._bound: AsyncConnection | None = None  # what the session runs on
        self._outgoing: list[Outgoing] = []  # published, their rows written at commit
        self._written: list[tuple[int, Outgoing]] = []  # rows the caller's statements wrote
        self._after_commit: list[AfterCommit] = []
        self._redis_after_commit: list[RedisAfterCommit] = []
        self.committed: list[tuple[int, Outgoing]] = []
        """The outbox rows this unit of work committed (set once it has)."""
        self.inbox_claim: InboxClaim | None = None
        """Single-statement units of work of the bus: the message to record in the inbox by
        the effect's statement (set by the consumer)."""

    @property
    def connection(self) -> DriverConnection:
        """The asyncpg connection, inside this unit of work's transaction."""
        self._check_open()
        return cast(DriverConnection, self._adapter.driver_connection)

    @property
    def session(self) -> AsyncSession:
        """A session in this unit of work's transaction (made on first use)."""
        raw = self._check_open()
        if not self._transactional:
            raise NoTransaction(
                "a single-statement unit of work has no session: its one statement runs on"
                " uow.connection (or use Database.transaction())"
            )
        if self._session is None:
            sync_connection = Connection(self._engine.sync_engine, connection=raw)
            self._bound = AsyncConnection(self._engine, sync_connection)
            self._session = AsyncSession(bind=self._bound, expire_on_commit=False, autoflush=False)
        return self._session

    def publish(
        self,
        message: "Message",
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> "Envelope":
        """Send ``message`` if, and only if, this unit of work commits.

        Its ids default to the current context's (common.bus.outbox.envelope_for): what a
        bus handler publishes continues the conversation of the message it handles.
        """
        if not self._transactional:
            raise NoTransaction(
                "a single-statement unit of work has no COMMIT to write its outbox rows"
                " before: write them in the statement (uow.prepare, OutboxRows, uow.written)"
            )
        outgoing = self.prepare(message, correlation_id=correlation_id, causation_id=causation_id)
        self._outgoing.append(outgoing)
        return outgoing.envelope

    def prepare(
        self,
        message: "Message",
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> "Outgoing":
        """``message`` ready to send, for a statement of the caller's that writes its outbox
        row itself (common.bus.statements.OutboxRows), then :meth:`written`; a message
        prepared and never written is never sent."""
        self._check_open()
        if self._outbox is None:
            raise NoOutbox(
                "this Database has no outbox: give it one (common.bus.Outbox) to publish"
            )
        return self._outbox.prepare(
            message, correlation_id=correlation_id, causation_id=causation_id
        )

    def written(self, rows: Sequence[tuple[int, "Outgoing"]]) -> None:
        """Outbox rows a statement of the caller's wrote in this transaction: sent once it
        commits, like :meth:`publish`'s."""
        self._check_open()
        self._written.extend(rows)

    def after_commit(self, callback: AfterCommit) -> None:
        """Run ``callback`` once this unit of work committed (never if it rolls back).

        Callbacks run in order in the committing task; an exception in one is logged and
        swallowed: the transaction has committed, and its caller must not be told otherwise.
        """
        self._check_open()
        self._after_commit.append(callback)

    def after_commit_redis(self, commands: RedisAfterCommit) -> None:
        """Send Redis ``commands`` once this unit of work committed (never if it rolls back),
        pipelined with its others: one round trip per Redis client, and in a bus handler
        none of their own (the consumer queues them with its XACK). Best effort, as
        :meth:`after_commit` is."""
        self._check_open()
        self._redis_after_commit.append(commands)

    @property
    def redis_after_commit(self) -> list[RedisAfterCommit]:
        """The Redis commands this unit of work committed with, for a caller that sends them
        itself (``Database.transaction(send=False)``)."""
        return self._redis_after_commit

    def _check_open(self) -> PoolProxiedConnection:
        if self._raw is None:
            raise UnitOfWorkClosed("this unit of work's transaction has ended")
        return self._raw

    async def _begin(self) -> None:
        if not self._transactional:
            return
        try:
            await self._adapter._start_transaction()
        except BaseException:
            self._discard()  # a connection that cannot BEGIN is not handed out again
            raise

    async def _end(self, *, commit: bool) -> None:
        """COMMIT (the outbox rows written first) or ROLLBACK, then give the connection back.

        The unit of work is closed either way. A connection that cannot finish its
        transaction (the server went away, a cancellation mid-statement) is discarded, never
        pooled: the pool opens a fresh one.
        """
        if self._raw is None:
            return
        try:
            if commit:
                self.committed = await self._write_outbox()
            await self._finish(commit=commit)
        except BaseException:
            if commit:
                self.committed = []
                await self._end(commit=False)
            else:
                self._discard()
            raise
        await self._release()

    async def _write_outbox(self) -> list[tuple[int, "Outgoing"]]:
        if not self._outgoing or self._outbox is None:
            return self._written
        return self._written + await self._outbox.write(self.connection, self._outgoing)

    async def _finish(self, *, commit: bool) -> None:
        if not self._transactional:
            return  # each statement committed on its own
        if self._session is not None:  # its flush, then SQLAlchemy's COMMIT of it
            await (self._session.commit() if commit else self._session.rollback())
        transaction = self._adapter._transaction
        if transaction is not None:  # no session, or one that never ran a statement
            finish = transaction.commit if commit else transaction.rollback
            await self._adapter._call_and_discard(finish)

    async def _release(self) -> None:
        """Back to the pool (through the session's connection, when there is one). The
        transaction has ended: a failure here is logged and the connection discarded, never
        reported as the transaction's."""
        raw = self._raw
        if raw is None:
            return
        try:
            if self._bound is not None:
                assert self._session is not None
                await self._session.close()
                await self._bound.close()
            else:
                await give_back(raw, self._engine.pool)
        except Exception as exc:
            logger.warning("connection not returned cleanly: discarded", extra={"error": repr(exc)})
            self._discard()
        self._raw = None

    def _discard(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None and raw.dbapi_connection is not None:
            raw.invalidate()

    async def _committed(self, rows: list[tuple[int, "Outgoing"]], *, send: bool) -> None:
        outbox = self._outbox
        if send and rows and outbox is not None:
            await _logged(lambda: outbox.committed(rows))
        if send and self._redis_after_commit:
            await _logged(lambda: send_after_commit(self._redis_after_commit))
        for callback in self._after_commit:
            await _logged(callback)


@asynccontextmanager
async def closing_quietly(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Yield a read-only session, then close it; a failure to close is logged, not raised.

    Closing rolls the read's transaction back. If Postgres went away after the read (a
    restart), that rollback fails, but there is nothing to undo, and the caller may be a
    request dependency's teardown that runs after its response started: raising there makes
    the server drop the client's keep-alive connection, and the client's next request on it
    fails with no answer at all. The pool discards the broken connection either way.
    """
    try:
        yield session
    finally:
        try:
            await asyncio.shield(session.close())  # as AsyncSession's own exit does
        except Exception as exc:
            logger.warning("read-only session not closed cleanly", extra={"error": repr(exc)})


async def give_back(raw: PoolProxiedConnection, pool: Pool) -> None:
    """Return a checked-out connection to its pool.

    A pool with no room for it (an overflow connection coming back while ``pool_size`` wait
    idle) closes it, and closing awaits the driver, which SQLAlchemy can do only inside its
    greenlet. Outside one the close fails with ``MissingGreenlet``, is logged as an error, and
    leaves the Postgres session open until the garbage collector finds it: under load, the
    pool's overflow churn leaked server connections. That case, and only that one, pays for
    a greenlet (about 9 us); keeping the connection needs no await.
    """
    if _closes_on_return(pool):
        await greenlet_spawn(raw.close)
    else:
        raw.close()


def _closes_on_return(pool: Pool) -> bool:
    if isinstance(pool, QueuePool):
        return pool.checkedin() >= pool.size()
    return True  # a pool that keeps nothing (NullPool) closes every connection given back


async def _logged(callback: AfterCommit) -> None:
    try:
        result = callback()
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("after-commit callback failed")


class Database:
    """Owns the engine and hands out units of work.

    ``outbox`` is where units of work write what they publish; a process that publishes
    sets it once at start (``common.bus.Outbox`` does, for the API lifespan and the worker).
    """

    def __init__(self, engine: AsyncEngine, *, outbox: Outbox | None = None) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self.outbox = outbox

    @asynccontextmanager
    async def transaction(self, *, send: bool = True) -> AsyncIterator[UnitOfWork]:
        """A unit of work: commit when the block succeeds, roll back when it raises.

        ``send=False``: what it published is not sent after the commit but left in
        ``uow.committed`` (and its Redis commands in ``uow.redis_after_commit``) for the
        caller to send with its own Redis commands in one round trip (the bus consumer sends
        them with its XACK, :meth:`Outbox.stage`); unsent, the rows stay in the outbox table
        for the sweeper, as after any failed send.
        """
        uow = UnitOfWork(await self.engine.raw_connection(), self.engine, self.outbox)
        try:
            await uow._begin()
            yield uow
        except BaseException:
            await uow._end(commit=False)
            raise
        await uow._end(commit=True)
        await uow._committed(uow.committed, send=send)

    @asynccontextmanager
    async def single_statement(self, *, send: bool = True) -> AsyncIterator[UnitOfWork]:
        """A unit of work whose effects are one statement, so it needs no transaction: no
        BEGIN and no COMMIT round trip, the statement commits on its own.

        For hot work whose effects one statement can write, reads before it being only the
        input of its decision: a saga reply (the saga moved on under an optimistic lock,
        its steps, its outbox rows and the reply's inbox row in one statement), an order
        placed. Its outbox rows are written by that statement (:meth:`UnitOfWork.prepare`,
        common.bus.statements.OutboxRows, :meth:`UnitOfWork.written`) and sent once the
        block succeeds; :meth:`UnitOfWork.publish` and the ORM session, which need a
        COMMIT to write before, raise :class:`NoTransaction`. A second writing statement
        would commit apart from the first: such work takes a :meth:`transaction`.

        ``send``: as for :meth:`transaction`. A block that raises after its statement
        committed leaves that statement's outbox rows to the sweeper.
        """
        uow = UnitOfWork(
            await self.engine.raw_connection(), self.engine, self.outbox, transactional=False
        )
        try:
            yield uow
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or uow.connection.is_closed():
                uow._discard()  # a statement interrupted mid-flight: the connection is in doubt
            await uow._end(commit=False)
            raise
        await uow._end(commit=True)
        await uow._committed(uow.committed, send=send)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[DriverConnection]:
        """A pooled asyncpg connection outside any transaction: each statement commits on its
        own, with no BEGIN and COMMIT round trips. For one-statement work that runs often
        (a gauge's count, the outbox's DELETE of sent rows); anything that needs two
        statements to agree takes a :meth:`transaction`.

        A connection the block leaves in doubt (closed, or a statement interrupted by a
        cancellation) is discarded, never pooled.
        """
        raw = await self.engine.raw_connection()
        adapter: Any = raw.dbapi_connection
        driver: DriverConnection = adapter.driver_connection
        try:
            yield driver
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or driver.is_closed():
                raw.invalidate()
                raise
            await give_back(raw, self.engine.pool)
            raise
        await give_back(raw, self.engine.pool)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only; nothing is committed."""
        async with closing_quietly(self.sessions()) as session:
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

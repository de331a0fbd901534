"""Time-partitioned tables: the plan of each one, and the maintenance that keeps them sized.

Append-mostly history (saga steps, webhook attempts, the audit log, the bus inbox) is range
partitioned by time (docs/partitioning.md says which tables and why). This module:

* names and bounds partitions on a fixed grid (``<table>_pYYYYMMDD`` daily, ``<table>_pYYYYMM``
  monthly, ``<table>_default`` catching anything no partition covers);
* :func:`maintain`: creates the partitions ``ahead`` of now, moves rows that landed in the
  default partition into the partition that now covers them, and detaches and drops the
  partitions wholly older than the retention: a catalog operation, not a ``DELETE``;
* :func:`status`: what an operator or a metric needs (partitions, how far ahead they reach,
  rows in the default partition).

Exactly one process maintains a schema at a time: :func:`maintain_locked` takes a session
advisory lock (any replica of any worker of that schema may hold it; the others skip the run).
Every DDL transaction runs with a short ``lock_timeout`` (100 ms): behind a running
transaction it waits at most that long (and the writers queued behind it wait at most that
long too), then tries again a moment later, a few times, before it gives up until the next run.
"""

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, TypeVar

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.backoff import retrying
from common.unavailable import is_transaction_conflict

logger = logging.getLogger("common.partitions")
T = TypeVar("T")
LOCK_RETRIES = Counter(
    "db_partition_ddl_lock_retries_total",
    "Partition DDL transactions tried again: a lock not granted in time, or a deadlock lost",
)

Interval = Literal["day", "month"]

# CREATE ... PARTITION OF, DETACH and DROP take an ACCESS EXCLUSIVE lock on the parent (DETACH
# CONCURRENTLY is not allowed while a default partition exists). Behind a running transaction
# the statement waits, and every writer queues behind it: this bounds that stall. A statement
# that times out is tried again a few times, a moment later (the transactions in its way are
# short: one usually ends between two attempts), then left to the next run (partitions exist
# days ahead: many runs' margin).
DDL_LOCK_TIMEOUT = "100ms"
DDL_ATTEMPTS = 5
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout that expired
DEFAULT_ROWS_CAP = 10_000  # rows in a default partition are counted up to this


@dataclass(frozen=True)
class PartitionedTable:
    """One partitioned table: its partition key, grid, how far ahead and how long back.

    ``storage`` is the ``WITH (...)`` of each new partition (autovacuum settings: a partitioned
    parent takes none of its own in PostgreSQL 15).
    """

    schema: str
    name: str
    column: str
    interval: Interval
    retention_days: int
    ahead_days: int = 14
    storage: str = ""

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    @property
    def default_partition(self) -> str:
        return f"{self.name}_default"


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None  # None: the default partition (or an unbounded one)
    upper: datetime | None
    rows_estimate: int


@dataclass(frozen=True)
class TableStatus:
    table: str
    partitions: list[Partition]
    ahead_seconds: float  # from now to the upper bound of the newest partition
    # Rows no partition covers (up to DEFAULT_ROWS_CAP): > 0 is an alert (they should be moved).
    default_rows: int

    @property
    def oldest(self) -> datetime | None:
        bounded = [p.lower for p in self.partitions if p.lower is not None]
        return min(bounded) if bounded else None


@dataclass
class MaintenanceResult:
    created: list[str]
    dropped: list[str]
    moved_rows: int
    skipped: bool = False  # another process holds the lock


# -- the grid --------------------------------------------------------------------------------


def floor_to(moment: datetime, interval: Interval) -> datetime:
    """The start of the day or month ``moment`` falls in (UTC)."""
    moment = moment.astimezone(UTC)
    day = date(moment.year, moment.month, 1 if interval == "month" else moment.day)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def next_bound(lower: datetime, interval: Interval) -> datetime:
    """The grid's next boundary strictly after ``lower`` (which may be off the grid)."""
    start = floor_to(lower, interval)
    if interval == "day":
        return start + timedelta(days=1)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def partition_name(table: PartitionedTable, lower: datetime) -> str:
    stamp = lower.strftime("%Y%m%d" if table.interval == "day" else "%Y%m")
    return f"{table.name}_p{stamp}"


def is_managed(table: PartitionedTable, name: str) -> bool:
    """Partitions on the grid are the maintenance's to drop; any other (e.g. a legacy one) not."""
    suffix = name.removeprefix(f"{table.name}_p")
    return suffix != name and suffix.isdigit() and len(suffix) in (6, 8)


def advisory_key(schema: str) -> int:
    """A stable signed 64-bit key for the schema's maintenance lock."""
    digest = hashlib.sha256(f"partition-maintenance:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# -- DDL text (shared with the migrations, which run it synchronously) ----------------------


def _literal(moment: datetime) -> str:
    return f"'{moment.astimezone(UTC).isoformat()}'"


def create_partition_sql(table: PartitionedTable, lower: datetime, upper: datetime) -> str:
    storage = f" WITH ({table.storage})" if table.storage else ""
    return (
        f'CREATE TABLE IF NOT EXISTS "{table.schema}"."{partition_name(table, lower)}" '
        f"PARTITION OF {table.qualified} "
        f"FOR VALUES FROM ({_literal(lower)}) TO ({_literal(upper)}){storage}"
    )


def create_default_sql(table: PartitionedTable) -> str:
    return (
        f'CREATE TABLE IF NOT EXISTS "{table.schema}"."{table.default_partition}" '
        f"PARTITION OF {table.qualified} DEFAULT"
    )


def grid(
    table: PartitionedTable, start: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """Consecutive (lower, upper) bounds from ``start`` until one reaches past ``until``."""
    bounds, lower = [], start
    while lower < until:
        upper = next_bound(lower, table.interval)
        bounds.append((lower, upper))
        lower = upper
    return bounds


def create_initial_partitions(
    connection: Connection, table: PartitionedTable, *, since: datetime | None
) -> None:
    """For a migration: partitions from ``since`` (the oldest row) to ``ahead`` days from now,
    and the default partition."""
    now = datetime.now(UTC)
    start = floor_to(min(since or now, now), table.interval)
    for lower, upper in grid(table, start, now + timedelta(days=table.ahead_days)):
        connection.execute(text(create_partition_sql(table, lower, upper)))
    connection.execute(text(create_default_sql(table)))


# -- reading the catalog --------------------------------------------------------------------

_PARTITIONS = text(
    """
    SELECT child.relname AS name,
           pg_get_expr(child.relpartbound, child.oid) AS bound,
           greatest(child.reltuples, 0)::bigint AS rows_estimate
    FROM pg_inherits
    JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
    JOIN pg_namespace ns ON ns.oid = parent.relnamespace
    JOIN pg_class child ON child.oid = pg_inherits.inhrelid
    WHERE ns.nspname = :schema AND parent.relname = :table
    """
)

# Bounds as PostgreSQL prints them: FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('...').
_BOUND = re.compile(r"(FROM|TO) \((?:'([^']+)'|MINVALUE|MAXVALUE)\)")


def parse_bounds(bound: str) -> tuple[datetime | None, datetime | None]:
    """(lower, upper) of a range partition's bound expression; None for MIN/MAXVALUE."""
    found = {side: value for side, value in _BOUND.findall(bound)}
    lower, upper = found.get("FROM"), found.get("TO")
    return (
        datetime.fromisoformat(lower) if lower else None,
        datetime.fromisoformat(upper) if upper else None,
    )


async def list_partitions(connection: AsyncConnection, table: PartitionedTable) -> list[Partition]:
    return await _partitions_of(connection, table.schema, table.name)


async def _partitions_of(connection: AsyncConnection, schema: str, name: str) -> list[Partition]:
    rows = (await connection.execute(_PARTITIONS, {"schema": schema, "table": name})).all()
    partitions = []
    for row in rows:
        lower, upper = parse_bounds(row.bound)
        partitions.append(Partition(row.name, lower, upper, int(row.rows_estimate)))
    return sorted(partitions, key=lambda p: (p.lower is not None, p.lower or datetime.min))


async def status(
    connection: AsyncConnection, schema: str, name: str, *, now: datetime | None = None
) -> TableStatus:
    """The partitions of ``schema.name``, how far ahead of ``now`` (the clock's, unless given)
    they reach, rows in its default one."""
    partitions = await _partitions_of(connection, schema, name)
    uppers = [p.upper for p in partitions if p.upper is not None]
    ahead = (max(uppers) - (now or datetime.now(UTC))).total_seconds() if uppers else 0.0
    default_rows = 0
    for partition in partitions:
        if partition.lower is None and partition.upper is None:
            # Counted up to a cap: the default partition is empty when all is well, and a page
            # view must not count millions of rows when it is not.
            default_rows += int(
                (
                    await connection.execute(
                        text(
                            "SELECT count(*) FROM (SELECT 1 FROM "  # noqa: S608 (identifiers from code, never input)
                            f'"{schema}"."{partition.name}" LIMIT {DEFAULT_ROWS_CAP}) capped'
                        )
                    )
                ).scalar_one()
            )
    return TableStatus(f"{schema}.{name}", partitions, ahead, default_rows)


_PARTITIONED_TABLES = text(
    """
    SELECT ns.nspname AS schema, c.relname AS name
    FROM pg_partitioned_table pt
    JOIN pg_class c ON c.oid = pt.partrelid
    JOIN pg_namespace ns ON ns.oid = c.relnamespace
    WHERE NOT c.relispartition
    ORDER BY 1, 2
    """
)


async def database_status(connection: AsyncConnection) -> list[TableStatus]:
    """Every partitioned table of the database, every schema (the console, make db-status)."""
    tables = (await connection.execute(_PARTITIONED_TABLES)).all()
    return [await status(connection, row.schema, row.name) for row in tables]


# -- maintenance ----------------------------------------------------------------------------


async def _ddl(connection: AsyncConnection, *statements: str) -> None:
    """Run ``statements`` in one short DDL transaction (:func:`_in_ddl_transaction`)."""

    async def run() -> None:
        for statement in statements:
            await connection.execute(text(statement))

    await _in_ddl_transaction(connection, run)


async def _in_ddl_transaction(connection: AsyncConnection, work: Callable[[], Awaitable[T]]) -> T:
    """``work`` in one transaction with the DDL lock timeout; when a lock is not granted in
    time, or Postgres chose this transaction to break a deadlock, all of it again (up to
    ``DDL_ATTEMPTS``) after a short, growing pause, so that writers never queue behind it
    for longer than one timeout.

    The deadlock happens under load: a writer that holds a partition's lock and asks for a
    stronger one on the same table queues behind the DDL's request, which waits for the
    writer's lock; Postgres sees the cycle at once and aborts the DDL (``40P01``). Its
    transaction rolled back whole, so running it again is safe, and the writer went on."""

    async def in_one_transaction() -> T:
        async with connection.begin():
            await connection.execute(text(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
            return await work()

    return await retrying(
        in_one_transaction,
        attempts=DDL_ATTEMPTS,
        retryable=_may_try_again,
        base=0.2,
        cap=2.0,
        before_retry=lambda *_: LOCK_RETRIES.inc(),
    )


def _may_try_again(error: Exception) -> bool:
    """The lock was not granted in time, or the transaction lost a deadlock."""
    if not isinstance(error, DBAPIError):
        return False
    lock_timeout = getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE
    return lock_timeout or is_transaction_conflict(error)


async def _create_ahead(
    connection: AsyncConnection, table: PartitionedTable, now: datetime
) -> tuple[list[str], int]:
    """Create the missing partitions up to ``ahead_days``; rows in the default partition that
    a new partition covers move into it first (ATTACH would fail on them otherwise)."""
    partitions = await list_partitions(connection, table)
    await connection.commit()
    uppers = [p.upper for p in partitions if p.upper is not None and p.lower is not None]
    # Continue the grid from the newest partition (a maintenance that was down for days fills
    # the gap: rows written meanwhile wait in the default partition), but never from before
    # the retention (that would create partitions only to drop them).
    oldest_kept = floor_to(now - timedelta(days=table.retention_days), table.interval)
    start = max(uppers) if uppers else floor_to(now, table.interval)
    start = max(start, oldest_kept)
    created, moved = [], 0
    for lower, upper in grid(table, start, now + timedelta(days=table.ahead_days)):
        moved += await _create_one(connection, table, lower, upper)
        created.append(partition_name(table, lower))
    return created, moved


async def _create_one(
    connection: AsyncConnection, table: PartitionedTable, lower: datetime, upper: datetime
) -> int:
    name = f'"{table.schema}"."{partition_name(table, lower)}"'
    default = f'"{table.schema}"."{table.default_partition}"'

    async def create() -> int:
        has_default = (
            await connection.execute(
                text("SELECT to_regclass(:name) IS NOT NULL"), {"name": default}
            )
        ).scalar_one()
        stray = 0
        if has_default:
            stray = (
                await connection.execute(
                    text(
                        f"SELECT count(*) FROM {default} "  # noqa: S608 (identifiers from code, never input)
                        f"WHERE {table.column} >= :lower AND {table.column} < :upper"
                    ),
                    {"lower": lower, "upper": upper},
                )
            ).scalar_one()
        if not stray:
            await connection.execute(text(create_partition_sql(table, lower, upper)))
            return 0
        storage = f" WITH ({table.storage})" if table.storage else ""
        await connection.execute(
            text(f"CREATE TABLE {name} (LIKE {table.qualified} INCLUDING DEFAULTS){storage}")
        )
        await connection.execute(
            text(
                f"WITH moved AS (DELETE FROM {default} WHERE {table.column} >= :lower "  # noqa: S608 (identifiers from code, never input)
                f"AND {table.column} < :upper RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            ),
            {"lower": lower, "upper": upper},
        )
        await connection.execute(
            text(
                f"ALTER TABLE {table.qualified} ATTACH PARTITION {name} "
                f"FOR VALUES FROM ({_literal(lower)}) TO ({_literal(upper)})"
            )
        )
        logger.warning(
            "rows moved out of the default partition",
            extra={"table": table.name, "rows": stray, "partition": partition_name(table, lower)},
        )
        return int(stray)

    return await _in_ddl_transaction(connection, create)


async def detach_and_drop(connection: AsyncConnection, table: PartitionedTable, name: str) -> None:
    """One partition detached and dropped, in one short DDL transaction (a catalog operation:
    no row is read), tried again as :func:`_in_ddl_transaction` says."""
    qualified = f'"{table.schema}"."{name}"'
    await _ddl(
        connection,
        f"ALTER TABLE {table.qualified} DETACH PARTITION {qualified}",
        f"DROP TABLE {qualified}",
    )


async def _drop_expired(
    connection: AsyncConnection, table: PartitionedTable, now: datetime
) -> list[str]:
    """Detach and drop the grid partitions whose every row is older than the retention."""
    cutoff = now - timedelta(days=table.retention_days)
    dropped = []
    partitions = await list_partitions(connection, table)
    await connection.commit()
    for partition in partitions:
        if partition.upper is None or partition.upper > cutoff:
            continue
        if not is_managed(table, partition.name):
            continue
        await detach_and_drop(connection, table, partition.name)
        dropped.append(partition.name)
    if any(p.name == table.default_partition for p in partitions):
        # A late write (a message replayed after the retention) found no partition: it went to
        # the default one, and is as expired as the partition it missed.
        await _ddl(
            connection,
            f'DELETE FROM "{table.schema}"."{table.default_partition}" '  # noqa: S608 (identifiers from code, never input)
            f"WHERE {table.column} < '{cutoff.isoformat()}'",
        )
    return dropped


async def maintain(
    connection: AsyncConnection, tables: Sequence[PartitionedTable], *, now: datetime | None = None
) -> MaintenanceResult:
    """Create ahead, move strays out of the default partitions, drop expired: every table."""
    now = now or datetime.now(UTC)
    result = MaintenanceResult(created=[], dropped=[], moved_rows=0)
    for table in tables:
        if (
            await connection.execute(text("SELECT to_regclass(:t)"), {"t": table.qualified})
        ).scalar_one() is None:
            continue  # not migrated yet
        await connection.commit()
        async with connection.begin():
            await connection.execute(text(create_default_sql(table)))
        created, moved = await _create_ahead(connection, table, now)
        result.created += created
        result.moved_rows += moved
        result.dropped += await _drop_expired(connection, table, now)
    return result


async def maintain_locked(
    engine: AsyncEngine,
    schema: str,
    tables: Sequence[PartitionedTable],
    *,
    now: datetime | None = None,
) -> MaintenanceResult:
    """:func:`maintain` if this process gets the schema's advisory lock, else skip.

    A session lock (not a transaction one): maintenance commits table by table and the lock
    must outlive those commits. It is released at the end, or by the server when the
    connection dies, so a crashed holder never blocks the others.
    """
    key = advisory_key(schema)
    async with engine.connect() as connection:
        got = (
            await connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
        ).scalar_one()
        await connection.commit()
        if not got:
            return MaintenanceResult(created=[], dropped=[], moved_rows=0, skipped=True)
        try:
            return await maintain(connection, tables, now=now)
        finally:
            if connection.in_transaction():
                await connection.rollback()
            await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            await connection.commit()

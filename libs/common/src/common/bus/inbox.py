"""Inbox: the record of handled messages that makes at-least-once delivery effectively-once.

The consumer inserts ``(message_id, consumer_group, occurred_at)`` in the same transaction as
the handler's effect. If the row already exists, the effect already happened (it committed
together with that row), so the handler is skipped and the entry acknowledged. If the
handler fails, its transaction rolls back and takes the inbox row with it, so the retry
runs the handler again.

The table is range partitioned by ``occurred_at``, the envelope's own time (daily by
default): a redelivery or a dead-letter replay carries the same envelope, so it maps to the
same key and the same partition, and the primary key (which must hold the partition key)
still catches it. Retention is dropping a day's partition (common.partitions), not a
``DELETE``. Rows written by the previous release (which does not know ``occurred_at``) get
the column's default, ``-infinity``, and land in the ``inbox_legacy`` partition, where the
old key ``(message_id, consumer_group)`` is unique as before; :func:`record_many` looks
there too, so a message handled by an old replica is not handled again by a new one
(docs/partitioning.md).
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus.statements import LEGACY_OCCURRED_AT, InboxStatements
from common.db import DriverConnection
from common.partitions import PartitionedTable

# Each day's partition is inserted into, never updated, then dropped whole: vacuum matters only
# to keep the visibility map current (the dedup probe is an index lookup), so let inserts
# trigger it early, and analyze often (the planner sees a new, empty partition every day).
INBOX_PARTITION_STORAGE = (
    "autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05"
)


def add_inbox_table(metadata: MetaData) -> Table:
    """The ``inbox`` table in ``metadata``'s schema; call once in a service's models.py."""
    return Table(
        "inbox",
        metadata,
        Column("message_id", Uuid, primary_key=True),
        Column("consumer_group", String(100), primary_key=True),
        Column(
            "occurred_at",
            DateTime(timezone=True),
            primary_key=True,
            server_default=text(f"'{LEGACY_OCCURRED_AT}'"),
        ),
        Column("handled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        postgresql_partition_by="RANGE (occurred_at)",
    )


def legacy_partition_sql(table: Table) -> list[str]:
    """DDL of the partition that holds the previous release's rows (``occurred_at`` unset)."""
    schema = f'"{table.schema}"'
    return [
        f'CREATE TABLE {schema}."{table.name}_legacy" PARTITION OF {schema}."{table.name}" '
        "FOR VALUES FROM (MINVALUE) TO ('2000-01-01')",
        # Only this partition is pruned by handled_at (prune_legacy), so only it has the index.
        f'CREATE INDEX "ix_{table.name}_legacy_handled_at" '
        f'ON {schema}."{table.name}_legacy" (handled_at)',
    ]


def partitioned(table: Table, *, retention_days: int, ahead_days: int = 14) -> PartitionedTable:
    """The inbox's partition plan: daily (a day is the unit retention drops)."""
    return PartitionedTable(
        schema=str(table.schema),
        name=table.name,
        column="occurred_at",
        interval="day",
        retention_days=retention_days,
        ahead_days=ahead_days,
        storage=INBOX_PARTITION_STORAGE,
    )


async def record_many(
    connection: DriverConnection,
    table: Table,
    messages: Sequence[tuple[uuid.UUID, datetime]],
    group: str,
) -> set[uuid.UUID]:
    """Mark a batch of messages ``(envelope id, envelope occurred_at)`` handled by ``group``
    in one INSERT (common.bus.statements, as the consumer does); the ids that were new (the
    others were handled before: skip their handlers).

    A concurrent duplicate blocks on the primary key until the first transaction ends, then
    sees the row (first committed) or inserts it (first rolled back): never both effects.
    """
    return await InboxStatements(table).record(connection, messages, group)


async def record(
    connection: DriverConnection,
    table: Table,
    message_id: uuid.UUID,
    occurred_at: datetime,
    group: str,
) -> bool:
    """Mark one message handled by ``group``; False when it already was (skip the handler)."""
    return message_id in await record_many(connection, table, [(message_id, occurred_at)], group)


async def prune_legacy(session: AsyncSession, table: Table, *, older_than: timedelta) -> int:
    """Forget the previous release's handled messages older than ``older_than``.

    Only the ``inbox_legacy`` partition is pruned row by row (it receives rows only while a
    previous-release replica runs); every other partition is dropped whole by the partition
    maintenance. Keep the retention well above the longest time a message can take to be
    redelivered (the stream retention and the dead-letter replay window).
    """
    cutoff = datetime.now(UTC) - older_than
    name = f'"{table.schema}"."{table.name}"'
    result = await session.execute(
        text(
            f"DELETE FROM {name} WHERE occurred_at = '{LEGACY_OCCURRED_AT}' "  # noqa: S608 (identifiers from code, never input)
            "AND handled_at < :cutoff"
        ),
        {"cutoff": cutoff},
    )
    return int(getattr(result, "rowcount", 0) or 0)

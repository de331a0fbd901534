"""Inbox: the record of handled messages that makes at-least-once delivery effectively-once.

The consumer inserts ``(message_id, consumer_group)`` in the same transaction as the
handler's effect. If the row already exists, the effect already happened (it committed
together with that row), so the handler is skipped and the entry acknowledged. If the
handler fails, its transaction rolls back and takes the inbox row with it, so the retry
runs the handler again.
"""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession


def add_inbox_table(metadata: MetaData) -> Table:
    """The ``inbox`` table in ``metadata``'s schema; call once in a service's models.py."""
    return Table(
        "inbox",
        metadata,
        Column("message_id", Uuid, primary_key=True),
        Column("consumer_group", String(100), primary_key=True),
        Column(
            "handled_at",
            DateTime(timezone=True),
            nullable=False,
            server_default=func.now(),
            index=True,
        ),
    )


async def record(session: AsyncSession, table: Table, message_id: uuid.UUID, group: str) -> bool:
    """Mark the message handled by ``group``; False when it already was (skip the handler).

    A concurrent duplicate blocks on the primary key until the first transaction ends, then
    sees the row (first committed) or inserts it (first rolled back): never both effects.
    """
    statement = (
        insert(table)
        .values(message_id=message_id, consumer_group=group)
        .on_conflict_do_nothing()
        .returning(table.c.message_id)
    )
    return (await session.execute(statement)).first() is not None


async def prune(session: AsyncSession, table: Table, *, older_than: timedelta) -> int:
    """Forget handled messages older than ``older_than`` (a worker timer can call this).

    Keep it well above the longest time a message can take to be redelivered (the stream
    retention and the dead-letter replay window), or a late duplicate would run again.
    """
    cutoff = datetime.now(UTC) - older_than
    result = await session.execute(delete(table).where(table.c.handled_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)

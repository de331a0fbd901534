"""Every query of the notifications service."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notifications.models import Notification


async def list_notifications(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[Notification]:
    statement = select(Notification).where(Notification.user_id == user_id)
    if after is not None:
        statement = statement.where(tuple_(Notification.created_at, Notification.id) < after)
    statement = statement.order_by(Notification.created_at.desc(), Notification.id.desc())
    return (await session.execute(statement.limit(limit))).scalars().all()


async def insert_notification(session: AsyncSession, notification: Notification) -> Notification:
    """Insert unless one with the same dedup key exists; either way return the stored one."""
    statement = (
        insert(Notification)
        .values(
            id=notification.id,
            user_id=notification.user_id,
            kind=notification.kind,
            order_id=notification.order_id,
            dedup_key=notification.dedup_key,
        )
        .on_conflict_do_nothing(index_elements=[Notification.dedup_key])
    )
    await session.execute(statement)
    stored = await session.execute(
        select(Notification).where(Notification.dedup_key == notification.dedup_key)
    )
    return stored.scalar_one()

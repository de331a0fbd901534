"""Every query of the notifications service."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_
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

"""Every query of the orders service."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from orders.models import Order


async def list_orders(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[Order]:
    statement = select(Order).where(Order.user_id == user_id)
    if status is not None:
        statement = statement.where(Order.status == status)
    if after is not None:
        statement = statement.where(tuple_(Order.created_at, Order.id) < after)
    statement = statement.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    return (await session.execute(statement)).scalars().all()

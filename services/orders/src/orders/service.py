"""Business rules of the orders service. Functions take a session; they never commit."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from common.pagination import Page, decode_cursor, encode_cursor
from orders import repository
from orders.schemas import OrderOut


async def list_orders(
    session: AsyncSession, user_id: uuid.UUID, *, status: str | None, limit: int, cursor: str | None
) -> Page[OrderOut]:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_orders(
        session, user_id, status=status, limit=limit + 1, after=after
    )
    page = rows[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit and page else None
    )
    return Page[OrderOut](items=[OrderOut.model_validate(o) for o in page], next_cursor=next_cursor)

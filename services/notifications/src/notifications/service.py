"""Business rules of the notifications service. Functions take a session; they never commit."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from common.pagination import Page, decode_cursor, encode_cursor
from notifications import repository
from notifications.schemas import NotificationOut


async def list_notifications(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, cursor: str | None
) -> Page[NotificationOut]:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_notifications(session, user_id, limit=limit + 1, after=after)
    page = rows[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit and page else None
    )
    return Page[NotificationOut](
        items=[NotificationOut.model_validate(n) for n in page], next_cursor=next_cursor
    )

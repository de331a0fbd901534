"""Business rules of the notifications service. Functions take a session; they never commit."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from common import bus
from common.contracts import NotificationRecorded
from common.pagination import Page, decode_cursor, encode_cursor
from notifications import repository
from notifications.models import Notification
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


async def record(
    session: AsyncSession, *, user_id: uuid.UUID, kind: str, order_id: uuid.UUID | None
) -> Notification:
    """Store the notification once, whatever the redeliveries (unique dedup key)."""
    subject = order_id or user_id
    notification = Notification(
        id=uuid.uuid4(),
        user_id=user_id,
        kind=kind,
        order_id=order_id,
        dedup_key=f"{kind}:{subject}",
    )
    return await repository.insert_notification(session, notification)


async def record_order_outcome(
    session: AsyncSession, *, user_id: uuid.UUID, kind: str, order_id: uuid.UUID
) -> None:
    """Record the outcome's notification and tell the saga it is recorded."""
    notification = await record(session, user_id=user_id, kind=kind, order_id=order_id)
    await bus.publish(
        session,
        NotificationRecorded(
            notification_id=notification.id, order_id=order_id, user_id=user_id, kind=kind
        ),
    )

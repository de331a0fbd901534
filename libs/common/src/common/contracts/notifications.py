"""Events produced by the notifications service."""

import uuid
from typing import ClassVar

from common.contracts.base import Message, event_stream


class NotificationRecorded(Message):
    """Reply to the saga: the user's notification for this outcome is stored."""

    TYPE: ClassVar[str] = "notifications.NotificationRecorded"
    STREAM: ClassVar[str] = event_stream("notifications")
    PRODUCER: ClassVar[str] = "notifications"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("orders", "users")

    notification_id: uuid.UUID
    order_id: uuid.UUID | None
    user_id: uuid.UUID
    kind: str

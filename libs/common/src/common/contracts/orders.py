"""Events produced by the orders service (the saga's outcomes)."""

import uuid
from typing import ClassVar

from common.contracts.base import Message, event_stream


class OrderApproved(Message):
    """Event: the order's credit is held; the order is approved."""

    TYPE: ClassVar[str] = "orders.OrderApproved"
    STREAM: ClassVar[str] = event_stream("orders")
    PRODUCER: ClassVar[str] = "orders"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("notifications",)

    order_id: uuid.UUID
    user_id: uuid.UUID
    total_cents: int


class OrderRejected(Message):
    """Event: the order was rejected, with the reason."""

    TYPE: ClassVar[str] = "orders.OrderRejected"
    STREAM: ClassVar[str] = event_stream("orders")
    PRODUCER: ClassVar[str] = "orders"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("notifications",)

    order_id: uuid.UUID
    user_id: uuid.UUID
    reason: str


class OrderCancelled(Message):
    """Event: the order was cancelled and its credit released."""

    TYPE: ClassVar[str] = "orders.OrderCancelled"
    STREAM: ClassVar[str] = event_stream("orders")
    PRODUCER: ClassVar[str] = "orders"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("notifications",)

    order_id: uuid.UUID
    user_id: uuid.UUID

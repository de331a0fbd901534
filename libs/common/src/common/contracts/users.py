"""Messages handled or produced by the users service."""

import uuid
from typing import ClassVar, Literal

from pydantic import Field

from common.contracts.base import Message, command_stream, event_stream

RejectionReason = Literal["insufficient_credit", "user_not_found", "user_inactive"]


class ReserveCredit(Message):
    """Command (orders -> users): hold ``amount_cents`` of the user's credit for an order."""

    TYPE: ClassVar[str] = "users.ReserveCredit"
    STREAM: ClassVar[str] = command_stream("users")
    PRODUCER: ClassVar[str] = "orders"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("users",)

    order_id: uuid.UUID
    user_id: uuid.UUID
    amount_cents: int = Field(gt=0)


class ReleaseCredit(Message):
    """Command (orders -> users): give back the credit held for an order, if any."""

    TYPE: ClassVar[str] = "users.ReleaseCredit"
    STREAM: ClassVar[str] = command_stream("users")
    PRODUCER: ClassVar[str] = "orders"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("users",)

    order_id: uuid.UUID
    user_id: uuid.UUID


class CreditReserved(Message):
    """Reply: the credit for the order is held."""

    TYPE: ClassVar[str] = "users.CreditReserved"
    STREAM: ClassVar[str] = event_stream("users")
    PRODUCER: ClassVar[str] = "users"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("orders",)

    order_id: uuid.UUID
    user_id: uuid.UUID
    amount_cents: int


class CreditRejected(Message):
    """Reply: the credit could not be held, and why."""

    TYPE: ClassVar[str] = "users.CreditRejected"
    STREAM: ClassVar[str] = event_stream("users")
    PRODUCER: ClassVar[str] = "users"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("orders",)

    order_id: uuid.UUID
    user_id: uuid.UUID
    reason: RejectionReason


class CreditReleased(Message):
    """Reply: the credit held for the order (if there was any) is released."""

    TYPE: ClassVar[str] = "users.CreditReleased"
    STREAM: ClassVar[str] = event_stream("users")
    PRODUCER: ClassVar[str] = "users"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("orders",)

    order_id: uuid.UUID
    user_id: uuid.UUID
    amount_cents: int


class UserRegistered(Message):
    """Event: a new user signed up."""

    TYPE: ClassVar[str] = "users.UserRegistered"
    STREAM: ClassVar[str] = event_stream("users")
    PRODUCER: ClassVar[str] = "users"
    CONSUMERS: ClassVar[tuple[str, ...]] = ("notifications",)

    user_id: uuid.UUID
    email: str
    name: str

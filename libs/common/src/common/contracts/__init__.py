"""Message contracts: one pydantic model per message type, shared by producer and consumers.

Types are named ``<namespace>.<Name>``. Commands live in the namespace of the service that
handles them (``users.ReserveCredit``, sent by orders); events in the namespace of the
service that produced them (``users.CreditReserved``). Each model names the stream it
travels on, so the bus needs no routing table: a command goes to its handler's command
stream, an event to its producer's event stream.
"""

from common.contracts.base import Message
from common.contracts.notifications import NotificationRecorded
from common.contracts.orders import OrderApproved, OrderCancelled, OrderRejected
from common.contracts.users import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    ReleaseCredit,
    ReserveCredit,
    UserRegistered,
)
from common.contracts.vocabulary import NotificationKind, SagaState, StepName, StepStatus

ALL_MESSAGES: tuple[type[Message], ...] = (
    ReserveCredit,
    ReleaseCredit,
    CreditReserved,
    CreditRejected,
    CreditReleased,
    UserRegistered,
    OrderApproved,
    OrderRejected,
    OrderCancelled,
    NotificationRecorded,
)
MESSAGE_TYPES: dict[str, type[Message]] = {message.TYPE: message for message in ALL_MESSAGES}


def groups_reading(stream: str) -> tuple[str, ...]:
    """Every consumer group that some contract on ``stream`` (e.g. ``users.events``) names."""
    return tuple(
        sorted({group for m in ALL_MESSAGES if stream == m.STREAM for group in m.CONSUMERS})
    )


__all__ = [
    "ALL_MESSAGES",
    "MESSAGE_TYPES",
    "CreditRejected",
    "CreditReleased",
    "CreditReserved",
    "Message",
    "NotificationKind",
    "NotificationRecorded",
    "OrderApproved",
    "OrderCancelled",
    "OrderRejected",
    "ReleaseCredit",
    "ReserveCredit",
    "SagaState",
    "StepName",
    "StepStatus",
    "UserRegistered",
    "groups_reading",
]

"""Replies to the saga, mapped to saga events. Idempotent: the bus's inbox drops duplicates,
and the saga itself ignores replies that no longer apply."""

from common.bus import Envelope, Handler
from common.contracts import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    Message,
    NotificationRecorded,
)
from common.db import UnitOfWork
from orders import saga, service
from orders.settings import Settings


def handlers(settings: Settings) -> dict[type[Message], Handler]:
    """Message type -> handler, for the orders worker's consumer."""

    async def on_credit_reserved(uow: UnitOfWork, _: Envelope, msg: CreditReserved) -> None:
        await service.handle_event(uow, settings, msg.order_id, saga.CreditReserved())

    async def on_credit_rejected(uow: UnitOfWork, _: Envelope, msg: CreditRejected) -> None:
        await service.handle_event(uow, settings, msg.order_id, saga.CreditRejected(msg.reason))

    async def on_credit_released(uow: UnitOfWork, _: Envelope, msg: CreditReleased) -> None:
        await service.handle_event(uow, settings, msg.order_id, saga.CreditReleased())

    async def on_notification_recorded(
        uow: UnitOfWork, _: Envelope, msg: NotificationRecorded
    ) -> None:
        if msg.order_id is not None:  # a welcome notice belongs to no saga
            event = saga.NotificationRecorded(msg.kind)
            await service.handle_event(uow, settings, msg.order_id, event)

    return {
        CreditReserved: on_credit_reserved,
        CreditRejected: on_credit_rejected,
        CreditReleased: on_credit_released,
        NotificationRecorded: on_notification_recorded,
    }

"""Replies to the saga, mapped to saga events. Idempotent: the bus's inbox drops duplicates,
and the saga itself ignores replies that no longer apply."""

from common.bus import Envelope, Handlers, Only
from common.contracts import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    NotificationRecorded,
)
from common.db import UnitOfWork
from orders import saga, service
from orders.settings import Settings


def handlers(settings: Settings) -> Handlers:
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
        assert msg.order_id is not None  # see Only below
        await service.handle_event(uow, settings, msg.order_id, saga.NotificationRecorded(msg.kind))

    return {
        CreditReserved: on_credit_reserved,
        CreditRejected: on_credit_rejected,
        CreditReleased: on_credit_released,
        # An outcome's notification closes its saga; a welcome belongs to no saga.
        NotificationRecorded: Only(lambda msg: msg.order_id is not None, on_notification_recorded),
    }

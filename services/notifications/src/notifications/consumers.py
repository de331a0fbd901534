"""Order outcomes and sign-ups, mapped to notifications. Exactly one per outcome: the bus's
inbox drops redelivered messages and a unique dedup key drops repeated events; each one is
confirmed (NotificationRecorded) every time it is announced, so its announcer can stop.

No lock order to keep (common.bus.Locks): each handler's statement runs alone, in a
transaction of its own, holding its user's advisory lock only for that statement."""

from common.bus import Envelope, Handlers, OneStatement
from common.contracts import (
    NotificationKind,
    OrderApproved,
    OrderCancelled,
    OrderRejected,
    UserRegistered,
)
from common.db import UnitOfWork
from notifications import service
from notifications.service import Fanout


def handlers(fanout: Fanout) -> Handlers:
    """Message type -> handler, for the notifications worker's consumer."""

    async def on_order_approved(uow: UnitOfWork, _: Envelope, event: OrderApproved) -> None:
        await service.record_and_confirm(
            uow,
            fanout,
            user_id=event.user_id,
            kind=NotificationKind.ORDER_APPROVED,
            order_id=event.order_id,
        )

    async def on_order_rejected(uow: UnitOfWork, _: Envelope, event: OrderRejected) -> None:
        await service.record_and_confirm(
            uow,
            fanout,
            user_id=event.user_id,
            kind=NotificationKind.ORDER_REJECTED,
            order_id=event.order_id,
        )

    async def on_order_cancelled(uow: UnitOfWork, _: Envelope, event: OrderCancelled) -> None:
        await service.record_and_confirm(
            uow,
            fanout,
            user_id=event.user_id,
            kind=NotificationKind.ORDER_CANCELLED,
            order_id=event.order_id,
        )

    async def on_user_registered(uow: UnitOfWork, _: Envelope, event: UserRegistered) -> None:
        await service.record_and_confirm(
            uow, fanout, user_id=event.user_id, kind=NotificationKind.WELCOME, order_id=None
        )

    # Each handler's effect is one statement (service.record_and_confirm): no transaction.
    return {
        OrderApproved: OneStatement(on_order_approved),
        OrderRejected: OneStatement(on_order_rejected),
        OrderCancelled: OneStatement(on_order_cancelled),
        UserRegistered: OneStatement(on_user_registered),
    }

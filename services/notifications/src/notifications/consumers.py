"""Order outcomes and sign-ups, mapped to notifications. Exactly one per outcome: the bus's
inbox drops redelivered messages and a unique dedup key drops repeated events."""

from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Envelope, Handler
from common.contracts import Message, OrderApproved, OrderCancelled, OrderRejected, UserRegistered
from notifications import service


async def on_order_approved(session: AsyncSession, _: Envelope, event: OrderApproved) -> None:
    await service.record_order_outcome(
        session, user_id=event.user_id, kind="order_approved", order_id=event.order_id
    )


async def on_order_rejected(session: AsyncSession, _: Envelope, event: OrderRejected) -> None:
    await service.record_order_outcome(
        session, user_id=event.user_id, kind="order_rejected", order_id=event.order_id
    )


async def on_order_cancelled(session: AsyncSession, _: Envelope, event: OrderCancelled) -> None:
    await service.record_order_outcome(
        session, user_id=event.user_id, kind="order_cancelled", order_id=event.order_id
    )


async def on_user_registered(session: AsyncSession, _: Envelope, event: UserRegistered) -> None:
    await service.record(session, user_id=event.user_id, kind="welcome", order_id=None)


HANDLERS: dict[type[Message], Handler] = {
    OrderApproved: on_order_approved,
    OrderRejected: on_order_rejected,
    OrderCancelled: on_order_cancelled,
    UserRegistered: on_user_registered,
}

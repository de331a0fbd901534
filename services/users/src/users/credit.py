"""Credit reservations for the order saga: idempotent per order id, safe under concurrency.

A reservation is decided with the user's row locked, so concurrent ReserveCredit commands
for one user are serialised and can never overdraw them. Whatever was answered for an order
is stored, so a redelivered or replayed command gets the same answer and no second effect.
"""

import logging
from datetime import UTC, datetime
from typing import cast

from common.contracts import (
    CreditRejected,
    CreditReleased,
    CreditReserved,
    Message,
    ReleaseCredit,
    ReserveCredit,
)
from common.contracts.users import RejectionReason
from common.db import UnitOfWork
from users import repository
from users.cache import UserCache
from users.models import CreditReservation

logger = logging.getLogger(__name__)


def _answer(reservation: CreditReservation) -> Message:
    """The reply that matches what was already decided for this order."""
    if reservation.status == "active":
        return CreditReserved(
            order_id=reservation.order_id,
            user_id=reservation.user_id,
            amount_cents=reservation.amount_cents,
        )
    if reservation.status == "rejected":
        return CreditRejected(
            order_id=reservation.order_id,
            user_id=reservation.user_id,
            reason=cast(RejectionReason, reservation.rejection_reason),
        )
    return CreditReleased(
        order_id=reservation.order_id,
        user_id=reservation.user_id,
        amount_cents=reservation.amount_cents,
    )


async def reserve_credit(uow: UnitOfWork, cache: UserCache, command: ReserveCredit) -> Message:
    session = uow.session
    user = await repository.lock_user(session, command.user_id)
    if user is None:
        reply: Message = CreditRejected(
            order_id=command.order_id, user_id=command.user_id, reason="user_not_found"
        )
    elif (existing := await repository.get_reservation(session, command.order_id)) is not None:
        reply = _answer(existing)
    else:
        available = user.credit_limit_cents - await repository.reserved_cents(session, user.id)
        reason = None
        if user.status != "active":
            reason = "user_inactive"
        elif command.amount_cents > available:
            reason = "insufficient_credit"
        reservation = CreditReservation(
            user_id=user.id,
            order_id=command.order_id,
            amount_cents=command.amount_cents,
            status="rejected" if reason else "active",
            rejection_reason=reason,
        )
        session.add(reservation)
        await session.flush()
        cache.invalidate_after_commit(uow, user.id)
        reply = _answer(reservation)
    logger.info(
        "credit reservation answered",
        extra={
            "order_id": str(command.order_id),
            "user_id": str(command.user_id),
            "amount_cents": command.amount_cents,
            "answer": reply.TYPE,
        },
    )
    uow.publish(reply)
    return reply


async def release_credit(uow: UnitOfWork, cache: UserCache, command: ReleaseCredit) -> Message:
    session = uow.session
    user = await repository.lock_user(session, command.user_id)
    existing = await repository.get_reservation(session, command.order_id)
    released_cents = 0
    if existing is not None and existing.status == "active":
        released_cents = existing.amount_cents
        existing.status = "released"
        existing.released_at = datetime.now(UTC)
        cache.invalidate_after_commit(uow, existing.user_id)
    elif existing is None and user is not None:
        # Released before the reservation arrived: leave a tombstone so it never will.
        session.add(
            CreditReservation(
                user_id=user.id,
                order_id=command.order_id,
                amount_cents=0,
                status="released",
                released_at=datetime.now(UTC),
            )
        )
    await session.flush()
    reply = CreditReleased(
        order_id=command.order_id, user_id=command.user_id, amount_cents=released_cents
    )
    logger.info(
        "credit released",
        extra={
            "order_id": str(command.order_id),
            "user_id": str(command.user_id),
            "released_cents": released_cents,
        },
    )
    uow.publish(reply)
    return reply

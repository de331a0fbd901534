"""Credit reservations for the order saga: idempotent per order id, safe under concurrency.

A reservation is decided with the user's row locked, so concurrent ReserveCredit commands
for one user are serialised and can never overdraw them. Whatever was answered for an order
is stored, so a redelivered or replayed command gets the same answer and no second effect.
"""

import logging
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
from users.repository import Reservation

logger = logging.getLogger(__name__)


def _answer(reservation: Reservation) -> Message:
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
    """Answer a reservation once: the answer is stored, and its reply leaves with it (the
    reply's outbox row written by the same statement); asked again, the stored answer."""
    credit = await repository.lock_credit(uow.connection, command.user_id, command.order_id)
    if credit is None:
        reply: Message = CreditRejected(
            order_id=command.order_id, user_id=command.user_id, reason="user_not_found"
        )
        uow.publish(reply)
    elif credit.reservation is not None:
        reply = _answer(credit.reservation)
        uow.publish(reply)
    else:
        reservation = _decide(command, credit)
        reply = _answer(reservation)
        stored = [uow.prepare(reply)]
        uow.written(await repository.insert_reservation(uow.connection, reservation, stored))
        if reservation.status == "active":
            cache.invalidate_after_commit(uow, command.user_id)
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "credit reservation answered",
            extra={
                "order_id": str(command.order_id),
                "user_id": str(command.user_id),
                "amount_cents": command.amount_cents,
                "answer": reply.TYPE,
            },
        )
    return reply


def _decide(command: ReserveCredit, credit: repository.CreditView) -> Reservation:
    """A new reservation, or a refusal with its reason."""
    reason: RejectionReason | None = None
    if credit.status != "active":
        reason = "user_inactive"
    elif command.amount_cents > credit.credit_limit_cents - credit.reserved_cents:
        reason = "insufficient_credit"
    return Reservation(
        user_id=command.user_id,
        order_id=command.order_id,
        amount_cents=command.amount_cents,
        status="rejected" if reason else "active",
        rejection_reason=reason,
    )


async def release_credit(uow: UnitOfWork, cache: UserCache, command: ReleaseCredit) -> Message:
    credit = await repository.lock_credit(uow.connection, command.user_id, command.order_id)
    existing = credit.reservation if credit is not None else None
    released_cents = 0
    if existing is not None and existing.status == "active":
        released_cents = existing.amount_cents
        await repository.release_reservation(uow.connection, command.order_id)
        cache.invalidate_after_commit(uow, existing.user_id)
    elif existing is None and credit is not None:
        # Released before the reservation arrived: leave a tombstone so it never will.
        tombstone = Reservation(command.user_id, command.order_id, 0, "released", None)
        await repository.insert_reservation(uow.connection, tombstone)
    reply = CreditReleased(
        order_id=command.order_id, user_id=command.user_id, amount_cents=released_cents
    )
    if logger.isEnabledFor(logging.INFO):
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

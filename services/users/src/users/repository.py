"""Every query of the users service."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from users.models import CreditReservation, User


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email))
    return result.scalar_one_or_none()


async def set_password_hash(session: AsyncSession, user_id: uuid.UUID, password_hash: str) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(password_hash=password_hash)
    )


async def insert_user(session: AsyncSession, user: User) -> bool:
    """Insert unless the email is taken; False when it is (no exception, no rollback)."""
    statement = (
        insert(User)
        .values(
            id=user.id,
            email=user.email,
            name=user.name,
            password_hash=user.password_hash,
            credit_limit_cents=user.credit_limit_cents,
        )
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User.id)
    )
    inserted = (await session.execute(statement)).scalar_one_or_none()
    return inserted is not None


async def reserved_cents(session: AsyncSession, user_id: uuid.UUID) -> int:
    statement = select(func.coalesce(func.sum(CreditReservation.amount_cents), 0)).where(
        CreditReservation.user_id == user_id, CreditReservation.status == "active"
    )
    return int((await session.execute(statement)).scalar_one())


async def mark_welcomed(session: AsyncSession, user_id: uuid.UUID) -> None:
    statement = (
        update(User)
        .where(User.id == user_id, User.welcomed_at.is_(None))
        .values(welcomed_at=func.now())
    )
    await session.execute(statement)


async def claim_unwelcomed(
    session: AsyncSession, sent_before: datetime, limit: int
) -> Sequence[User]:
    """Users whose welcome was announced before ``sent_before`` and never confirmed, locked
    (SKIP LOCKED: every users worker can run the timer without announcing twice at once)."""
    statement = (
        select(User)
        .where(User.welcomed_at.is_(None), User.welcome_sent_at < sent_before)
        .order_by(User.welcome_sent_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(statement)).scalars().all()


# -- credit commands' hot path: Core statements, one round trip to read -------------------

_users = cast(Table, User.__table__)
_reservations = cast(Table, CreditReservation.__table__)


@dataclass(frozen=True)
class Reservation:
    """What was answered for one order (a row of ``credit_reservations``)."""

    user_id: uuid.UUID
    order_id: uuid.UUID
    amount_cents: int
    status: str
    rejection_reason: str | None


@dataclass(frozen=True)
class CreditView:
    """A user's credit as a credit command sees it, with the user's row locked."""

    status: str
    credit_limit_cents: int
    reserved_cents: int
    reservation: Reservation | None  # this order's, if it was answered before


_LOCK_USER = select(_users.c.status, _users.c.credit_limit_cents).with_for_update()
_reserved = (
    select(func.coalesce(func.sum(_reservations.c.amount_cents), 0))
    .where(_reservations.c.user_id == bindparam("user_id"), _reservations.c.status == "active")
    .scalar_subquery()
)
_existing = _reservations.alias("existing")
# One row whether or not this order was answered before: the active total, and the answer.
_RESERVED_AND_EXISTING = select(
    _reserved.label("reserved_cents"),
    _existing.c.user_id,
    _existing.c.order_id,
    _existing.c.amount_cents,
    _existing.c.status,
    _existing.c.rejection_reason,
).select_from(
    select(literal(1).label("one"))
    .subquery("one")
    .outerjoin(_existing, _existing.c.order_id == bindparam("order_id"))
)


async def lock_credit(
    session: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID
) -> CreditView | None:
    """The user's credit and this order's earlier answer, the user's row locked until commit
    (credit commands of one user happen one at a time, so none can overdraw). None when the
    user does not exist.

    Two statements, not one: under READ COMMITTED a statement that waited for the row lock
    still reads everything else as of its start, so a total read in the locking statement
    would miss the reservation committed by the transaction it waited for (an overdraw,
    caught by the e2e test of 40 concurrent orders against credit for 10).
    """
    user = (await session.execute(_LOCK_USER.where(_users.c.id == user_id))).one_or_none()
    if user is None:
        return None
    row = (
        await session.execute(_RESERVED_AND_EXISTING, {"user_id": user_id, "order_id": order_id})
    ).one()
    reservation = (
        Reservation(row.user_id, row.order_id, row.amount_cents, row.status, row.rejection_reason)
        if row.order_id is not None
        else None
    )
    return CreditView(user.status, user.credit_limit_cents, row.reserved_cents, reservation)


async def insert_reservation(session: AsyncSession, reservation: Reservation) -> None:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": reservation.user_id,
        "order_id": reservation.order_id,
        "amount_cents": reservation.amount_cents,
        "status": reservation.status,
        "rejection_reason": reservation.rejection_reason,
    }
    if reservation.status == "released":
        values["released_at"] = func.now()
    await session.execute(insert(_reservations).values(**values))


async def release_reservation(session: AsyncSession, order_id: uuid.UUID) -> None:
    await session.execute(
        update(_reservations)
        .where(_reservations.c.order_id == order_id, _reservations.c.status == "active")
        .values(status="released", released_at=func.now())
    )

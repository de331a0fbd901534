"""Every query of the users service."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Outgoing
from common.bus.statements import OutboxRows, qualified
from common.db import DriverConnection
from users.models import CreditReservation, User, outbox


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


# The credit commands' statements, per ReserveCredit/ReleaseCredit message: asyncpg prepared
# statements on the unit of work's own connection (common.db.UnitOfWork.connection), no
# SQLAlchemy compilation per call; their SQL in one place, next to the models.

_U = qualified(_users)
_R = qualified(_reservations)

_LOCK_USER = f"SELECT status, credit_limit_cents FROM {_U} WHERE id = $1 FOR UPDATE"  # noqa: S608 - names from models
# One row whether or not this order was answered before: the active total, and the answer.
_RESERVED_AND_EXISTING = (
    f"SELECT (SELECT coalesce(sum(amount_cents), 0) FROM {_R} "  # noqa: S608
    "WHERE user_id = $1 AND status = 'active') AS reserved_cents, "
    "e.user_id, e.order_id, e.amount_cents, e.status, e.rejection_reason "
    f"FROM (SELECT 1) AS one LEFT OUTER JOIN {_R} AS e ON e.order_id = $2"
)
# The reservation (or the refusal, or a tombstone) and its reply's outbox row ($7..$9).
_OUTBOX = OutboxRows(outbox, 7)
_INSERT_RESERVATION = (
    f"WITH reserved AS (INSERT INTO {_R} (id, user_id, order_id, amount_cents, status, "  # noqa: S608
    "rejection_reason, released_at) VALUES ($1, $2, $3, $4, $5::varchar, $6, "
    f"CASE WHEN $5::varchar = 'released' THEN now() END)), {_OUTBOX.cte} SELECT {_OUTBOX.ids}"
)
_RELEASE = (
    f"UPDATE {_R} SET status = 'released', released_at = now() "  # noqa: S608
    "WHERE order_id = $1 AND status = 'active'"
)


async def lock_credit(
    connection: DriverConnection, user_id: uuid.UUID, order_id: uuid.UUID
) -> CreditView | None:
    """The user's credit and this order's earlier answer, the user's row locked until commit
    (credit commands of one user happen one at a time, so none can overdraw). None when the
    user does not exist.

    Two statements, not one: under READ COMMITTED a statement that waited for the row lock
    still reads everything else as of its start, so a total read in the locking statement
    would miss the reservation committed by the transaction it waited for (an overdraw,
    caught by the e2e test of 40 concurrent orders against credit for 10).
    """
    user = await connection.fetchrow(_LOCK_USER, user_id)
    if user is None:
        return None
    row = await connection.fetchrow(_RESERVED_AND_EXISTING, user_id, order_id)
    reservation = (
        Reservation(
            row["user_id"],
            row["order_id"],
            row["amount_cents"],
            row["status"],
            row["rejection_reason"],
        )
        if row["order_id"] is not None
        else None
    )
    return CreditView(
        user["status"], user["credit_limit_cents"], int(row["reserved_cents"]), reservation
    )


async def insert_reservation(
    connection: DriverConnection, reservation: Reservation, outgoing: Sequence[Outgoing] = ()
) -> list[tuple[int, Outgoing]]:
    """Store the answer to a credit command, and its reply's outbox row, in one statement
    (the rows written, for ``UnitOfWork.written``)."""
    row = await connection.fetchrow(
        _INSERT_RESERVATION,
        uuid.uuid4(),
        reservation.user_id,
        reservation.order_id,
        reservation.amount_cents,
        reservation.status,
        reservation.rejection_reason,
        *OutboxRows.params(outgoing),
    )
    return OutboxRows.written(row, outgoing)


async def release_reservation(connection: DriverConnection, order_id: uuid.UUID) -> None:
    await connection.execute(_RELEASE, order_id)

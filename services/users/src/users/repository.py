"""Every query of the users service."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from users.models import CreditReservation, User


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email))
    return result.scalar_one_or_none()


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


async def lock_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The user row, locked until commit: reservations of one user happen one at a time."""
    statement = select(User).where(User.id == user_id).with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def get_reservation(session: AsyncSession, order_id: uuid.UUID) -> CreditReservation | None:
    statement = select(CreditReservation).where(CreditReservation.order_id == order_id)
    return (await session.execute(statement)).scalar_one_or_none()


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

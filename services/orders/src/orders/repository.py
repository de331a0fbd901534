"""Every query of the orders service."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from orders.models import Order, Saga, SagaStep


async def insert_order(session: AsyncSession, order: Order) -> Order | None:
    """Insert unless the user already used this idempotency key (then None).

    One round trip: the inserted row comes back (RETURNING) as a loaded ORM object.
    """
    statement = (
        insert(Order)
        .values(
            id=order.id,
            user_id=order.user_id,
            status=order.status,
            total_cents=order.total_cents,
            items=order.items,
            idempotency_key=order.idempotency_key,
            request_fingerprint=order.request_fingerprint,
        )
        .on_conflict_do_nothing(
            index_elements=[Order.user_id, Order.idempotency_key],
            index_where=Order.idempotency_key.is_not(None),
        )
        .returning(Order)
    )
    return (await session.scalars(statement)).one_or_none()


async def get_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    return await session.get(Order, order_id)


async def get_order_by_key(
    session: AsyncSession, user_id: uuid.UUID, idempotency_key: str
) -> Order | None:
    statement = select(Order).where(
        Order.user_id == user_id, Order.idempotency_key == idempotency_key
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def list_orders(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[Order]:
    statement = select(Order).where(Order.user_id == user_id)
    if status is not None:
        statement = statement.where(Order.status == status)
    if after is not None:
        statement = statement.where(tuple_(Order.created_at, Order.id) < after)
    statement = statement.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    return (await session.execute(statement)).scalars().all()


async def get_saga(session: AsyncSession, order_id: uuid.UUID) -> Saga | None:
    return await session.get(Saga, order_id)


async def get_order_and_saga(
    session: AsyncSession, order_id: uuid.UUID
) -> tuple[Order, Saga] | None:
    """The order and its saga in one round trip (every saga event needs both)."""
    statement = (
        select(Order, Saga).join(Saga, Saga.order_id == Order.id).where(Order.id == order_id)
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row[0], row[1])


async def list_steps(session: AsyncSession, order_id: uuid.UUID) -> Sequence[SagaStep]:
    statement = select(SagaStep).where(SagaStep.order_id == order_id).order_by(SagaStep.id)
    return (await session.execute(statement)).scalars().all()


async def overdue_saga_ids(session: AsyncSession, now: datetime, limit: int) -> Sequence[uuid.UUID]:
    statement = (
        select(Saga.order_id)
        .where(Saga.deadline_at.is_not(None), Saga.deadline_at <= now)
        .order_by(Saga.deadline_at)
        .limit(limit)
    )
    return (await session.execute(statement)).scalars().all()

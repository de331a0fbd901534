"""Every query of the orders service."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, tuple_, update
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


async def list_steps(
    session: AsyncSession, order_id: uuid.UUID, *, since: datetime | None = None
) -> Sequence[SagaStep]:
    """The saga's steps in order. ``since`` (the saga's creation: a step references its saga,
    so none is older) lets PostgreSQL skip the monthly partitions before it instead of
    probing each one."""
    statement = select(SagaStep).where(SagaStep.order_id == order_id)
    if since is not None:
        statement = statement.where(SagaStep.at >= since)
    return (await session.execute(statement.order_by(SagaStep.id))).scalars().all()


async def overdue_saga_ids(session: AsyncSession, now: datetime, limit: int) -> Sequence[uuid.UUID]:
    statement = (
        select(Saga.order_id)
        .where(Saga.deadline_at.is_not(None), Saga.deadline_at <= now)
        .order_by(Saga.deadline_at)
        .limit(limit)
    )
    return (await session.execute(statement)).scalars().all()


# -- the saga's hot path: Core statements, no ORM unit-of-work bookkeeping ----------------

_orders = cast(Table, Order.__table__)
_sagas = cast(Table, Saga.__table__)
_steps = cast(Table, SagaStep.__table__)


@dataclass(frozen=True)
class SagaSnapshot:
    """An order and its saga as one transition reads them: plain values, one round trip."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    total_cents: int
    rejection_reason: str | None
    created_at: datetime
    state: str
    version: int
    attempt: int
    deadline_at: datetime | None
    correlation_id: str
    definition_version: int  # the saga definition it started on (orders.saga.DEFINITIONS)


_SNAPSHOT = select(
    _orders.c.id.label("order_id"),
    _orders.c.user_id,
    _orders.c.status,
    _orders.c.total_cents,
    _orders.c.rejection_reason,
    _orders.c.created_at,
    _sagas.c.state,
    _sagas.c.version,
    _sagas.c.attempt,
    _sagas.c.deadline_at,
    _sagas.c.correlation_id,
    _sagas.c.definition_version,
).join_from(_orders, _sagas, _sagas.c.order_id == _orders.c.id)


async def get_saga_snapshot(session: AsyncSession, order_id: uuid.UUID) -> SagaSnapshot | None:
    row = (await session.execute(_SNAPSHOT.where(_orders.c.id == order_id))).one_or_none()
    return None if row is None else SagaSnapshot(**row._mapping)


async def insert_saga(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    state: str,
    deadline_at: datetime | None,
    correlation_id: str,
    definition_version: int,
) -> None:
    await session.execute(
        insert(_sagas).values(
            order_id=order_id,
            state=state,
            version=1,
            attempt=0,
            deadline_at=deadline_at,
            correlation_id=correlation_id,
            definition_version=definition_version,
        )
    )


async def transition(
    session: AsyncSession,
    current: SagaSnapshot,
    *,
    status: str,
    rejection_reason: str | None,
    state: str,
    attempt: int,
    deadline_at: datetime | None,
) -> bool:
    """Move the saga and its order on, in one statement, if nobody did since ``current``
    was read (optimistic lock on the saga's version); False when somebody did: nothing is
    written, and the caller reads again and decides again."""
    moved = (
        update(_sagas)
        .where(_sagas.c.order_id == current.order_id, _sagas.c.version == current.version)
        .values(
            state=state,
            version=current.version + 1,
            attempt=attempt,
            deadline_at=deadline_at,
            updated_at=func.now(),
        )
        .returning(_sagas.c.order_id)
        .cte("moved")
    )
    statement = (
        update(_orders)
        .where(_orders.c.id == select(moved.c.order_id).scalar_subquery())
        .values(status=status, rejection_reason=rejection_reason, updated_at=func.now())
        .returning(_orders.c.id)
    )
    return (await session.execute(statement)).first() is not None


async def insert_steps(session: AsyncSession, steps: list[dict[str, Any]]) -> None:
    if steps:
        await session.execute(insert(_steps), steps)

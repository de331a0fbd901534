"""Every query of the operator API: sagas across all users, and the audit table.

Kept apart from ``repository.py`` (the customers' queries, always scoped to one user) so that a
query reading every user's orders can only be reached from the operator's code.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from orders.models import OperatorAudit, Order, Saga


@dataclass(frozen=True)
class SagaFilter:
    state: str | None = None
    order_status: str | None = None
    reason: str | None = None
    created_before: datetime | None = None  # older_than_seconds, as a point in time
    overdue_at: datetime | None = None  # only sagas whose deadline passed before this


async def list_sagas(
    session: AsyncSession,
    where: SagaFilter,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[tuple[Order, Saga]]:
    """Sagas with their orders, newest first by ``(saga created_at, order id)``."""
    statement = select(Order, Saga).join(Saga, Saga.order_id == Order.id)
    if where.state is not None:
        statement = statement.where(Saga.state == where.state)
    if where.order_status is not None:
        statement = statement.where(Order.status == where.order_status)
    if where.reason is not None:
        statement = statement.where(Order.rejection_reason == where.reason)
    if where.created_before is not None:
        statement = statement.where(Saga.created_at <= where.created_before)
    if where.overdue_at is not None:
        statement = statement.where(Saga.deadline_at <= where.overdue_at)
    if after is not None:
        statement = statement.where(tuple_(Saga.created_at, Saga.order_id) < after)
    statement = statement.order_by(Saga.created_at.desc(), Saga.order_id.desc()).limit(limit)
    rows = (await session.execute(statement)).all()
    return [(row[0], row[1]) for row in rows]


async def get_order_and_saga_fresh(
    session: AsyncSession, order_id: uuid.UUID
) -> tuple[Order, Saga] | None:
    """The order and its saga as the database has them now, even right after a change in this
    session (``populate_existing``: server-side defaults such as ``updated_at`` included)."""
    statement = (
        select(Order, Saga)
        .join(Saga, Saga.order_id == Order.id)
        .where(Order.id == order_id)
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row[0], row[1])


async def add_audit(session: AsyncSession, entry: OperatorAudit) -> OperatorAudit:
    session.add(entry)
    await session.flush()
    return entry


async def list_audit(
    session: AsyncSession,
    *,
    operator: str | None,
    action: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[OperatorAudit]:
    """Operator actions, newest first by ``(at, id)``."""
    statement = select(OperatorAudit)
    if operator is not None:
        statement = statement.where(OperatorAudit.operator == operator)
    if action is not None:
        statement = statement.where(OperatorAudit.action == action)
    if after is not None:
        statement = statement.where(tuple_(OperatorAudit.at, OperatorAudit.id) < after)
    statement = statement.order_by(OperatorAudit.at.desc(), OperatorAudit.id.desc()).limit(limit)
    return (await session.execute(statement)).scalars().all()

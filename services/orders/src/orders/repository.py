"""Every query of the orders service."""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus.statements import qualified
from common.db import DriverConnection
from orders.models import Order, Saga, SagaStep


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


async def next_deadline(session: AsyncSession, now: datetime) -> datetime | None:
    """The earliest deadline still ahead of ``now`` (the partial index on deadline_at)."""
    statement = select(func.min(Saga.deadline_at)).where(Saga.deadline_at > now)
    return (await session.execute(statement)).scalar_one_or_none()


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


# The statements below run on every order and every saga message: asyncpg prepared
# statements on the unit of work's own connection (common.db.UnitOfWork.connection), no
# SQLAlchemy compilation per call. Their SQL is here, in one place, next to the models
# that own the tables.

_O = qualified(_orders)
_S = qualified(_sagas)
_T = qualified(_steps)

_INSERT_ORDER = (
    f"INSERT INTO {_O} (id, user_id, status, total_cents, items, idempotency_key, "  # noqa: S608 - names from models
    "request_fingerprint) VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7) "
    "ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    "RETURNING id, user_id, status, total_cents, items::text, rejection_reason, created_at, "
    "updated_at"
)
_SNAPSHOT = (
    "SELECT o.id AS order_id, o.user_id, o.status, o.total_cents, o.rejection_reason, "  # noqa: S608
    "o.created_at, s.state, s.version, s.attempt, s.deadline_at, s.correlation_id, "
    "s.definition_version "
    f"FROM {_O} AS o JOIN {_S} AS s ON s.order_id = o.id WHERE o.id = $1"
)
_INSERT_SAGA = (
    f"INSERT INTO {_S} (order_id, state, version, attempt, deadline_at, correlation_id, "  # noqa: S608
    "definition_version) VALUES ($1, $2, 1, 0, $3, $4, $5)"
)
_TRANSITION = (
    f"WITH moved AS (UPDATE {_S} SET state = $3, version = $2::int + 1, attempt = $4, "  # noqa: S608
    "deadline_at = $5, updated_at = now() WHERE order_id = $1 AND version = $2 "
    "RETURNING order_id) "
    f"UPDATE {_O} SET status = $6, rejection_reason = $7, updated_at = now() "
    "WHERE id = (SELECT order_id FROM moved) RETURNING id"
)
_INSERT_STEPS = (
    f"INSERT INTO {_T} (order_id, name, status, detail, cause_id, message_id, message_type) "  # noqa: S608
    "SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::varchar[], $4::varchar[], "
    "$5::varchar[], $6::uuid[], $7::varchar[])"
)


async def insert_order(connection: DriverConnection, order: Order) -> dict[str, Any] | None:
    """Insert unless the user already used this idempotency key (then None).

    One round trip: the inserted row comes back (RETURNING) as the columns of ``OrderOut``.
    """
    row = await connection.fetchrow(
        _INSERT_ORDER,
        order.id,
        order.user_id,
        order.status,
        order.total_cents,
        json.dumps(order.items, separators=(",", ":")),
        order.idempotency_key,
        order.request_fingerprint,
    )
    if row is None:
        return None
    created = dict(row)
    created["items"] = json.loads(created["items"])
    return created


async def get_saga_snapshot(
    connection: DriverConnection, order_id: uuid.UUID
) -> SagaSnapshot | None:
    row = await connection.fetchrow(_SNAPSHOT, order_id)
    return None if row is None else SagaSnapshot(**row)


async def insert_saga(
    connection: DriverConnection,
    order_id: uuid.UUID,
    *,
    state: str,
    deadline_at: datetime | None,
    correlation_id: str,
    definition_version: int,
) -> None:
    await connection.execute(
        _INSERT_SAGA, order_id, state, deadline_at, correlation_id, definition_version
    )


async def transition(
    connection: DriverConnection,
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
    moved = await connection.fetchrow(
        _TRANSITION,
        current.order_id,
        current.version,
        state,
        attempt,
        deadline_at,
        status,
        rejection_reason,
    )
    return moved is not None


async def insert_steps(connection: DriverConnection, steps: list[dict[str, Any]]) -> None:
    if not steps:
        return
    await connection.execute(
        _INSERT_STEPS,
        *(
            [step[column] for step in steps]
            for column in (
                "order_id",
                "name",
                "status",
                "detail",
                "cause_id",
                "message_id",
                "message_type",
            )
        ),
    )

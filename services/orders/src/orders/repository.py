"""Every query of the orders service."""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Outgoing
from common.bus.statements import InboxRow, OutboxRows, qualified
from common.db import DriverConnection, InboxClaim
from orders.models import Order, Saga, SagaStep, inbox, outbox


async def get_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    return await session.get(Order, order_id)


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
    handled: bool = False  # the reply being handled was handled before (the inbox says)


# The statements below run on every order and every saga message: asyncpg prepared
# statements on the unit of work's own connection (common.db.UnitOfWork.connection), no
# SQLAlchemy compilation per call. Their SQL is here, in one place, next to the models
# that own the tables.

_O = qualified(_orders)
_S = qualified(_sagas)
_T = qualified(_steps)

_STEP_COLUMNS = ("order_id", "name", "status", "detail", "cause_id", "message_id", "message_type")


def _steps_from(first: int) -> str:
    """The steps, a column each as an array parameter, from ``$first`` on."""
    types = ("uuid", "varchar", "varchar", "varchar", "varchar", "uuid", "varchar")
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(types))
    return f"SELECT * FROM unnest({arrays})"  # noqa: S608 - parameters, not values


_STEPS_FROM = _steps_from(1)
# The columns of an order as OrderOut shows it (its items as JSON text: one json.loads).
_ORDER_OUT_NAMES = (
    "id",
    "user_id",
    "status",
    "total_cents",
    "items",
    "rejection_reason",
    "created_at",
    "updated_at",
)
_ORDER_OUT = ", ".join("items::text" if name == "items" else name for name in _ORDER_OUT_NAMES)
# A new order, its saga, the saga's first steps ($15..$21) and its first command's outbox
# row ($12..$14): one statement, all of it or (the user already used this idempotency key)
# none of it. One row either way: the order's columns are NULL when it was not placed.
_PLACED_OUTBOX = OutboxRows(outbox, 12, when="EXISTS (SELECT 1 FROM placed)")
_PLACE = (
    f"WITH placed AS (INSERT INTO {_O} (id, user_id, status, total_cents, items, "  # noqa: S608 - names from models
    "idempotency_key, request_fingerprint) VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7) "
    "ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    f"RETURNING {_ORDER_OUT}), started AS (INSERT INTO {_S} (order_id, state, version, "
    "attempt, deadline_at, correlation_id, definition_version) "
    "SELECT id, $8, 1, 0, $9, $10, $11 FROM placed), "
    f"steps AS (INSERT INTO {_T} ({', '.join(_STEP_COLUMNS)}) {_steps_from(15)} "
    f"WHERE EXISTS (SELECT 1 FROM placed)), {_PLACED_OUTBOX.cte} "
    f"SELECT placed.*, {_PLACED_OUTBOX.ids} FROM (SELECT 1) AS one LEFT JOIN placed ON true"
)
_BY_KEY = (  # the order placed earlier with this idempotency key
    f"SELECT {_ORDER_OUT}, request_fingerprint FROM {_O} "  # noqa: S608
    "WHERE user_id = $1 AND idempotency_key = $2"
)
_SNAPSHOT = (  # and whether the group handled the reply already ($2..$4, NULL: no reply)
    "SELECT o.id AS order_id, o.user_id, o.status, o.total_cents, o.rejection_reason, "  # noqa: S608
    "o.created_at, s.state, s.version, s.attempt, s.deadline_at, s.correlation_id, "
    f"s.definition_version, {InboxRow(inbox, 2).seen} AS handled "
    f"FROM {_O} AS o JOIN {_S} AS s ON s.order_id = o.id WHERE o.id = $1"
)
_ITEMS = f"SELECT items::text FROM {_O} WHERE id = $1"  # noqa: S608
# A decision's history and its messages' outbox rows: $1..$7 the steps, $8..$10 the rows,
# and the reply's inbox row ($11..$13, NULL outside the bus): all of it, or, for a reply
# the group handled already, nothing.
_RECORD_INBOX = InboxRow(inbox, 11)
_OUTBOX = OutboxRows(outbox, 8, when=_RECORD_INBOX.first_time)
_RECORD = (
    f"WITH {_RECORD_INBOX.cte}, "
    f"steps AS (INSERT INTO {_T} ({', '.join(_STEP_COLUMNS)}) {_STEPS_FROM} "
    f"WHERE {_RECORD_INBOX.first_time}), {_OUTBOX.cte} SELECT {_OUTBOX.ids}"
)
# The same, only if the saga is still at the version the decision was made on (optimistic
# lock) and the reply is new to the group: the saga moves on ($11..$15), its order too when
# its status or reason change ($16, $17: a re-send or a notification's confirmation leaves
# the order, and the updated_at its clients read as the time of its outcome, as it was), and
# the rest follows only if the saga moved, the reply's inbox row ($18..$20) too. A duplicate
# racing its twin waits for the twin's lock and then finds the version moved on.
_MOVED_INBOX = InboxRow(inbox, 18, when="EXISTS (SELECT 1 FROM moved)")
_MOVED = OutboxRows(outbox, 8, when="EXISTS (SELECT 1 FROM moved)")
_TRANSITION_AND_RECORD = (
    f"WITH moved AS (UPDATE {_S} SET state = $13, version = $12::int + 1, attempt = $14, "  # noqa: S608
    "deadline_at = $15, updated_at = now() WHERE order_id = $11 AND version = $12 "
    f"AND {_MOVED_INBOX.unseen} RETURNING order_id), "
    f"moved_order AS (UPDATE {_O} SET status = $16, rejection_reason = $17, updated_at = now() "
    "WHERE id = (SELECT order_id FROM moved) "
    "AND (status, rejection_reason) IS DISTINCT FROM ($16, $17)), "
    f"steps AS (INSERT INTO {_T} ({', '.join(_STEP_COLUMNS)}) {_STEPS_FROM} "
    f"WHERE EXISTS (SELECT 1 FROM moved)), {_MOVED_INBOX.cte}, "
    f"{_MOVED.cte} SELECT EXISTS (SELECT 1 FROM moved) AS moved, {_MOVED.ids}"
)


@dataclass(frozen=True)
class Placed:
    """A new order (the columns of ``OrderOut``) and the outbox rows written with it."""

    order: dict[str, Any]
    written: list[tuple[int, Outgoing]]


async def place(
    connection: DriverConnection,
    order: Order,
    saga: "SagaSnapshot",
    steps: Sequence[dict[str, Any]],
    outgoing: Sequence[Outgoing],
) -> Placed | None:
    """Insert the order, its saga (as ``saga``), the saga's first steps and its first
    messages' outbox rows in one statement, unless the user already used this idempotency
    key (then nothing, and None)."""
    row = await connection.fetchrow(
        _PLACE,
        order.id,
        order.user_id,
        order.status,
        order.total_cents,
        json.dumps(order.items, separators=(",", ":")),
        order.idempotency_key,
        order.request_fingerprint,
        saga.state,
        saga.deadline_at,
        saga.correlation_id,
        saga.definition_version,
        *OutboxRows.params(outgoing),
        *_step_columns(steps),
    )
    if row["id"] is None:
        return None
    return Placed(_order_columns(row), OutboxRows.written(row, outgoing))


async def get_order_by_key(
    connection: DriverConnection, user_id: uuid.UUID, idempotency_key: str
) -> dict[str, Any] | None:
    """The order placed earlier with this idempotency key (with its request fingerprint)."""
    row = await connection.fetchrow(_BY_KEY, user_id, idempotency_key)
    if row is None:
        return None
    return {**_order_columns(row), "request_fingerprint": row["request_fingerprint"]}


def _order_columns(row: Any) -> dict[str, Any]:
    columns = {name: row[name] for name in _ORDER_OUT_NAMES}
    columns["items"] = json.loads(columns["items"])
    return columns


async def get_saga_snapshot(
    connection: DriverConnection, order_id: uuid.UUID, claim: InboxClaim | None = None
) -> SagaSnapshot | None:
    """The order and its saga; ``handled`` when the ``claim``'s message was handled before."""
    row = await connection.fetchrow(_SNAPSHOT, order_id, *InboxRow.params(claim))
    return None if row is None else SagaSnapshot(**row)


def _step_columns(steps: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [[step[column] for step in steps] for column in _STEP_COLUMNS]


async def order_items(connection: DriverConnection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    items = await connection.fetchval(_ITEMS, order_id)
    return cast(list[dict[str, Any]], json.loads(items))


async def record(
    connection: DriverConnection,
    steps: Sequence[dict[str, Any]],
    outgoing: Sequence[Outgoing],
    claim: InboxClaim | None = None,
) -> list[tuple[int, Outgoing]]:
    """Add a decision's steps and its messages' outbox rows (the rows written, for
    ``UnitOfWork.written``), in one statement; with the ``claim``'s inbox row, and nothing
    when the group handled that message already."""
    if not steps and not outgoing:
        return []
    row = await connection.fetchrow(
        _RECORD, *_step_columns(steps), *OutboxRows.params(outgoing), *InboxRow.params(claim)
    )
    return OutboxRows.written(row, outgoing)


async def transition_and_record(
    connection: DriverConnection,
    current: SagaSnapshot,
    after: SagaSnapshot,
    steps: Sequence[dict[str, Any]],
    outgoing: Sequence[Outgoing],
    claim: InboxClaim | None = None,
) -> list[tuple[int, Outgoing]] | None:
    """Move the saga on to ``after`` (its order too, when the order's status or reason
    change), add the decision's steps and outbox rows
    (and the ``claim``'s inbox row): one statement, if nobody moved the saga since
    ``current`` was read (optimistic lock on its version) and the group has not handled the
    claim's message yet. None otherwise: nothing is written, and the caller reads again and
    decides again (a duplicate then finds its saga moved on)."""
    row = await connection.fetchrow(
        _TRANSITION_AND_RECORD,
        *_step_columns(steps),
        *OutboxRows.params(outgoing),
        current.order_id,
        current.version,
        after.state,
        after.attempt,
        after.deadline_at,
        after.status,
        after.rejection_reason,
        *InboxRow.params(claim),
    )
    if not row["moved"]:
        return None
    return OutboxRows.written(row, outgoing)

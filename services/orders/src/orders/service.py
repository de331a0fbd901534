"""Business rules of the orders service. Reads take a session, writes a unit of work; they
never commit.

Placing, cancelling and every saga reply go through the same path: load the order and its
saga, ask :func:`orders.saga.decide`, then :func:`_apply` the decision (status, history,
deadline, outgoing messages) in the caller's transaction.
"""

import dataclasses
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from common.backoff import exponential
from common.bus import Outgoing
from common.contracts import (
    Message,
    OrderApproved,
    OrderCancelled,
    OrderRejected,
    ReleaseCredit,
    ReserveCredit,
)
from common.contracts.inventory import CheckStock, StockLine
from common.contracts.vocabulary import SagaState
from common.db import UnitOfWork
from common.errors import Conflict, NotFound, Problem
from common.logging import correlation_id_var, event_id_var
from common.pagination import Page, build_page, decode_cursor
from orders import repository, saga
from orders.models import Order
from orders.saga import Action, Decision, OrderStatus
from orders.schemas import OrderCreate, OrderOut, SagaOut, SagaStepOut
from orders.settings import Settings

logger = logging.getLogger(__name__)

SAGA_OUTCOMES = Counter(
    "saga_outcomes_total",
    "Orders reaching an outcome, by result and reason",
    ["result", "reason"],
)
SAGA_DURATION = Histogram(
    "saga_duration_seconds",
    "Time from placing an order to its outcome (approved, rejected, cancelled)",
    ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
OUTCOMES = (OrderStatus.APPROVED, OrderStatus.REJECTED, OrderStatus.CANCELLED)

CONFLICT_RETRIES = 5


class SagaBusy(Problem):
    """Concurrent transitions kept winning the optimistic lock; the caller may retry."""

    status = 409


def _fingerprint(data: OrderCreate) -> str:
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class PlacedOrder:
    """What placing an order did: ``order`` is the new order, or the first one placed with
    the same Idempotency-Key and body (then ``created`` is False)."""

    order: Order
    created: bool


async def place_order(
    uow: UnitOfWork,
    settings: Settings,
    user_id: uuid.UUID,
    data: OrderCreate,
    idempotency_key: str | None,
) -> PlacedOrder:
    """Create a PENDING order and start its saga: one statement (the order, its saga, the
    saga's first steps and command), so a single-statement unit of work does (the API's).

    The same Idempotency-Key with the same body returns the first order (created=False);
    with another body it is a 409.
    """
    fingerprint = _fingerprint(data)
    order = Order(
        id=uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.PENDING,
        total_cents=sum(item.quantity * item.unit_price_cents for item in data.items),
        items=[item.model_dump() for item in data.items],
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
    )
    definition = saga.definition(settings.saga.definition_version)
    decision = saga.start(definition)
    started = repository.SagaSnapshot(
        order_id=order.id,
        user_id=user_id,
        status=order.status,
        total_cents=order.total_cents,
        rejection_reason=None,
        created_at=datetime.now(UTC),  # a first decision never reads it
        state=decision.state,
        version=1,
        attempt=0,
        deadline_at=_deadline(settings, definition, decision),
        correlation_id=correlation_id_var.get() or str(order.id),
        definition_version=definition.version,
    )
    steps, outgoing = await _history(uow, definition, started, decision)
    placed = await repository.place(uow.connection, order, started, steps, outgoing)
    if placed is None:
        assert idempotency_key is not None  # only the key's unique index can conflict
        existing = await repository.get_order_by_key(uow.connection, user_id, idempotency_key)
        assert existing is not None
        if existing.pop("request_fingerprint") != fingerprint:
            raise Conflict("This Idempotency-Key was already used with a different request body.")
        return PlacedOrder(Order(**existing), created=False)

    uow.written(placed.written)
    for column, value in placed.order.items():  # what the database filled in (times, defaults)
        setattr(order, column, value)
    _observe(started, decision, reached_outcome=False)
    return PlacedOrder(order, created=True)


async def get_order(session: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID) -> Order:
    """The caller's order; another user's is reported missing, as if it did not exist."""
    order = await repository.get_order(session, order_id)
    if order is None or order.user_id != user_id:
        raise NotFound(f"Order {order_id} not found.")
    return order


async def list_orders(
    session: AsyncSession, user_id: uuid.UUID, *, status: str | None, limit: int, cursor: str | None
) -> Page[OrderOut]:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_orders(
        session, user_id, status=status, limit=limit + 1, after=after
    )
    return build_page(rows, limit, item=OrderOut.model_validate, key=lambda o: (o.created_at, o.id))


async def get_saga(session: AsyncSession, user_id: uuid.UUID, order_id: uuid.UUID) -> SagaOut:
    order = await get_order(session, user_id, order_id)
    instance = await repository.get_saga(session, order.id)
    assert instance is not None  # created with the order
    steps = await repository.list_steps(session, order.id, since=instance.created_at)
    return SagaOut(
        order_id=order.id,
        state=instance.state,
        version=instance.version,
        deadline_at=instance.deadline_at,
        steps=[SagaStepOut.model_validate(step) for step in steps],
    )


async def cancel_order(
    uow: UnitOfWork, settings: Settings, user_id: uuid.UUID, order_id: uuid.UUID
) -> Order:
    await get_order(uow.session, user_id, order_id)
    try:
        await handle_event(uow, settings, order_id, saga.CancelRequested())
    except saga.NotCancellable as exc:
        raise Conflict(str(exc)) from exc
    order = await repository.get_order(uow.session, order_id)
    assert order is not None
    await uow.session.refresh(order)
    return order


async def handle_event(
    uow: UnitOfWork, settings: Settings, order_id: uuid.UUID, event: saga.Event
) -> Decision | None:
    """Apply one saga event to an order; None when the order is unknown.

    Losing the optimistic lock to a concurrent transition writes nothing (the version check
    is the attempt's first write), so the attempt simply reads again and decides again.
    """
    for _ in range(CONFLICT_RETRIES):
        current = await repository.get_saga_snapshot(uow.connection, order_id, uow.inbox_claim)
        if current is None:
            logger.warning("saga event for an unknown order", extra={"order_id": order_id})
            return None
        if current.handled:
            return None  # a duplicate of a reply handled before: it has had its effect
        if isinstance(event, saga.DeadlinePassed) and not _is_overdue(current):
            return None  # a reply or another timer moved it on meanwhile
        # The definition the saga started on decides it, whichever one is current now.
        definition = saga.definition(current.definition_version)
        decision = saga.decide(
            SagaState(current.state),
            OrderStatus(current.status),
            current.rejection_reason,
            event,
            attempt=current.attempt,
            max_resends=settings.saga.max_resends,
            definition=definition,
        )
        if await _apply(uow, settings, definition, current, decision):
            return decision
    raise SagaBusy(f"Order {order_id} is changing right now; try again.")


def _is_overdue(current: repository.SagaSnapshot) -> bool:
    return current.deadline_at is not None and current.deadline_at <= datetime.now(UTC)


def _deadline(
    settings: Settings, definition: saga.Definition, decision: Decision
) -> datetime | None:
    """When the state's wait ends; None when the saga waits for nothing (settled)."""
    wait = definition.table.get(decision.state)
    if wait is None:
        return None
    seconds = _timeout(settings, wait, decision.attempt)
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _timeout(settings: Settings, wait: saga.Wait, attempt: int) -> float:
    """How long to wait: the row's timeout setting, stretched by each re-send (capped)."""
    base = float(getattr(settings.saga, wait.timeout))  # a TimeoutSetting: a float field (tested)
    return exponential(
        attempt,
        base=base,
        cap=settings.saga.max_timeout_seconds,
        factor=settings.saga.resend_backoff,
    )


async def _message(uow: UnitOfWork, action: Action, order: repository.SagaSnapshot) -> Message:
    """The outbox message that carries out one of the saga's actions (a command, an outcome)."""
    match action:
        case Action.RESERVE_CREDIT:
            return ReserveCredit(
                order_id=order.order_id, user_id=order.user_id, amount_cents=order.total_cents
            )
        case Action.CHECK_STOCK:
            return CheckStock(order_id=order.order_id, lines=await _stock_lines(uow, order))
        case Action.RELEASE_CREDIT:
            return ReleaseCredit(order_id=order.order_id, user_id=order.user_id)
        case Action.ANNOUNCE_OUTCOME if order.status == OrderStatus.APPROVED:
            return OrderApproved(
                order_id=order.order_id, user_id=order.user_id, total_cents=order.total_cents
            )
        case Action.ANNOUNCE_OUTCOME if order.status == OrderStatus.REJECTED:
            return OrderRejected(
                order_id=order.order_id,
                user_id=order.user_id,
                reason=order.rejection_reason or "",
            )
        case Action.ANNOUNCE_OUTCOME if order.status == OrderStatus.CANCELLED:
            return OrderCancelled(order_id=order.order_id, user_id=order.user_id)
    raise AssertionError(f"no message for {action} on a {order.status} order")


async def _stock_lines(uow: UnitOfWork, order: repository.SagaSnapshot) -> tuple[StockLine, ...]:
    """The order's items as a stock check reads them (only version 2 sagas ask: one more read)."""
    items = await repository.order_items(uow.connection, order.order_id)
    return tuple(StockLine(sku=item["sku"], quantity=item["quantity"]) for item in items)


def _record_message(
    steps: list[dict[str, Any]], step_name: str, message_id: uuid.UUID, message_type: str
) -> None:
    """Note a sent message's id on its step (or the decision's first free step)."""
    free = [step for step in steps if step["message_id"] is None]
    named = [step for step in free if step["name"] == step_name]
    if not free:
        return
    target = named[0] if named else free[0]
    target["message_id"] = message_id
    target["message_type"] = message_type


async def _apply(
    uow: UnitOfWork,
    settings: Settings,
    definition: saga.Definition,
    current: repository.SagaSnapshot,
    decision: Decision,
) -> bool:
    """Write a decision; False when a concurrent transition won (then nothing is written).

    A decision that changes neither the order nor the saga (a duplicate or late reply) only
    adds to the history: no version to check, no row to update.
    """
    after = dataclasses.replace(
        current,
        status=decision.order_status,
        rejection_reason=decision.rejection_reason,
        state=decision.state,
        attempt=decision.attempt,
        deadline_at=_deadline(settings, definition, decision)
        if decision.restart_deadline or decision.state is SagaState.SETTLED
        else current.deadline_at,
    )
    changed = (after.status, after.rejection_reason, after.state, after.attempt) != (
        current.status,
        current.rejection_reason,
        current.state,
        current.attempt,
    ) or after.deadline_at != current.deadline_at
    if not changed:  # a duplicate or late reply: history only, no version to check
        await _record(uow, definition, after, decision)
        return True
    steps, outgoing = await _history(uow, definition, after, decision)
    written = await repository.transition_and_record(
        uow.connection, current, after, steps, outgoing, uow.inbox_claim
    )
    if written is None:
        return False  # a concurrent transition won: nothing written, nothing sent
    uow.written(written)
    _observe(after, decision, reached_outcome=after.status != current.status)
    return True


async def _record(
    uow: UnitOfWork,
    definition: saga.Definition,
    after: repository.SagaSnapshot,
    decision: Decision,
) -> None:
    """A decision with no transition to check (a duplicate or late reply's): its history and
    messages, in one statement."""
    steps, outgoing = await _history(uow, definition, after, decision)
    uow.written(await repository.record(uow.connection, steps, outgoing, uow.inbox_claim))
    _observe(after, decision, reached_outcome=False)


async def _history(
    uow: UnitOfWork, definition: saga.Definition, after: repository.SagaSnapshot, decision: Decision
) -> tuple[list[dict[str, Any]], list[Outgoing]]:
    """A decision's steps and its outgoing messages, made ready, not yet written (each step
    notes the message it sent and the reply it answered, for the operator's timeline)."""
    cause_id = event_id_var.get()  # the reply being handled, if any
    steps: list[dict[str, Any]] = [
        {
            "order_id": after.order_id,
            "name": step.name,
            "status": step.status,
            "detail": step.detail,
            "cause_id": cause_id,
            "message_id": None,
            "message_type": None,
        }
        for step in decision.steps
    ]
    outgoing: list[Outgoing] = []
    for action in decision.actions:
        message = await _message(uow, action, after)
        prepared = uow.prepare(message, correlation_id=after.correlation_id)
        outgoing.append(prepared)
        _record_message(
            steps, definition.step_of(action), prepared.envelope.id, prepared.envelope.type
        )
    return steps, outgoing


def _observe(after: repository.SagaSnapshot, decision: Decision, *, reached_outcome: bool) -> None:
    """Metrics and a log line for a decision written."""
    if reached_outcome and decision.order_status in OUTCOMES:
        result = decision.order_status.lower()
        SAGA_OUTCOMES.labels(result, decision.rejection_reason or "").inc()
        elapsed = (datetime.now(UTC) - after.created_at).total_seconds()
        SAGA_DURATION.labels(result).observe(elapsed)
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "saga transition",
            extra={
                "order_id": str(after.order_id),
                "order_status": after.status,
                "saga_state": after.state,
                "steps": [f"{step.name}:{step.status}" for step in decision.steps],
            },
        )


async def overdue_saga_ids(session: AsyncSession, limit: int = 200) -> list[uuid.UUID]:
    return list(await repository.overdue_saga_ids(session, datetime.now(UTC), limit))


async def seconds_until_next_deadline(session: AsyncSession) -> float | None:
    """How long until the earliest saga deadline ahead; None when no saga waits."""
    now = datetime.now(UTC)
    deadline = await repository.next_deadline(session, now)
    return None if deadline is None else max(0.0, (deadline - now).total_seconds())


def shortest_deadline_seconds(settings: Settings) -> float:
    """The shortest deadline a saga can be given: no saga that starts or moves on from now
    on comes due sooner than this (each deadline is a timeout setting, only ever stretched
    by a re-send, capped by saga.max_timeout_seconds)."""
    shortest = min(float(getattr(settings.saga, name)) for name in get_args(saga.TimeoutSetting))
    return min(shortest, settings.saga.max_timeout_seconds)


# -- operator actions (orders.admin_service calls these) --------------------------------------


async def _operator_event(
    uow: UnitOfWork, settings: Settings, order_id: uuid.UUID, event: saga.Event
) -> Decision:
    try:
        decision = await handle_event(uow, settings, order_id, event)
    except saga.OperatorActionRefused as exc:
        raise Conflict(str(exc)) from exc
    if decision is None:
        raise NotFound(f"Order {order_id} not found.")
    return decision


async def retry_step(uow: UnitOfWork, settings: Settings, order_id: uuid.UUID) -> Decision:
    """Send the current step's command again now and restart its deadline (409 when settled)."""
    return await _operator_event(uow, settings, order_id, saga.RetryRequested())


async def force_compensation(
    uow: UnitOfWork, settings: Settings, order_id: uuid.UUID, reason: str = "operator"
) -> Decision:
    """Reject an order awaiting credit and release its credit (409 in any other state)."""
    return await _operator_event(uow, settings, order_id, saga.CompensateRequested(reason))

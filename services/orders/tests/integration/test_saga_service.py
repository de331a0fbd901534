"""The saga's persistence: one transaction per step, idempotency, optimistic locking, deadlines."""

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from common.contracts import NotificationKind, ReleaseCredit
from common.db import Database, InboxClaim
from common.errors import Conflict
from common.settings import with_changes
from common.testing.replies import credit_released, credit_reserved, notification_recorded
from orders import repository, saga, service
from orders.models import Order, Saga, SagaStep, inbox, outbox
from orders.schemas import OrderCreate, OrderItem
from orders.settings import Settings

pytestmark = pytest.mark.integration


def order_of(*prices: int) -> OrderCreate:
    return OrderCreate(
        items=[OrderItem(sku="sku", quantity=1, unit_price_cents=price) for price in prices]
    )


async def outbox_types(db: Database, order_id: uuid.UUID) -> list[str]:
    async with db.session() as session:
        statement = select(outbox.c.envelope).order_by(outbox.c.id)
        envelopes = (await session.execute(statement)).scalars().all()
    return [e["type"] for e in envelopes if e["payload"].get("order_id") == str(order_id)]


async def state_of(db: Database, order_id: uuid.UUID) -> dict[str, Any]:
    async with db.session() as session:
        order = await service.get_order(session, (await owner(db, order_id)), order_id)
        instance = await session.get(Saga, order_id)
        steps = (
            await session.scalars(
                select(SagaStep).where(SagaStep.order_id == order_id).order_by(SagaStep.id)
            )
        ).all()
    assert instance is not None
    return {
        "status": order.status,
        "reason": order.rejection_reason,
        "state": instance.state,
        "version": instance.version,
        "steps": [f"{s.name}:{s.status}" for s in steps],
    }


async def owner(db: Database, order_id: uuid.UUID) -> uuid.UUID:
    async with db.session() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        return order.user_id


async def place(db: Database, settings: Settings, *prices: int, key: str | None = None) -> Any:
    async with db.transaction() as uow:
        placed = await service.place_order(uow, settings, uuid.uuid4(), order_of(*prices), key)
    assert placed.created
    return placed.order


async def test_placing_an_order_commits_order_saga_and_command_together(
    orders_db: Database, orders_settings: Settings
):
    order = await place(orders_db, orders_settings, 300, 200)

    assert order.status == "PENDING"
    assert order.total_cents == 500
    assert await outbox_types(orders_db, order.id) == ["users.ReserveCredit"]
    state = await state_of(orders_db, order.id)
    assert state["state"] == "awaiting_credit"
    assert state["steps"] == ["reserve_credit:started"]


async def test_a_failed_unit_of_work_leaves_no_order_and_no_command(
    orders_db: Database, orders_settings: Settings
):
    placed: list[Any] = []

    async def place_then_fail() -> None:
        async with orders_db.transaction() as uow:
            placing = await service.place_order(
                uow, orders_settings, uuid.uuid4(), order_of(1), None
            )
            placed.append(placing.order)
            raise RuntimeError("the request failed after placing")

    with pytest.raises(RuntimeError):
        await place_then_fail()
    [order] = placed
    assert await outbox_types(orders_db, order.id) == []
    async with orders_db.session() as session:
        assert await session.get(Order, order.id) is None


async def test_the_same_idempotency_key_and_body_return_the_first_order(
    orders_db: Database, orders_settings: Settings
):
    user_id = uuid.uuid4()
    results = []
    for _ in range(2):
        async with orders_db.transaction() as uow:
            results.append(
                await service.place_order(uow, orders_settings, user_id, order_of(5), "k-1")
            )
    first, again = results
    assert (first.created, again.created) == (True, False)
    assert again.order.id == first.order.id
    assert await outbox_types(orders_db, first.order.id) == ["users.ReserveCredit"]  # sent once

    with pytest.raises(Conflict):
        async with orders_db.transaction() as uow:
            await service.place_order(uow, orders_settings, user_id, order_of(6), "k-1")


async def test_a_transition_that_lost_the_optimistic_lock_is_decided_again(
    orders_db: Database, orders_settings: Settings
):
    order = await place(orders_db, orders_settings, 100)
    async with orders_db.transaction() as slow:
        # `slow` read the saga (version 1)...
        stale = await repository.get_saga_snapshot(slow.connection, order.id)
        assert stale is not None
        assert stale.version == 1
        # ...while another process approved the order and committed (version 2).
        async with orders_db.transaction() as fast:
            await service.handle_event(fast, orders_settings, order.id, credit_reserved(order.id))
        # A transition from the stale view writes nothing (not the saga, not its steps, not
        # its messages): the version no longer matches.
        stale_step = {
            "order_id": order.id,
            "name": "stale",
            "status": "done",
            "detail": None,
            "cause_id": None,
            "message_id": None,
            "message_type": None,
        }
        stale_message = slow.prepare(ReleaseCredit(order_id=order.id, user_id=order.user_id))
        assert (
            await repository.transition_and_record(
                slow.connection,
                stale,
                dataclasses.replace(stale, status="CANCELLING", state="awaiting_release"),
                [stale_step],
                [stale_message],
            )
            is None
        )
        # So the event is decided again, on the fresh state.
        decision = await service.handle_event(
            slow, orders_settings, order.id, saga.CancelRequested()
        )

    assert decision is not None
    assert decision.steps[0].detail == "was APPROVED"  # decided on the fresh state
    state = await state_of(orders_db, order.id)
    assert (state["status"], state["state"], state["version"]) == (
        "CANCELLING",
        "awaiting_release",
        3,
    )
    assert not [step for step in state["steps"] if step.startswith("stale:")]
    assert await outbox_types(orders_db, order.id) == [
        "users.ReserveCredit",
        "orders.OrderApproved",
        "users.ReleaseCredit",
    ]


async def test_a_reply_moves_the_saga_and_records_itself_in_one_statement_once(
    orders_db: Database, orders_settings: Settings
):
    """The worker handles a reply with no transaction (common.bus.OneStatement): the saga's
    move, its steps, its outbox rows and the reply's inbox row are one statement. The same
    reply again (a redelivery) writes nothing at all."""
    order = await place(orders_db, orders_settings, 100)
    reply = credit_reserved(order.id)
    claim = InboxClaim(uuid.uuid4(), "orders", datetime.now(UTC))
    seen: list[tuple[dict[str, Any], list[str]]] = []
    for _ in range(2):
        async with orders_db.single_statement() as uow:
            uow.inbox_claim = claim
            await service.handle_event(uow, orders_settings, order.id, reply)
        seen.append((await state_of(orders_db, order.id), await outbox_types(orders_db, order.id)))

    (first, sent), (again, sent_again) = seen
    assert (first["status"], first["version"]) == ("APPROVED", 2)
    assert sent == ["users.ReserveCredit", "orders.OrderApproved"]
    assert (again, sent_again) == (first, sent)  # no step, no message, no version more
    async with orders_db.session() as session:
        rows = await session.execute(
            select(inbox.c.consumer_group).where(inbox.c.message_id == claim.message_id)
        )
        assert rows.scalars().all() == ["orders"]


async def test_an_order_s_updated_at_is_the_time_of_its_outcome(
    orders_db: Database, orders_settings: Settings
):
    """Clients read an order's updated_at as when it got its status: a re-send while it is
    pending and the notification's confirmation after it move its saga, not the order."""
    order = await place(orders_db, orders_settings, 100)
    await expire(orders_db, order.id)
    async with orders_db.transaction() as uow:
        await service.handle_event(uow, orders_settings, order.id, saga.DeadlinePassed())
    assert (await deadline_of(orders_db, order.id))[0] == 1  # sent again
    assert await updated_at_of(orders_db, order.id) == order.updated_at

    async with orders_db.transaction() as uow:
        await service.handle_event(uow, orders_settings, order.id, credit_reserved(order.id))
    approved_at = await updated_at_of(orders_db, order.id)
    assert approved_at > order.updated_at
    confirmed = notification_recorded(order.id, NotificationKind.ORDER_APPROVED)
    async with orders_db.transaction() as uow:
        await service.handle_event(uow, orders_settings, order.id, confirmed)

    state = await state_of(orders_db, order.id)
    assert (state["status"], state["state"]) == ("APPROVED", "settled")
    assert await updated_at_of(orders_db, order.id) == approved_at


async def updated_at_of(db: Database, order_id: uuid.UUID) -> datetime:
    async with db.session() as session:
        updated_at = await session.scalar(select(Order.updated_at).where(Order.id == order_id))
    assert updated_at is not None
    return updated_at


async def expire(db: Database, order_id: uuid.UUID) -> None:
    """Move the saga's deadline into the past, as time would."""
    async with db.transaction() as uow:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await uow.session.execute(
            update(Saga).where(Saga.order_id == order_id).values(deadline_at=past)
        )


async def deadline_of(db: Database, order_id: uuid.UUID) -> tuple[int, float]:
    """The saga's attempt and how many seconds are left until its deadline."""
    async with db.session() as session:
        instance = await session.get(Saga, order_id)
        assert instance is not None
        assert instance.deadline_at is not None
        return instance.attempt, (instance.deadline_at - datetime.now(UTC)).total_seconds()


async def test_a_deadline_only_fires_once_it_has_passed_and_first_resends(
    orders_db: Database, orders_settings: Settings
):
    settings = with_changes(orders_settings, saga={"max_resends": 1})
    order = await place(orders_db, settings, 100)
    async with orders_db.transaction() as uow:
        early = await service.handle_event(uow, settings, order.id, saga.DeadlinePassed())
    assert early is None

    await expire(orders_db, order.id)
    async with orders_db.session() as session:
        assert order.id in await service.overdue_saga_ids(session)
    async with orders_db.transaction() as uow:
        await service.handle_event(uow, settings, order.id, saga.DeadlinePassed())

    # Sent again, with a deadline twice as long; still pending.
    state = await state_of(orders_db, order.id)
    assert (state["status"], state["state"]) == ("PENDING", "awaiting_credit")
    attempt, seconds_left = await deadline_of(orders_db, order.id)
    assert attempt == 1
    assert settings.saga.credit_timeout_seconds * 1.5 < seconds_left
    assert await outbox_types(orders_db, order.id) == ["users.ReserveCredit"] * 2

    # Re-sends spent: rejected, and compensated until the release is confirmed.
    await expire(orders_db, order.id)
    async with orders_db.transaction() as uow:
        await service.handle_event(uow, settings, order.id, saga.DeadlinePassed())
    state = await state_of(orders_db, order.id)
    assert (state["status"], state["reason"]) == ("REJECTED", "timeout")
    assert state["state"] == "compensating"
    await expire(orders_db, order.id)
    async with orders_db.transaction() as uow:
        await service.handle_event(uow, settings, order.id, saga.DeadlinePassed())
    async with orders_db.transaction() as uow:
        await service.handle_event(uow, settings, order.id, credit_released(order.id))

    state = await state_of(orders_db, order.id)
    assert (state["status"], state["state"]) == ("REJECTED", "awaiting_notification")
    assert await outbox_types(orders_db, order.id) == [
        "users.ReserveCredit",
        "users.ReserveCredit",
        "users.ReleaseCredit",
        "users.ReleaseCredit",
        "orders.OrderRejected",
    ]

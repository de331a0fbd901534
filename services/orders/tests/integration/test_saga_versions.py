"""Sagas outlive a deploy: one started on definition version 1 finishes on version 1 after a
release makes version 2 (which adds the stock check) current, while new sagas run version 2.

Real Postgres and Redis, the orders service's own consumer and outbox: the "old release" is
a consumer built with version 1 current; it stops while a saga waits for its credit, and a
"new release" consumer, version 2 current, takes over. The test answers for the users,
inventory and notifications services by putting their replies on the streams.
"""

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from common.bus import Consumer, Envelope, Outbox, stream_key
from common.contracts import Message, NotificationKind
from common.db import Database, create_engine
from common.redis import create_redis
from common.settings import with_changes
from common.testing.polling import eventually
from common.testing.replies import credit_reserved, notification_recorded, stock_checked
from orders import admin_service, repository, service
from orders.consumers import handlers
from orders.models import Order, inbox, outbox
from orders.schemas import OrderCreate, OrderItem
from orders.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def release_1(orders_settings: Settings) -> Settings:
    """Settings of the old release, on streams of this test's own."""
    prefix = f"versions-{uuid.uuid4().hex[:8]}:"
    return with_changes(orders_settings, bus={"stream_prefix": prefix})


@pytest.fixture
def release_2(release_1: Settings) -> Settings:
    """The new release: the same, with definition version 2 current."""
    return with_changes(release_1, saga={"definition_version": 2})


@pytest.fixture
async def redis(release_1: Settings) -> AsyncIterator[Redis]:
    client = create_redis(release_1)
    yield client
    await client.aclose()


@pytest.fixture
async def database(release_1: Settings, redis: Redis) -> AsyncIterator[Database]:
    """Units of work whose messages a running outbox sends to this test's streams."""
    relay = Outbox(redis, outbox, settings=release_1)
    db = Database(create_engine(release_1), outbox=relay)
    async with relay.running(db):
        yield db
    await db.dispose()


@asynccontextmanager
async def worker(database: Database, redis: Redis, settings: Settings) -> AsyncIterator[None]:
    """One release's orders worker: the saga's consumer, with that release's settings."""
    consumer = Consumer(
        database,
        redis,
        group="orders",
        handlers=handlers(settings),
        inbox_table=inbox,
        settings=settings,
    )
    await consumer.start()
    try:
        yield
    finally:
        await consumer.stop()


async def place(database: Database, settings: Settings) -> Order:
    body = OrderCreate(items=[OrderItem(sku="sku-7", quantity=2, unit_price_cents=250)])
    async with database.transaction() as uow:
        placed = await service.place_order(uow, settings, uuid.uuid4(), body, None)
    assert placed.created
    return placed.order


async def reply(redis: Redis, settings: Settings, message: Message) -> None:
    """Put a reply on its stream, as the service that produces it would."""
    envelope = Envelope.wrap(message, source=message.PRODUCER, correlation_id=str(uuid.uuid4()))
    key = stream_key(settings.bus.stream_prefix, message.STREAM)
    fields: dict[Any, Any] = envelope.to_fields()
    await redis.xadd(key, fields)


async def sent(redis: Redis, settings: Settings, order_id: uuid.UUID) -> list[str]:
    """The types of the orders service's messages about one order, as Redis has them."""
    found: list[tuple[str, str]] = []
    for stream in ("users.commands", "inventory.commands", "orders.events"):
        entries = await redis.xrange(stream_key(settings.bus.stream_prefix, stream)) or []
        for entry_id, fields in entries:
            envelope = Envelope.from_fields(fields or {})
            if envelope.payload.get("order_id") == str(order_id):
                found.append((str(entry_id), envelope.type))
    return [kind for _, kind in sorted(found, key=lambda item: _entry_order(item[0]))]


def _entry_order(entry_id: str) -> tuple[int, int]:
    millis, sequence = entry_id.split("-")
    return int(millis), int(sequence)


def saga_of(database: Database, order_id: uuid.UUID) -> Callable[[], Any]:
    async def probe() -> repository.SagaSnapshot | None:
        async with database.transaction() as uow:
            return await repository.get_saga_snapshot(uow.connection, order_id)

    return probe


async def test_a_saga_started_on_version_1_finishes_on_it_after_version_2_becomes_current(
    database: Database, redis: Redis, release_1: Settings, release_2: Settings
):
    async with worker(database, redis, release_1):
        old = await place(database, release_1)
        await eventually(lambda: sent(redis, release_1, old.id), lambda t: len(t) == 1)
    # The deploy: the old worker is gone while `old` still waits for its credit.

    async with worker(database, redis, release_2):
        new = await place(database, release_2)
        for order in (old, new):
            await reply(redis, release_2, credit_reserved(order.id))

        # `old` finishes on version 1: approved on its credit, no stock check.
        await eventually(saga_of(database, old.id), lambda s: s.state == "awaiting_notification")
        # `new` runs version 2: the credit is held, then the stock is checked.
        await eventually(saga_of(database, new.id), lambda s: s.state == "awaiting_stock")
        await reply(redis, release_2, stock_checked(new.id, in_stock=True))
        await eventually(saga_of(database, new.id), lambda s: s.state == "awaiting_notification")

        for order in (old, new):
            await reply(
                redis, release_2, notification_recorded(order.id, NotificationKind.ORDER_APPROVED)
            )
        finished = {
            order.id: await eventually(saga_of(database, order.id), lambda s: s.state == "settled")
            for order in (old, new)
        }

    assert (finished[old.id].definition_version, finished[old.id].status) == (1, "APPROVED")
    assert (finished[new.id].definition_version, finished[new.id].status) == (2, "APPROVED")
    # The messages each saga cost: version 1 as before the deploy, version 2 one command more.
    assert await sent(redis, release_2, old.id) == ["users.ReserveCredit", "orders.OrderApproved"]
    assert await sent(redis, release_2, new.id) == [
        "users.ReserveCredit",
        "inventory.CheckStock",
        "orders.OrderApproved",
    ]
    # The operator sees each saga's version.
    async with database.session() as session:
        timelines = [await admin_service.saga_timeline(session, o.id) for o in (old, new)]
    assert [t.definition_version for t in timelines] == [1, 2]
    assert [s.name for s in timelines[1].steps] == [
        "reserve_credit",
        "reserve_credit",
        "check_stock",
        "check_stock",
        "notify",
        "notify",
    ]


async def test_the_stock_check_carries_the_order_s_lines(
    database: Database, redis: Redis, release_2: Settings
):
    async with worker(database, redis, release_2):
        order = await place(database, release_2)
        await reply(redis, release_2, credit_reserved(order.id))
        key = stream_key(release_2.bus.stream_prefix, "inventory.commands")

        async def commands() -> list[Envelope]:
            entries = await redis.xrange(key) or []
            return [Envelope.from_fields(fields or {}) for _, fields in entries]

        [command] = await eventually(commands, lambda found: len(found) == 1)
    assert command.type == "inventory.CheckStock"
    assert command.payload == {
        "order_id": str(order.id),
        "lines": [{"sku": "sku-7", "quantity": 2}],
    }

"""Past the saga backlog bound, POST /orders is refused at once: 503 with Retry-After."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from common.db import Database
from common.settings import with_changes
from common.testing.plugin import asgi_client, sign_in_as_a_new_user
from orders.admission import BEFORE_THE_PIVOT, SagaBacklog
from orders.main import create_app
from orders.settings import Settings

pytestmark = pytest.mark.integration

ORDER = {"items": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100}]}


async def pending_sagas(database: Database) -> int:
    async with database.session() as session:
        query = text("SELECT count(*) FROM orders.sagas WHERE state = ANY(:states)")
        states = [str(state) for state in BEFORE_THE_PIVOT]
        return int((await session.execute(query, {"states": states})).scalar_one())


@pytest.fixture
async def bounded_client(
    orders_settings: Settings, orders_db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    """No worker runs here, so every saga stays unsettled: room for exactly two orders.
    The gauge is read at start and not again during the test (a long refresh interval)."""
    settings = with_changes(
        orders_settings,
        admission={
            "max_pending_sagas": await pending_sagas(orders_db) + 2,
            "refresh_seconds": 600.0,
        },
    )
    async with asgi_client(create_app(settings)) as client:
        await sign_in_as_a_new_user(client, settings.redis.url)
        yield client


async def test_orders_past_the_backlog_bound_are_refused_at_once(
    bounded_client: httpx.AsyncClient, orders_db: Database
):
    before = await pending_sagas(orders_db)
    for _ in range(2):
        accepted = await bounded_client.post("/orders", json=ORDER)
        assert accepted.status_code == 202, accepted.text

    refused = await bounded_client.post("/orders", json=ORDER)

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert await pending_sagas(orders_db) == before + 2  # the refused one started nothing


async def test_without_a_bound_every_order_is_admitted(
    orders_settings: Settings, orders_db: Database
):
    settings = with_changes(orders_settings, admission={"max_pending_sagas": 0})
    async with asgi_client(create_app(settings)) as client:
        await sign_in_as_a_new_user(client, settings.redis.url)
        for _ in range(3):
            response = await client.post("/orders", json=ORDER)
            assert response.status_code == 202, response.text


async def test_sagas_past_their_pivot_do_not_hold_back_new_orders(
    bounded_client: httpx.AsyncClient, orders_db: Database, orders_settings: Settings
):
    """A notifications outage leaves sagas waiting after the customer's answer: they must not
    stop the shop from taking orders."""
    before = await pending_sagas(orders_db)
    placed = [(await bounded_client.post("/orders", json=ORDER)).json()["id"] for _ in range(2)]
    async with orders_db.transaction() as uow:
        await uow.session.execute(
            text(
                "UPDATE orders.sagas SET state = 'awaiting_notification' WHERE order_id = ANY(:ids)"
            ),
            {"ids": [uuid.UUID(order_id) for order_id in placed]},
        )

    backlog = SagaBacklog(orders_db, orders_settings)
    await backlog.refresh()

    assert backlog.pending == before

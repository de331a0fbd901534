"""A client team's view: the typed client `make clients` generates from the gateway's merged
OpenAPI document (openapi-python-client) drives orders end to end through the gateway, and
every error arrives as a typed ``Problem`` with its fields, because the document declares
each status an operation answers.

The client lives in clients/ (generated, git-ignored); this test is what checks it works.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from api_client import AuthenticatedClient, Client
from api_client.api.notifications import notifications_stream_notifications
from api_client.api.orders import (
    orders_cancel_order,
    orders_get_order,
    orders_list_orders,
    orders_place_order,
)
from api_client.api.users import users_login, users_register
from api_client.models import (
    OrderCreate,
    OrderItem,
    OrderOut,
    PageOrderOut,
    Problem,
    SessionCreate,
    SessionOut,
    UserCreate,
    UserOut,
)
from api_client.types import Response

from common.testing.polling import eventually

from .conftest import GATEWAY_URL

TIMEOUT = httpx.Timeout(10.0)
STREAM_CAP = 5  # NOTIFICATIONS_STREAM_MAX_PER_USER's default, which the e2e stack keeps
SETTLED = {"APPROVED", "REJECTED", "CANCELLED"}


@dataclass
class Shopper:
    user: UserOut
    client: AuthenticatedClient


async def _shopper(credit_limit_cents: int) -> Shopper:
    """Sign up and log in with an anonymous client; an authenticated one for the rest."""
    email = f"client-{uuid.uuid4().hex[:12]}@example.com"
    password = "client password 1"
    async with Client(base_url=GATEWAY_URL, timeout=TIMEOUT) as users:
        created = await users_register.asyncio_detailed(
            client=users,
            body=UserCreate(
                email=email, password=password, name="Client", credit_limit_cents=credit_limit_cents
            ),
        )
        assert isinstance(created.parsed, UserOut), created.content
        assert created.headers["location"] == f"/users/{created.parsed.id}"
        session = await users_login.asyncio(
            client=users, body=SessionCreate(email=email, password=password)
        )
    assert isinstance(session, SessionOut), session
    client = AuthenticatedClient(base_url=GATEWAY_URL, token=session.token, timeout=TIMEOUT)
    return Shopper(user=created.parsed, client=client)


@pytest.fixture
async def shopper() -> AsyncIterator[Shopper]:
    shopper = await _shopper(credit_limit_cents=10_000)
    async with shopper.client:
        yield shopper


def _order(*prices: int) -> OrderCreate:
    return OrderCreate(
        items=[
            OrderItem(sku=f"SKU-{index}", quantity=1, unit_price_cents=price)
            for index, price in enumerate(prices)
        ]
    )


def assert_problem(response: Response[Any], status: int) -> Problem:
    """The answer parsed into the document's Problem, its fields as the contract says."""
    assert response.status_code == status, response.content
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.parsed
    assert isinstance(problem, Problem), problem
    assert problem.status == status
    assert problem.title
    assert problem.detail
    assert problem.type_
    return problem


async def _settled(shopper: Shopper, order_id: uuid.UUID) -> OrderOut:
    async def fetch() -> OrderOut | Problem | None:
        return await orders_get_order.asyncio(client=shopper.client, order_id=order_id)

    order = await eventually(fetch, lambda o: isinstance(o, OrderOut) and o.status in SETTLED)
    assert isinstance(order, OrderOut)
    return order


async def test_place_cancel_and_list_orders_through_the_generated_client(shopper: Shopper):
    key = uuid.uuid4().hex
    placed = await orders_place_order.asyncio_detailed(
        client=shopper.client, body=_order(1_500, 2_500), idempotency_key=key
    )
    assert placed.status_code == 202, placed.content
    assert isinstance(placed.parsed, OrderOut)
    order = placed.parsed
    assert placed.headers["location"] == f"/orders/{order.id}"
    assert order.total_cents == 4_000
    assert order.user_id == shopper.user.id
    again = await orders_place_order.asyncio(
        client=shopper.client, body=_order(1_500, 2_500), idempotency_key=key
    )
    assert isinstance(again, OrderOut)
    assert again.id == order.id

    assert (await _settled(shopper, order.id)).status == "APPROVED"
    cancelled = await orders_cancel_order.asyncio_detailed(client=shopper.client, order_id=order.id)
    assert cancelled.status_code == 202, cancelled.content
    assert isinstance(cancelled.parsed, OrderOut)
    assert (await _settled(shopper, order.id)).status == "CANCELLED"

    page = await orders_list_orders.asyncio(client=shopper.client, limit=100)
    assert isinstance(page, PageOrderOut)
    assert [listed.id for listed in page.items] == [order.id]
    assert page.items[0].status == "CANCELLED"


async def test_401_404_409_and_422_arrive_as_typed_problems(shopper: Shopper):
    async with AuthenticatedClient(
        base_url=GATEWAY_URL, token="nobody.s-token", timeout=TIMEOUT
    ) as bad:
        unauthorized = await orders_list_orders.asyncio_detailed(client=bad)
    assert_problem(unauthorized, 401)
    assert unauthorized.headers["www-authenticate"] == "Bearer"

    missing = await orders_get_order.asyncio_detailed(client=shopper.client, order_id=uuid.uuid4())
    assert "not found" in assert_problem(missing, 404).detail

    key = uuid.uuid4().hex
    first = await orders_place_order.asyncio(
        client=shopper.client, body=_order(100), idempotency_key=key
    )
    assert isinstance(first, OrderOut)
    reused = await orders_place_order.asyncio_detailed(
        client=shopper.client, body=_order(200), idempotency_key=key
    )
    assert "Idempotency-Key" in assert_problem(reused, 409).detail

    too_dear = await orders_place_order.asyncio(client=shopper.client, body=_order(50_000))
    assert isinstance(too_dear, OrderOut)
    assert (await _settled(shopper, too_dear.id)).status == "REJECTED"
    not_cancellable = await orders_cancel_order.asyncio_detailed(
        client=shopper.client, order_id=too_dear.id
    )
    assert_problem(not_cancellable, 409)

    invalid = await orders_place_order.asyncio_detailed(
        client=shopper.client, body=OrderCreate(items=[])
    )
    problem = assert_problem(invalid, 422)
    assert problem.errors, problem
    assert [(error.field, error.in_) for error in problem.errors] == [("items", "body")]


@contextlib.asynccontextmanager
async def _open_stream(token: str) -> AsyncIterator[None]:
    """One live stream of the caller's notifications, held open (raw: its 200 never ends)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=GATEWAY_URL, timeout=TIMEOUT) as raw,
        raw.stream("GET", "/notifications/stream", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        yield


async def test_429_arrives_as_a_typed_problem_with_retry_after(shopper: Shopper):
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(STREAM_CAP):
            await streams.enter_async_context(_open_stream(shopper.client.token))
        async with asyncio.timeout(10):  # a 200 would never end: fail, do not hang
            refused = await notifications_stream_notifications.asyncio_detailed(
                client=shopper.client
            )
    assert refused.status_code == 429, refused.content
    problem = refused.parsed
    assert isinstance(problem, Problem)
    assert problem.status == 429
    assert "streams" in problem.detail
    assert int(refused.headers["retry-after"]) >= 1

"""Control characters and lone surrogates in the orders API are a 422 naming the field.

Before the constrained text type, ``POST /orders`` with a NUL in ``sku`` reached PostgreSQL,
which refuses ``\\u0000`` in text, and the client got a 500.
"""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.testing.plugin import asgi_client, sign_in_as_a_new_user
from orders.main import create_app
from orders.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def orders_client(orders_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(orders_settings)) as client:
        await sign_in_as_a_new_user(client, orders_settings.redis.url)
        yield client


def order(sku: str) -> dict[str, Any]:
    return {
        "items": [
            {"sku": "OK-1", "quantity": 1, "unit_price_cents": 100},
            {"sku": sku, "quantity": 2, "unit_price_cents": 250},
        ]
    }


def refused_fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert all(e["type"] == "text_forbidden_character" for e in problem["errors"]), problem
    return {error["field"] for error in problem["errors"]}


@pytest.mark.parametrize("sku", ["SKU\x00-1", "SKU-\ud83d", "SKU\x1b[31m", "SKU\x7f"])
async def test_a_control_character_in_a_sku_is_a_422_naming_it(
    orders_client: httpx.AsyncClient, sku: str
):
    response = await orders_client.post(
        "/orders", content=json.dumps(order(sku)), headers={"Content-Type": "application/json"}
    )

    assert refused_fields(response) == {"items[1].sku"}
    assert "items[1].sku" in response.json()["detail"]


async def test_a_control_character_in_the_idempotency_key_is_a_422_naming_it(
    orders_client: httpx.AsyncClient,
):
    response = await orders_client.post(
        "/orders", json=order("SKU-2"), headers={"Idempotency-Key": "key\x01one"}
    )

    assert refused_fields(response) == {"Idempotency-Key"}


async def test_a_control_character_in_the_cursor_is_a_422_naming_it(
    orders_client: httpx.AsyncClient,
):
    response = await orders_client.get("/orders", params={"cursor": "abc\x00def"})

    assert refused_fields(response) == {"cursor"}


async def test_a_printable_sku_and_key_are_accepted(orders_client: httpx.AsyncClient):
    response = await orders_client.post(
        "/orders", json=order("Café-№5"), headers={"Idempotency-Key": f"k-{uuid.uuid4()}"}
    )

    assert response.status_code == 202, response.text
    assert [item["sku"] for item in response.json()["items"]] == ["OK-1", "Café-№5"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("quantity", True), ("quantity", "2"), ("quantity", 2.0), ("unit_price_cents", False)],
)
async def test_a_number_must_be_a_json_integer(
    orders_client: httpx.AsyncClient, field: str, value: Any
):
    """Issue 17: ``"quantity": true`` was taken as 1."""
    item: dict[str, Any] = {"sku": "OK-1", "quantity": 1, "unit_price_cents": 100}
    item[field] = value
    response = await orders_client.post("/orders", json={"items": [item]})
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [f"items[0].{field}"]

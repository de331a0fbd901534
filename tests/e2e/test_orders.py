"""The order saga end to end: approve, reject, cancel, idempotency, concurrency."""

import asyncio
import uuid
from typing import Any

import pytest

from common.testing.polling import eventually

from .conftest import (
    Customer,
    Stack,
    assert_problem,
    check_invariants,
    order_body,
    place,
    settled,
    sign_up,
)


async def available_credit(stack: Stack, customer: Customer) -> int:
    me = await stack.users.get("/users/me", headers=customer.auth)
    credit: int = me.json()["credit_available_cents"]
    return credit


async def notifications_of(stack: Stack, customer: Customer) -> list[dict[str, Any]]:
    response = await stack.notifications.get(
        "/notifications", headers=customer.auth, params={"limit": 100}
    )
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_an_order_within_credit_is_approved_and_notified(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    assert await available_credit(stack, customer) == 10_000  # now in the read cache
    placed = await place(stack, customer, 1_500, 2_500)
    assert placed["status"] == "PENDING"
    assert placed["total_cents"] == 4_000
    assert placed["user_id"] == customer.id

    order = await settled(stack, customer, placed["id"])

    assert order["status"] == "APPROVED"
    assert order["rejection_reason"] is None
    assert await available_credit(stack, customer) == 6_000
    # The welcome may come up to bus.block_ms later than the order's outcome: the
    # notifications worker reads sign-ups only when it wakes for other work (unhurried).
    kinds = await eventually(
        lambda: notifications_of(stack, customer),
        lambda items: {"order_approved", "welcome"} <= {n["kind"] for n in items},
    )
    assert [n["order_id"] for n in kinds if n["kind"] == "order_approved"] == [placed["id"]]
    assert [n["order_id"] for n in kinds if n["kind"] == "welcome"] == [None]
    steps = [(s["name"], s["status"]) for s in order["saga"]["steps"]]
    assert steps[:3] == [
        ("reserve_credit", "started"),
        ("reserve_credit", "succeeded"),
        ("notify", "started"),
    ]


async def test_an_order_over_credit_is_rejected_with_the_reason(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=1_000)
    placed = await place(stack, customer, 1_001)

    order = await settled(stack, customer, placed["id"])

    assert order["status"] == "REJECTED"
    assert order["rejection_reason"] == "insufficient_credit"
    assert await available_credit(stack, customer) == 1_000
    await eventually(
        lambda: notifications_of(stack, customer),
        lambda items: [n["kind"] for n in items].count("order_rejected") == 1,
    )


async def test_cancelling_an_approved_order_releases_its_credit(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=5_000)
    placed = await place(stack, customer, 3_000)
    await settled(stack, customer, placed["id"])
    assert await available_credit(stack, customer) == 2_000

    cancel = await stack.orders.post(f"/orders/{placed['id']}/cancel", headers=customer.auth)
    assert cancel.status_code == 202
    assert cancel.json()["status"] in {"CANCELLING", "CANCELLED"}

    order = await settled(stack, customer, placed["id"])
    assert order["status"] == "CANCELLED"
    assert await available_credit(stack, customer) == 5_000
    await eventually(
        lambda: notifications_of(stack, customer),
        lambda items: [n["kind"] for n in items].count("order_cancelled") == 1,
    )
    again = await stack.orders.post(f"/orders/{placed['id']}/cancel", headers=customer.auth)
    assert_problem(again, 409)


async def test_a_rejected_order_cannot_be_cancelled(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=0)
    placed = await place(stack, customer, 1)
    await settled(stack, customer, placed["id"])
    cancel = await stack.orders.post(f"/orders/{placed['id']}/cancel", headers=customer.auth)
    assert_problem(cancel, 409)


async def test_the_idempotency_key_returns_the_same_order(stack: Stack):
    customer = await sign_up(stack)
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}

    first = await place(stack, customer, 700, **key)
    second = await place(stack, customer, 700, **key)
    other_body = await stack.orders.post(
        "/orders", json=order_body(701), headers={**customer.auth, **key}
    )

    assert second["id"] == first["id"]
    assert_problem(other_body, 409)
    listed = await stack.orders.get("/orders", headers=customer.auth)
    assert [o["id"] for o in listed.json()["items"]] == [first["id"]]


async def test_orders_are_private_and_listed_newest_first_with_a_cursor(stack: Stack):
    alice = await sign_up(stack, credit_limit_cents=0)
    bob = await sign_up(stack)
    ids = [(await place(stack, alice, 1))["id"] for _ in range(3)]

    assert_problem(await stack.orders.get(f"/orders/{ids[0]}", headers=bob.auth), 404)
    assert_problem(await stack.orders.get(f"/orders/{ids[0]}/saga", headers=bob.auth), 404)
    assert_problem(await stack.orders.post(f"/orders/{ids[0]}/cancel", headers=bob.auth), 404)

    first_page = (await stack.orders.get("/orders", headers=alice.auth, params={"limit": 2})).json()
    second_page = (
        await stack.orders.get(
            "/orders", headers=alice.auth, params={"limit": 2, "cursor": first_page["next_cursor"]}
        )
    ).json()
    assert [o["id"] for o in first_page["items"] + second_page["items"]] == ids[::-1]
    assert second_page["next_cursor"] is None

    for order_id in ids:
        await settled(stack, alice, order_id)
    rejected = await stack.orders.get("/orders", headers=alice.auth, params={"status": "REJECTED"})
    approved = await stack.orders.get("/orders", headers=alice.auth, params={"status": "APPROVED"})
    assert len(rejected.json()["items"]) == 3
    assert approved.json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [{"sku": "", "quantity": 1, "unit_price_cents": 1}]}, "items[0].sku"),
        ({"items": [{"sku": "x" * 65, "quantity": 1, "unit_price_cents": 1}]}, "items[0].sku"),
        ({"items": [{"sku": "a", "quantity": 0, "unit_price_cents": 1}]}, "items[0].quantity"),
        ({"items": [{"sku": "a", "quantity": 1001, "unit_price_cents": 1}]}, "items[0].quantity"),
        (
            {"items": [{"sku": "a", "quantity": 1, "unit_price_cents": 0}]},
            "items[0].unit_price_cents",
        ),
        ({"items": [{"sku": "a", "quantity": 1, "unit_price_cents": 1}] * 101}, "items"),
        ({}, "items"),
    ],
)
async def test_bad_orders_are_422_naming_the_field(
    stack: Stack, customer: Customer, body: dict[str, Any], field: str
):
    response = await stack.orders.post("/orders", json=body, headers=customer.auth)
    problem = assert_problem(response, 422)
    assert field in {error["field"] for error in problem["errors"]}


async def test_forty_concurrent_orders_against_credit_for_ten(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10 * 1_000)

    placed = await asyncio.gather(*(place(stack, customer, 1_000) for _ in range(40)))
    orders = await asyncio.gather(*(settled(stack, customer, o["id"]) for o in placed))

    statuses = [o["status"] for o in orders]
    assert statuses.count("APPROVED") == 10
    assert statuses.count("REJECTED") == 30
    assert {o["rejection_reason"] for o in orders if o["status"] == "REJECTED"} == {
        "insufficient_credit"
    }
    assert await available_credit(stack, customer) == 0
    await check_invariants()

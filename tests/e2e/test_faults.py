"""Fault drills against the running stack: processes killed (SIGKILL) or stopped mid-flight.

These need control over the stack's processes (scripts/stack.sh); they run in `make test`'s
private stack. Each drill ends with every saga settled and the invariants clean. The drills
under load (a burst of orders while a process is killed, Postgres or Redis restarted) are in
test_drills.py; these pin down single, timed situations.
"""

from collections import Counter
from typing import Any

from common.testing.polling import eventually

from .conftest import Stack, check_invariants, place, settled, sign_up
from .test_orders import available_credit, notifications_of

OUTCOME_KIND = {"APPROVED": "order_approved", "REJECTED": "order_rejected"}


async def test_orders_worker_killed_after_reserve_credit_was_sent(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    stack.control_every("kill", "orders-worker")
    try:
        placed = await place(stack, customer, 4_000)
        # ReserveCredit went out (the API's outbox relay sent it) and users acted on it...
        await eventually(lambda: available_credit(stack, customer), lambda c: c == 6_000)
        saga = await stack.orders.get(f"/orders/{placed['id']}/saga", headers=customer.auth)
        # ...but nobody in orders has heard the reply yet.
        assert saga.json()["state"] == "awaiting_credit"
    finally:
        stack.control_every("start", "orders-worker")

    order = await settled(stack, customer, placed["id"], timeout=30)
    assert order["status"] == "APPROVED"
    await check_invariants()


async def test_notifications_worker_stopped_then_started_delivers_each_notice_once(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=3_000)
    stack.control("stop", "notifications-worker")
    try:
        placed = [await place(stack, customer, 1_000) for _ in range(5)]
        orders = [await settled(stack, customer, o["id"]) for o in placed]
    finally:
        stack.control("start", "notifications-worker")

    expected = Counter(OUTCOME_KIND[o["status"]] for o in orders)
    assert expected == {"order_approved": 3, "order_rejected": 2}

    async def outcome_kinds() -> Counter[str]:
        items = await notifications_of(stack, customer)
        return Counter(n["kind"] for n in items if n["kind"] != "welcome")

    await eventually(outcome_kinds, lambda kinds: kinds == expected, timeout=30)

    async def saga_states() -> set[str]:
        sagas = [
            await stack.orders.get(f"/orders/{o['id']}/saga", headers=customer.auth) for o in placed
        ]
        return {saga.json()["state"] for saga in sagas}

    # The saga heard back for each order, so nothing is still in flight.
    await eventually(saga_states, lambda states: states == {"settled"}, timeout=30)
    assert await outcome_kinds() == expected
    items = await notifications_of(stack, customer)
    assert sorted(n["order_id"] for n in items if n["kind"] != "welcome") == sorted(
        o["id"] for o in placed
    )


async def test_a_reply_after_the_deadline_is_compensated(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    stack.control_every("kill", "users-worker")
    try:
        placed = await place(stack, customer, 2_500)

        # ReserveCredit is sent again at each deadline; only then is the order rejected,
        # and its compensation waits for a CreditReleased nobody can send yet.
        async def fetch() -> dict[str, Any]:
            order = await stack.orders.get(f"/orders/{placed['id']}", headers=customer.auth)
            saga = await stack.orders.get(f"/orders/{placed['id']}/saga", headers=customer.auth)
            return {**order.json(), "saga": saga.json()}

        order = await eventually(fetch, lambda o: o["status"] != "PENDING", timeout=60)
        assert (order["status"], order["rejection_reason"]) == ("REJECTED", "timeout")
        assert order["saga"]["state"] == "compensating"
        resent = [s for s in order["saga"]["steps"] if s["status"] == "resent"]
        assert len(resent) >= 1
    finally:
        stack.control_every("start", "users-worker")

    # The users worker now handles ReserveCredit late, then the compensating ReleaseCredit:
    # whichever order they run in, no credit stays held for a rejected order, and the
    # saga settles once the release is confirmed and the rejection announced.
    await settled(stack, customer, placed["id"], timeout=60)

    async def state() -> tuple[int, list[str]]:
        saga = await stack.orders.get(f"/orders/{placed['id']}/saga", headers=customer.auth)
        steps = [f"{s['name']}:{s['status']}" for s in saga.json()["steps"]]
        return await available_credit(stack, customer), steps

    _, steps = await eventually(
        state, lambda s: s[0] == 10_000 and "reserve_credit:timed_out" in s[1], timeout=30
    )
    assert "reserve_credit:succeeded" not in steps
    await check_invariants()

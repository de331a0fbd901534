"""Notifications over HTTP: the live stream (server-sent events) and signed webhooks.

The webhook receiver runs in this test process on 127.0.0.1, so the stack must allow
loopback targets (`scripts/stack.sh` sets NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_TARGETS for
its e2e stack); against a stack that refuses them, the webhook test is skipped.
"""

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from common.testing.polling import eventually
from common.testing.sse import SseEvent, SseReader
from common.testing.webhooks import Hit, Receiver, signature_is_valid

from .conftest import Customer, Stack, place, settled, sign_up

STREAM_CAP = 5  # NOTIFICATIONS_STREAM_MAX_PER_USER's default, which the e2e stack keeps


def notifications_until(kind: str) -> Callable[[SseEvent], bool]:
    """For :meth:`SseReader.events_until`: stop at the first notification of this kind."""
    return lambda block: block.event == "notification" and block.json["kind"] == kind


async def notification(stream: SseReader, kind: str, within: float = 20.0) -> SseEvent:
    """The next ``notification`` event of this kind (others and heartbeats skipped)."""
    return (await stream.events_until(notifications_until(kind), within))[-1]


@contextlib.asynccontextmanager
async def stream_of(
    stack: Stack, customer: Customer, last_event_id: str | None = None
) -> AsyncIterator[SseReader]:
    headers = dict(customer.auth)
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    async with stack.notifications.stream(
        "GET", "/notifications/stream", headers=headers, timeout=httpx.Timeout(10, read=None)
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = SseReader(response)
        opening = await stream.block(within=10)
        assert "connected" in opening.comments  # subscribed: from here nothing is missed
        yield stream


async def test_the_stream_delivers_the_orders_notification_within_a_second_and_resumes(
    stack: Stack,
):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    async with stream_of(stack, customer) as stream:
        placed = await place(stack, customer, 1_000)
        approved_event = await notification(stream, "order_approved")
    order = await settled(stack, customer, placed["id"])

    assert order["status"] == "APPROVED"
    assert approved_event.json["order_id"] == placed["id"]
    outcome_at = datetime.fromisoformat(order["updated_at"]).timestamp()
    lag = approved_event.received_at - outcome_at
    assert lag < 1.0, f"the notification reached the stream {lag:.3f} s after APPROVED"

    # Disconnected: the cancellation's notification is recorded meanwhile.
    cancelled = await stack.orders.post(f"/orders/{placed['id']}/cancel", headers=customer.auth)
    assert cancelled.status_code == 202, cancelled.text
    assert (await settled(stack, customer, placed["id"]))["status"] == "CANCELLED"

    async def listed_kinds() -> list[str]:
        response = await stack.notifications.get("/notifications", headers=customer.auth)
        return [n["kind"] for n in response.json()["items"]]

    await eventually(listed_kinds, lambda kinds: "order_cancelled" in kinds)

    async with stream_of(stack, customer, last_event_id=approved_event.id) as resumed:
        replayed = await resumed.events_until(notifications_until("order_cancelled"), 20.0)

    assert replayed[-1].json["order_id"] == placed["id"]  # the one missed...
    assert all(e.json["kind"] != "order_approved" for e in replayed)  # ...not the one seen


async def test_a_webhook_receives_a_signed_order_approved_delivery(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    async with Receiver(answer=lambda _: 204) as receiver:
        registered = await stack.notifications.post(
            "/notifications/webhooks",
            json={"url": f"http://127.0.0.1:{receiver.port}/shop"},
            headers=customer.auth,
        )
        if registered.status_code == 422:
            pytest.skip("this stack refuses loopback webhook targets: " + registered.text)
        assert registered.status_code == 201, registered.text
        webhook = registered.json()
        old_secret = webhook["secret"]
        assert old_secret.startswith("whsec_")
        listed = await stack.notifications.get("/notifications/webhooks", headers=customer.auth)
        assert "secret" not in listed.json()["items"][0]  # shown once, never listed

        rotated = await stack.notifications.post(
            f"/notifications/webhooks/{webhook['id']}/rotate-secret", headers=customer.auth
        )
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != old_secret

        placed = await place(stack, customer, 2_500)
        assert (await settled(stack, customer, placed["id"]))["status"] == "APPROVED"

        def approved() -> list[Hit]:
            return [h for h in receiver.hits if h.json["type"] == "notification.order_approved"]

        async def hits() -> list[Hit]:
            return approved()

        [hit] = await eventually(hits, bool)

    # In the rotation's grace period: a receiver on either secret verifies it.
    assert signature_is_valid(new_secret, hit)
    assert signature_is_valid(old_secret, hit)
    assert not signature_is_valid("whsec_" + "A" * 44, hit)
    assert set(hit.json) == {"type", "timestamp", "data"}
    data = hit.json["data"]
    assert data["order_id"] == placed["id"]
    assert data["user_id"] == customer.id
    assert set(data) == {"id", "kind", "order_id", "user_id", "created_at"}

    async def attempts() -> list[dict[str, Any]]:
        response = await stack.notifications.get(
            f"/notifications/webhooks/{webhook['id']}/deliveries", headers=customer.auth
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return [a for a in items if a["delivery_id"] == hit.headers["webhook-id"]]

    [attempt] = await eventually(attempts, bool)
    assert attempt["notification_id"] == data["id"]
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 204
    assert attempt["outcome"] == "succeeded"
    assert attempt["next_attempt_at"] is None


async def test_logging_out_ends_the_tokens_open_stream_at_once(stack: Stack):
    """Well before the stream's next heartbeat (15 s), where the session is checked anyway."""
    customer = await sign_up(stack, credit_limit_cents=10_000)
    async with stream_of(stack, customer) as stream:
        started = time.monotonic()
        logout = await stack.users.delete("/users/sessions/current", headers=customer.auth)
        assert logout.status_code == 204, logout.text
        assert await stream.ended(within=5)
        assert time.monotonic() - started < 5


async def test_one_stream_past_the_per_user_cap_is_429(stack: Stack):
    customer = await sign_up(stack, credit_limit_cents=10_000)
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(STREAM_CAP):
            await streams.enter_async_context(stream_of(stack, customer))
        async with stack.notifications.stream(
            "GET", "/notifications/stream", headers=customer.auth
        ) as refused:
            assert refused.status_code == 429  # (a 200 is not read: it would never end)
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert int(refused.headers["retry-after"]) >= 1

"""The worker's webhook deliveries: signed, retried with backoff, behind a circuit breaker,
durable across restarts. Real receivers on 127.0.0.1; deadlines, never bare sleeps."""

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import extract, func, select

from common.db import Database
from notifications import repository
from notifications.breaker import CircuitBreaker
from notifications.models import WebhookDelivery

from ..conftest import Receiver, eventually, free_port, signature_is_valid

pytestmark = pytest.mark.integration

SECRET = "a-webhook-secret-0123456789"


async def register(client, user, url: str, secret: str = SECRET) -> dict[str, Any]:
    response = await client.post(
        "/notifications/webhooks", json={"url": url, "secret": secret}, headers=user.auth
    )
    assert response.status_code == 201, response.text
    webhook: dict[str, Any] = response.json()
    return webhook


async def attempts_of(client, user, webhook: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get(
        f"/notifications/webhooks/{webhook['id']}/deliveries",
        params={"limit": 100},
        headers=user.auth,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items[::-1]  # oldest first


def hits(receiver: Receiver, count: int = 1):
    async def enough() -> bool:
        return len(receiver.hits) >= count

    return enough


async def delivery_status(database: Database, notification_id: uuid.UUID) -> list[str]:
    async with database.session() as session:
        rows = await session.execute(
            select(WebhookDelivery.status).where(WebhookDelivery.notification_id == notification_id)
        )
        return [row.status for row in rows]


async def test_a_receiver_gets_a_correctly_signed_delivery(
    client, new_user, record, receivers, dispatcher
):
    user = await new_user()
    receiver = await receivers()
    webhook = await register(client, user, receiver.url)

    async with dispatcher():
        notification = await record(user.id, "order_approved")
        await eventually(hits(receiver), within=5)

    [hit] = receiver.hits
    assert hit.method == "POST"
    assert hit.path == "/hooks"
    assert hit.headers["content-type"] == "application/json"
    assert signature_is_valid(SECRET, hit)
    assert not signature_is_valid("another-secret-of-16+", hit)
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60
    body = hit.json
    assert datetime.fromisoformat(body.pop("created_at")) == notification.created_at
    assert body == {
        "id": str(notification.id),
        "kind": "order_approved",
        "order_id": str(notification.order_id),
        "user_id": str(user.id),
    }
    [attempt] = await attempts_of(client, user, webhook)
    assert attempt["delivery_id"] == hit.headers["webhook-id"]
    assert attempt["notification_id"] == str(notification.id)
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 200
    assert attempt["error"] is None
    assert attempt["outcome"] == "succeeded"
    assert attempt["next_attempt_at"] is None
    assert attempt["duration_ms"] >= 0


async def test_every_kind_is_delivered_to_every_webhook_of_the_user(
    client, new_user, record, receivers, dispatcher
):
    user, other = await new_user(), await new_user()
    first, second, others = await receivers(), await receivers(), await receivers()
    await register(client, user, first.url)
    await register(client, user, second.url)
    await register(client, other, others.url)

    async with dispatcher():
        welcome = await record(user.id, "welcome")
        cancelled = await record(user.id, "order_cancelled")
        await record(user.id, "welcome")  # a redelivered sign-up: no second notification

        await eventually(hits(first, 2), within=5)
        await eventually(hits(second, 2), within=5)
        await eventually(lambda: delivery_status_all_final(client, user), within=5)

    for receiver in (first, second):
        assert sorted(hit.json["id"] for hit in receiver.hits) == sorted(
            [str(welcome.id), str(cancelled.id)]
        )
        assert all(signature_is_valid(SECRET, hit) for hit in receiver.hits)
    assert others.hits == []


async def delivery_status_all_final(client, user) -> bool:
    listed = await client.get("/notifications/webhooks", headers=user.auth)
    for webhook in listed.json()["items"]:
        attempts = await attempts_of(client, user, webhook)
        if any(a["outcome"] != "succeeded" for a in attempts):
            return False
    return True


async def test_a_receiver_failing_n_times_then_recovering_gets_it_exactly_once(
    client, new_user, record, receivers, dispatcher, database
):
    failures = 3
    user = await new_user()
    receiver = await receivers(lambda n: 500 if n <= failures else 200)
    webhook = await register(client, user, receiver.url)

    async with dispatcher(webhook_max_attempts=10, webhook_breaker_failure_threshold=10):
        notification = await record(user.id)

        async def delivered() -> bool:
            return await delivery_status(database, notification.id) == ["succeeded"]

        await eventually(delivered, within=10)

    assert [hit.status for hit in receiver.hits] == [500] * failures + [200]
    assert len(receiver.successes()) == 1
    assert len({hit.headers["webhook-id"] for hit in receiver.hits}) == 1  # one delivery
    assert [hit.headers["webhook-attempt"] for hit in receiver.hits] == ["1", "2", "3", "4"]
    attempts = await attempts_of(client, user, webhook)
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 500, "retrying"),
        (4, 200, "succeeded"),
    ]
    assert all(a["next_attempt_at"] is not None for a in attempts[:3])


async def test_a_delivery_gives_up_after_max_attempts(
    client, new_user, record, receivers, dispatcher, database
):
    user = await new_user()
    receiver = await receivers(lambda _: 503)
    webhook = await register(client, user, receiver.url)

    async with dispatcher(webhook_max_attempts=3, webhook_breaker_failure_threshold=10):
        notification = await record(user.id)

        async def failed() -> bool:
            return await delivery_status(database, notification.id) == ["failed"]

        await eventually(failed, within=10)

    assert len(receiver.hits) == 3
    attempts = await attempts_of(client, user, webhook)
    assert [a["outcome"] for a in attempts] == ["retrying", "retrying", "gave_up"]
    assert attempts[-1]["next_attempt_at"] is None


async def test_a_dead_receiver_opens_the_breaker_and_a_half_open_probe_closes_it(
    client, new_user, record, receivers, dispatcher, database, redis, notifications_settings
):
    threshold, cooldown = 3, 0.3
    healthy = False
    user = await new_user()
    receiver = await receivers(lambda _: 200 if healthy else 500)
    webhook = await register(client, user, receiver.url)
    breaker = CircuitBreaker(
        redis,
        failure_threshold=threshold,
        cooldown_seconds=cooldown,
        probe_lease_seconds=5,
        probe_wait_seconds=0.1,
    )
    overrides = {
        "webhook_max_attempts": 1000,
        "webhook_backoff_base_seconds": 0.005,
        "webhook_backoff_max_seconds": 0.01,
        "webhook_breaker_failure_threshold": threshold,
        "webhook_breaker_cooldown_seconds": cooldown,
    }
    async with dispatcher(**overrides):
        notification = await record(user.id)

        async def opened() -> bool:
            return await breaker.state(receiver.url) != "closed"

        await eventually(opened, within=5)
        assert threshold <= len(receiver.hits) <= threshold + 1  # + maybe the first probe

        # Open: the retries (every ~10 ms without a breaker) stop hammering the receiver;
        # only one probe per cool-down gets through. Observe a window of 1.5 s.
        window = 1.5
        before = len(receiver.hits)
        await asyncio.sleep(window)  # an observation window, not a synchronisation
        probes = len(receiver.hits) - before
        assert 1 <= probes <= window / cooldown + 1
        assert await delivery_status(database, notification.id) == ["pending"]

        healthy = True

        async def delivered() -> bool:
            return await delivery_status(database, notification.id) == ["succeeded"]

        await eventually(delivered, within=5)
        assert await breaker.state(receiver.url) == "closed"

    assert len(receiver.successes()) == 1
    # While open nothing was attempted: every recorded attempt is a hit the receiver saw.
    attempts = await attempts_of(client, user, webhook)
    assert len(attempts) == len(receiver.hits)
    assert attempts[-1]["outcome"] == "succeeded"


async def test_connection_refused_counts_as_a_failure_and_opens_the_breaker(
    client, new_user, record, receivers, dispatcher, database, redis
):
    port = free_port()  # nothing listens there: connection refused
    user = await new_user()
    url = f"http://127.0.0.1:{port}/hooks"
    webhook = await register(client, user, url)
    breaker = CircuitBreaker(
        redis, failure_threshold=2, cooldown_seconds=60, probe_lease_seconds=5, probe_wait_seconds=1
    )
    async with dispatcher(
        webhook_breaker_failure_threshold=2,
        webhook_breaker_cooldown_seconds=60,
        webhook_max_attempts=100,
    ):
        notification = await record(user.id)

        async def opened_after_two_attempts() -> bool:
            attempts = await attempts_of(client, user, webhook)
            return len(attempts) == 2 and await breaker.state(url) == "open"

        await eventually(opened_after_two_attempts, within=5)
        # Let the dispatcher try again (backoff <= 50 ms): the breaker holds it back.
        await eventually(lambda: deferred(database, notification.id), within=5)

    attempts = await attempts_of(client, user, webhook)
    assert len(attempts) == 2
    assert all(a["status_code"] is None and a["error"] for a in attempts)
    assert await delivery_status(database, notification.id) == ["pending"]  # waits, not lost


async def deferred(database: Database, notification_id: uuid.UUID) -> bool:
    """Pending, unclaimed, and due only after the breaker's cool-down (well over a backoff)."""
    async with database.session() as session:
        row = (
            await session.execute(
                select(
                    WebhookDelivery.claim_id,
                    extract("epoch", WebhookDelivery.next_attempt_at - func.now()),
                ).where(WebhookDelivery.notification_id == notification_id)
            )
        ).one()
    return row[0] is None and float(row[1]) > 10


async def test_private_targets_are_refused_at_delivery_time_unless_allowed(
    client, new_user, record, receivers, dispatcher, database
):
    user = await new_user()
    receiver = await receivers()
    webhook = await register(client, user, receiver.url)  # allowed when registered

    async with dispatcher(
        webhook_allow_private_targets=False,
        webhook_max_attempts=1,
        webhook_breaker_failure_threshold=10,
    ):
        notification = await record(user.id)

        async def failed() -> bool:
            return await delivery_status(database, notification.id) == ["failed"]

        await eventually(failed, within=5)

    assert receiver.hits == []
    [attempt] = await attempts_of(client, user, webhook)
    assert attempt["status_code"] is None
    assert "target refused" in attempt["error"]
    assert "loopback" in attempt["error"]


async def test_pending_deliveries_survive_a_worker_restart(
    client, new_user, record, receivers, dispatcher, database
):
    user = await new_user()
    receiver = await receivers()
    await register(client, user, receiver.url)

    notification = await record(user.id)  # no dispatcher running: the row waits
    assert await delivery_status(database, notification.id) == ["pending"]

    async with dispatcher():
        await eventually(hits(receiver), within=5)
    assert [hit.json["id"] for hit in receiver.hits] == [str(notification.id)]


async def test_a_delivery_leased_by_a_crashed_worker_is_delivered_when_the_lease_ends(
    client, new_user, record, receivers, dispatcher, database
):
    user = await new_user()
    receiver = await receivers()
    await register(client, user, receiver.url)
    notification = await record(user.id)
    async with database.transaction() as uow:  # a worker claims it, then dies
        [claimed] = await repository.claim_due_deliveries(uow.session, limit=10, lease_seconds=0.5)
    assert claimed.notification_id == notification.id

    started = time.monotonic()
    async with dispatcher():
        await eventually(hits(receiver), within=5)
    assert time.monotonic() - started >= 0.3  # not before the lease ran out
    assert [hit.headers["webhook-id"] for hit in receiver.hits] == [str(claimed.id)]


async def test_deleting_a_webhook_drops_its_pending_deliveries(
    client, new_user, record, dispatcher, database
):
    user = await new_user()
    webhook = await register(client, user, "http://127.0.0.1:9/hooks")
    notification = await record(user.id)
    deleted = await client.delete(f"/notifications/webhooks/{webhook['id']}", headers=user.auth)
    assert deleted.status_code == 204
    assert await delivery_status(database, notification.id) == []
    async with database.session() as session:
        count = await session.execute(select(func.count()).select_from(WebhookDelivery))
        assert count.scalar_one() == 0

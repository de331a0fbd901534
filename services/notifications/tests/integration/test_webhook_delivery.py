"""The worker's webhook deliveries: signed, retried with backoff, behind a circuit breaker,
durable across restarts. Real receivers on 127.0.0.1; deadlines, never bare sleeps."""

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import extract, func, select, update

from common.db import Database
from common.testing.polling import eventually
from common.testing.webhooks import Receiver, signature_is_valid
from notifications import repository, webhooks
from notifications.breaker import CircuitBreaker
from notifications.models import Webhook, WebhookDelivery

from ..conftest import free_port

pytestmark = pytest.mark.integration


async def register(client, user, url: str) -> dict[str, Any]:
    """The webhook as created: with its secret, shown this once."""
    response = await client.post("/notifications/webhooks", json={"url": url}, headers=user.auth)
    assert response.status_code == 201, response.text
    webhook: dict[str, Any] = response.json()
    assert webhook["secret"].startswith("whsec_")
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
        await eventually(hits(receiver), timeout=5)

    [hit] = receiver.hits
    assert hit.method == "POST"
    assert hit.path == "/hooks"
    assert hit.headers["content-type"] == "application/json"
    assert signature_is_valid(webhook["secret"], hit)
    assert not signature_is_valid(webhooks.new_secret(), hit)
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60
    body = hit.json
    assert body["type"] == "notification.order_approved"
    assert datetime.fromisoformat(body["timestamp"]) == notification.created_at
    data = body["data"]
    assert datetime.fromisoformat(data.pop("created_at")) == notification.created_at
    assert data == {
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
    secrets = {
        first.port: (await register(client, user, first.url))["secret"],
        second.port: (await register(client, user, second.url))["secret"],
    }
    await register(client, other, others.url)

    async with dispatcher():
        welcome = await record(user.id, "welcome")
        cancelled = await record(user.id, "order_cancelled")
        await record(user.id, "welcome")  # a redelivered sign-up: no second notification

        await eventually(hits(first, 2), timeout=5)
        await eventually(hits(second, 2), timeout=5)
        await eventually(lambda: delivery_status_all_final(client, user), timeout=5)

    for receiver in (first, second):
        assert sorted(hit.json["data"]["id"] for hit in receiver.hits) == sorted(
            [str(welcome.id), str(cancelled.id)]
        )
        assert all(signature_is_valid(secrets[receiver.port], hit) for hit in receiver.hits)
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

    async with dispatcher(webhook={"max_attempts": 10, "breaker_failure_threshold": 10}):
        notification = await record(user.id)

        async def delivered() -> bool:
            return await delivery_status(database, notification.id) == ["succeeded"]

        await eventually(delivered, timeout=10)

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

    async with dispatcher(webhook={"max_attempts": 3, "breaker_failure_threshold": 10}):
        notification = await record(user.id)

        async def failed() -> bool:
            return await delivery_status(database, notification.id) == ["failed"]

        await eventually(failed, timeout=10)

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
    webhook_settings = {
        "max_attempts": 1000,
        "backoff_base_seconds": 0.005,
        "backoff_max_seconds": 0.01,
        "breaker_failure_threshold": threshold,
        "breaker_cooldown_seconds": cooldown,
    }
    async with dispatcher(webhook=webhook_settings):
        notification = await record(user.id)

        async def opened() -> bool:
            return await breaker.state(webhook["id"]) != "closed"

        await eventually(opened, timeout=5)
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

        await eventually(delivered, timeout=5)
        assert await breaker.state(webhook["id"]) == "closed"

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
        webhook={
            "breaker_failure_threshold": 2,
            "breaker_cooldown_seconds": 60,
            "max_attempts": 100,
        }
    ):
        notification = await record(user.id)

        async def opened_after_two_attempts() -> bool:
            attempts = await attempts_of(client, user, webhook)
            return len(attempts) == 2 and await breaker.state(webhook["id"]) == "open"

        await eventually(opened_after_two_attempts, timeout=5)
        # Let the dispatcher try again (backoff <= 50 ms): the breaker holds it back.
        await eventually(lambda: deferred(database, notification.id), timeout=5)

    attempts = await attempts_of(client, user, webhook)
    assert len(attempts) == 2
    assert all(a["status_code"] is None and a["error"] for a in attempts)
    assert await delivery_status(database, notification.id) == ["pending"]  # waits, not lost


async def test_the_breaker_is_per_webhook_not_per_url(
    client, new_user, record, dispatcher, database, redis
):
    """Defect 6: a customer whose receiver fails (on purpose) opens only their own breaker;
    another customer's webhook to the same URL is still attempted."""
    url = f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens: every attempt fails
    attacker, victim = await new_user(), await new_user()
    attackers_webhook = await register(client, attacker, url)
    victims_webhook = await register(client, victim, url)
    breaker = CircuitBreaker(
        redis, failure_threshold=2, cooldown_seconds=60, probe_lease_seconds=5, probe_wait_seconds=1
    )
    async with dispatcher(
        webhook={
            "breaker_failure_threshold": 2,
            "breaker_cooldown_seconds": 60,
            "max_attempts": 100,
        }
    ):
        await record(attacker.id)

        async def attackers_breaker_open() -> bool:
            return await breaker.state(attackers_webhook["id"]) == "open"

        await eventually(attackers_breaker_open, timeout=5)
        await record(victim.id)

        async def victims_delivery_attempted() -> bool:
            return len(await attempts_of(client, victim, victims_webhook)) >= 1

        await eventually(victims_delivery_attempted, timeout=5)


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
        webhook={"allow_private_targets": False, "max_attempts": 1, "breaker_failure_threshold": 10}
    ):
        notification = await record(user.id)

        async def failed() -> bool:
            return await delivery_status(database, notification.id) == ["failed"]

        await eventually(failed, timeout=5)

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
        await eventually(hits(receiver), timeout=5)
    assert [hit.json["data"]["id"] for hit in receiver.hits] == [str(notification.id)]


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
        await eventually(hits(receiver), timeout=5)
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


async def rotate(client, user, webhook: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        f"/notifications/webhooks/{webhook['id']}/rotate-secret", headers=user.auth
    )
    assert response.status_code == 200, response.text
    rotated: dict[str, Any] = response.json()
    return rotated


async def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one(
    client, new_user, record, receivers, dispatcher, database
):
    """Receivers that verify with the reference library: one still on the old secret, one
    already on the new one, both accept every delivery of the grace period."""
    user = await new_user()
    on_old, on_new = await receivers(), await receivers()
    first = await register(client, user, on_old.url)
    second = await register(client, user, on_new.url)
    on_old.secret = first["secret"]

    rotated = await rotate(client, user, second)
    assert rotated["id"] == second["id"]
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != second["secret"]
    assert rotated["previous_secret_expires_at"] is not None
    on_new.secret = rotated["secret"]

    async with dispatcher():
        in_grace = await record(user.id, "order_approved")
        await eventually(hits(on_old), timeout=5)
        await eventually(hits(on_new), timeout=5)
        [hit] = on_new.hits
        assert hit.status == 200  # verified with the new secret by the receiver itself
        assert signature_is_valid(second["secret"], hit)  # and the old one still verifies
        assert len(hit.headers["webhook-signature"].split(" ")) == 2
        assert on_old.hits[0].status == 200
        assert len(on_old.hits[0].headers["webhook-signature"].split(" ")) == 1

        # The grace period ends (moved into the past rather than waited for).
        async with database.transaction() as uow:
            await uow.session.execute(
                update(Webhook)
                .where(Webhook.id == uuid.UUID(second["id"]))
                .values(previous_secret_expires_at=func.now() - timedelta(seconds=1))
            )
        after_grace = await record(user.id, "order_cancelled")
        await eventually(hits(on_new, 2), timeout=5)

    last = on_new.hits[1]
    assert last.json["data"]["id"] == str(after_grace.id)
    assert last.status == 200
    assert signature_is_valid(rotated["secret"], last)
    assert not signature_is_valid(second["secret"], last)
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    assert hit.json["data"]["id"] == str(in_grace.id)


async def test_a_receiver_on_a_wrong_secret_refuses_and_the_delivery_is_retried(
    client, new_user, record, receivers, dispatcher
):
    user = await new_user()
    receiver = await receivers()
    webhook = await register(client, user, receiver.url)
    receiver.secret = webhooks.new_secret()  # not the webhook's: every delivery fails to verify

    async with dispatcher(webhook={"max_attempts": 2}):
        await record(user.id, "welcome")
        await eventually(hits(receiver, 2), timeout=5)
        await eventually(lambda: gave_up(client, user, webhook), timeout=5)

    assert [hit.status for hit in receiver.hits] == [401, 401]


async def gave_up(client, user, webhook: dict[str, Any]) -> bool:
    return [a["outcome"] for a in await attempts_of(client, user, webhook)] == [
        "retrying",
        "gave_up",
    ]

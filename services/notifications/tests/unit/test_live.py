"""The in-process side of live fan-out: per-stream buffers never block the hub."""

import uuid
from datetime import UTC, datetime

from notifications.live import Subscription


def key(n: int) -> tuple[datetime, uuid.UUID]:
    return datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC), uuid.UUID(int=n)


async def test_a_subscription_buffers_keys_until_taken():
    subscription = Subscription(uuid.uuid4(), limit=3)
    subscription.offer(key(1))
    subscription.offer(key(2))
    await subscription.wait(1.0)  # returns at once: something is there
    assert subscription.take() == ([key(1), key(2)], None)
    assert subscription.take() == ([], None)


async def test_a_slow_stream_overflows_into_a_resync_instead_of_blocking():
    subscription = Subscription(uuid.uuid4(), limit=3)
    for n in range(10):
        subscription.offer(key(n))  # never blocks, never grows past the limit
    keys, resync = subscription.take()
    assert resync == "overflow"  # the stream re-reads Postgres: nothing is lost
    assert len(keys) <= 3


async def test_closing_wakes_the_stream():
    subscription = Subscription(uuid.uuid4(), limit=3)
    subscription.close()
    await subscription.wait(5.0)
    assert subscription.closed

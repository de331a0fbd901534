"""The notifications worker end to end: bus events in; notifications, live events, webhook
deliveries and the saga's reply out."""

import asyncio
import uuid

import pytest

from common.bus import Envelope, stream_key
from common.contracts import Message, NotificationRecorded, OrderApproved, UserRegistered
from common.testing.polling import eventually
from common.testing.webhooks import signature_is_valid
from common.worker import serve_worker
from notifications.worker import spec

from ..conftest import free_port

pytestmark = pytest.mark.integration


async def test_the_worker_turns_bus_events_into_live_events_and_signed_webhooks(
    notifications_settings, redis, client, new_user, receivers, open_stream, clean_webhooks
):
    settings = notifications_settings.model_copy(update={"worker_port": free_port()})
    prefix = settings.bus.stream_prefix
    user = await new_user()
    receiver = await receivers()
    registered = await client.post(
        "/notifications/webhooks",
        json={"url": receiver.url},
        headers=user.auth,
    )
    assert registered.status_code == 201
    secret = registered.json()["secret"]
    order_id = uuid.uuid4()

    async def publish(message: Message) -> None:  # as the users and orders relays do
        envelope = Envelope.wrap(message, source="test")
        await redis.xadd(stream_key(prefix, message.STREAM), envelope.to_fields())

    stop = asyncio.Event()
    worker = asyncio.create_task(serve_worker(settings, spec(settings), stop))
    try:
        async with open_stream(user) as stream:
            await stream.block()
            await publish(UserRegistered(user_id=user.id, email="a@example.com", name="A"))
            await publish(OrderApproved(order_id=order_id, user_id=user.id, total_cents=500))
            events = [await stream.event(within=10) for _ in range(2)]

        async def two_hits() -> bool:
            return len(receiver.hits) >= 2

        await eventually(two_hits, timeout=10)

        async def saga_told() -> list[Envelope]:
            entries = await redis.xrange(stream_key(prefix, NotificationRecorded.STREAM))
            return [
                e
                for _, fields in entries
                if (e := Envelope.from_fields(fields)).type == NotificationRecorded.TYPE
                and e.payload["order_id"] == str(order_id)
            ]

        [reply] = await eventually(saga_told, timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)

    assert sorted(e.json["kind"] for e in events) == ["order_approved", "welcome"]
    delivered = [hit.json["data"] for hit in receiver.hits]
    assert sorted(d["kind"] for d in delivered) == ["order_approved", "welcome"]
    assert all(signature_is_valid(secret, hit) for hit in receiver.hits)
    approved = next(d for d in delivered if d["kind"] == "order_approved")
    assert approved["order_id"] == str(order_id)
    assert reply.payload["notification_id"] == approved["id"]

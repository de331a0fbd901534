"""``common.redis.publish``: one pipelined call reaches every channel's subscribers, on a
single Redis (PUBLISH) and on a Redis Cluster (SPUBLISH, channels on different shards)."""

import asyncio
import uuid
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub

from common.redis import is_cluster, publish

pytestmark = pytest.mark.integration


async def _next_message(redis: Redis, pubsub: Any) -> dict[str, Any] | None:
    message: dict[str, Any] | None
    if is_cluster(redis):
        message = await cast(ClusterPubSub, pubsub).get_sharded_message(timeout=0.05)
    else:
        message = await cast(PubSub, pubsub).get_message(timeout=0.05)
    return message


async def _subscribed(redis: Redis, channels: list[str]) -> Any:
    """A pub/sub connection with every channel's subscription confirmed."""
    await redis.ping()  # a cluster client learns its slot map on its first command
    pubsub = redis.pubsub()
    if is_cluster(redis):
        await cast(ClusterPubSub, pubsub).ssubscribe(*channels)
    else:
        await pubsub.subscribe(*channels)
    confirmed = 0
    async with asyncio.timeout(10):
        while confirmed < len(channels):
            message = await _next_message(redis, pubsub)
            if message is not None and message["type"] in {"subscribe", "ssubscribe"}:
                confirmed += 1
    return pubsub


async def test_one_call_publishes_every_message_to_its_channel(redis: Redis):
    # Hash tags whose slots (15495, 3300, 7365) are on the three primaries of a cluster.
    channels = [f"publish-test:{{{tag}}}:{uuid.uuid4().hex}" for tag in ("a", "b", "c")]
    pubsub = await _subscribed(redis, channels)
    try:
        await publish(redis, [(channel, f"hello {channel}") for channel in channels])
        received: dict[str, str] = {}
        async with asyncio.timeout(10):
            while len(received) < len(channels):
                message = await _next_message(redis, pubsub)
                if message is not None and message["type"] in {"message", "smessage"}:
                    received[message["channel"]] = message["data"]
    finally:
        await pubsub.aclose()

    assert received == {channel: f"hello {channel}" for channel in channels}

"""The live hub on a Redis Cluster follows the cluster by itself: it subscribes on a client
nothing else has used yet, and it comes back on the new primary after a fail-over, with no
other Redis traffic in the process to refresh the client's slot map."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from common.redis import create_redis
from common.testing.cluster import RUN_DIR, LocalRedisCluster, free_port_run
from common.testing.plugin import CLUSTER_PORT_BASE
from common.testing.polling import eventually
from notifications.live import LiveHub, Subscription, live_channel
from notifications.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def cluster_client(nodes: str) -> Redis:
    """The services' own cluster client (``common.redis.create_redis``), not yet used."""
    return create_redis(Settings(redis={"cluster_nodes": nodes}, consumer_name="live-test"))


@pytest.fixture(scope="module")
def failover_cluster() -> Iterator[LocalRedisCluster]:
    """A private cluster of 3 primaries, each with a replica that takes over when it dies."""
    base = free_port_run(CLUSTER_PORT_BASE + 40, 6)
    cluster = LocalRedisCluster(
        base, replicas_per_primary=1, directory=RUN_DIR / f"test-redis-failover-{base}"
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


StartHub = Callable[[str], Awaitable[LiveHub]]


@pytest.fixture
async def hub_on() -> AsyncIterator[StartHub]:
    """Starts hubs on their own cluster clients, each seeded with ``nodes``; stops them."""
    hubs: list[tuple[LiveHub, Redis]] = []

    async def start(nodes: str) -> LiveHub:
        redis = cluster_client(nodes)
        hub = LiveHub(redis, queue_size=10, reconnect_seconds=0.2)
        await hub.start()
        hubs.append((hub, redis))
        return hub

    yield start
    for hub, redis in hubs:
        await hub.stop()
        await redis.aclose()


async def announce(nodes: str, user_id: uuid.UUID) -> tuple[datetime, uuid.UUID]:
    """SPUBLISH a new notification's live message for ``user_id`` from another client."""
    key = (datetime.now(UTC), uuid.uuid4())
    payload = {"id": str(key[1]), "created_at": key[0].isoformat(), "user_id": str(user_id)}
    publisher = cluster_client(nodes)
    try:
        await publisher.spublish(live_channel(publisher, user_id), json.dumps(payload))
    finally:
        await publisher.aclose()
    return key


async def received(subscription: Subscription, within: float) -> list[tuple[datetime, uuid.UUID]]:
    await subscription.wait(within)
    return subscription.take()[0]


async def test_a_hub_subscribes_on_a_cluster_client_nothing_else_has_used(
    redis_cluster: LocalRedisCluster, hub_on: StartHub
) -> None:
    hub = await hub_on(redis_cluster.nodes)
    assert await hub.ready(within=5), "the hub never confirmed its subscriptions"

    user_id = uuid.uuid4()
    subscription = hub.subscribe(user_id)
    key = await announce(redis_cluster.nodes, user_id)
    assert await received(subscription, within=5) == [key]


async def test_a_hub_resubscribes_on_the_new_primary_after_a_fail_over(
    failover_cluster: LocalRedisCluster, hub_on: StartHub
) -> None:
    hub = await hub_on(failover_cluster.nodes)
    assert await hub.ready(within=5)
    user_id = uuid.uuid4()
    subscription = hub.subscribe(user_id)
    channel = live_channel(hub.redis, user_id)

    victim = failover_cluster.owner_of(channel)
    failover_cluster.kill_node(victim)
    try:
        await asyncio.to_thread(failover_cluster.wait_failover, channel, victim, 30)
        # The hub's own client is the only one in play: nothing but the hub can refresh its
        # slot map. Each announcement is made once the previous one went unheard.
        await eventually(
            lambda: announce_and_listen(failover_cluster.nodes, user_id, subscription),
            bool,
            timeout=20,
            interval=0.0,
            what="a live message heard on the failed-over shard",
        )
    finally:
        failover_cluster.start_node(victim)  # back as a replica of its successor
        await asyncio.to_thread(failover_cluster.wait_healthy, 30)
    assert await hub.ready(within=1)


async def announce_and_listen(nodes: str, user_id: uuid.UUID, subscription: Subscription) -> bool:
    """Announce, and whether this announcement reaches the subscription within 0.5 s.

    An earlier announcement heard late is skipped, not taken for this one's answer: a probe
    that took one batch of keys and compared would see the late key, fail, and leave the
    wake-up of its own late key to the next probe, and so on, each probe one behind (what
    failed this test about one run in five, though the hub heard every message)."""
    key = await announce(nodes, user_id)
    deadline = time.monotonic() + 0.5
    while (left := deadline - time.monotonic()) > 0:
        keys = await received(subscription, within=left)
        if any(k >= key for k in keys):
            return True
    return False

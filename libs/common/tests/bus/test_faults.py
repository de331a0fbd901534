"""The consumer under faults: handler errors are retried in-process with backoff, and an
outage of Postgres or Redis pauses consumption without counting attempts.

Outages are made with a TCP proxy in front of the real servers (common.testing.proxy), so
the servers themselves keep serving the rest of the suite.
"""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from common.bus import Consumer, Envelope, StreamTrimmer, ensure_group, stream_key
from common.contracts import UserRegistered, groups_reading
from common.db import Database, UnitOfWork, create_engine
from common.testing.polling import eventually
from common.testing.proxy import TcpProxy

from .harness import Harness, Ping, sample
from .test_bus import _pending_is

pytestmark = pytest.mark.integration


@pytest.fixture
async def postgres_proxy(h: Harness) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy.in_front_of(h.settings.database_url)
    yield proxy
    await proxy.close()


@pytest.fixture
async def redis_proxy(h: Harness) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy.in_front_of(h.redis_url)
    yield proxy
    await proxy.close()


async def test_a_failing_handler_is_retried_in_process_not_at_the_next_reclaim(
    h: Harness,
) -> None:
    failures_left = {"flaky": 2}

    async def flaky(uow: UnitOfWork, _: Envelope, message: Ping) -> None:
        if failures_left.get(message.key, 0) > 0:
            failures_left[message.key] -= 1
            raise RuntimeError("transient")
        await uow.session.execute(h.effects.insert().values(key=message.key))

    # Reclaim would come back only after a minute: handling within seconds proves the retry.
    await h.start_consumer({Ping: flaky}, bus={"reclaim_idle_ms": 60_000, "max_attempts": 3})
    await h.send(Ping(key="flaky"))

    await eventually(lambda: _effect_is_there(h, "flaky"), what="the retried message handled")
    assert sample("bus_messages_failed_total", group=h.group, type=Ping.TYPE) == 2
    assert await h.dead_letters() == []
    await eventually(lambda: _pending_is(h, 0), what="the entry acknowledged")


async def _effect_is_there(h: Harness, key: str) -> bool:
    return await h.effect_count(key) == 1


async def test_a_postgres_outage_pauses_the_consumer_and_dead_letters_nothing(
    h: Harness, postgres_proxy: TcpProxy
) -> None:
    settings = h.with_settings(
        database_url=postgres_proxy.url(h.settings.database_url),
        bus={"max_attempts": 2, "pause_max_seconds": 0.1, "retry_base_seconds": 0.01},
    )
    database = Database(create_engine(settings))
    consumer = Consumer(
        database,
        h.redis,
        group=h.group,
        handlers={Ping: h.recorder()},
        inbox_table=h.inbox,
        settings=settings,
    )
    await consumer.start()
    try:
        await h.send(Ping(key="before"))
        await eventually(lambda: _effect_is_there(h, "before"), what="handled before the outage")

        await postgres_proxy.cut()
        await h.send(*(Ping(key=f"during-{n}") for n in range(20)))
        await eventually(
            lambda: _gauge_is("bus_consumer_paused", h.group, 1.0), what="consumption paused"
        )
        # Far more probes than bus.max_attempts while down: none of them counted.
        await eventually(lambda: _refused_at_least(postgres_proxy, 6), what="probes refused")
        assert await h.dead_letters() == []
        assert sample("bus_messages_failed_total", group=h.group, type=Ping.TYPE) == 0

        postgres_proxy.restore()
        await eventually(lambda: _effects_are(h, 21), timeout=15, what="the backlog handled")
        assert await h.dead_letters() == []
        assert sample("bus_consumer_paused", group=h.group) == 0
        await eventually(lambda: _pending_is(h, 0), what="every entry acknowledged")
    finally:
        await consumer.stop()
        await database.dispose()


async def test_a_redis_outage_pauses_the_consumer_and_loses_nothing(
    h: Harness, redis_proxy: TcpProxy
) -> None:
    settings = h.with_settings(bus={"pause_max_seconds": 0.1, "retry_base_seconds": 0.01})
    redis = Redis.from_url(redis_proxy.url(h.redis_url), decode_responses=True, socket_timeout=1)
    await ensure_group(h.redis, h.key, h.group)
    consumer = Consumer(
        h.database,
        redis,
        group=h.group,
        handlers={Ping: h.recorder()},
        inbox_table=h.inbox,
        settings=settings,
    )
    await consumer.start()
    try:
        await redis_proxy.cut()
        await h.send(*(Ping(key=f"during-{n}") for n in range(10)))
        await eventually(
            lambda: _gauge_is("bus_consumer_paused", h.group, 1.0), what="consumption paused"
        )
        await eventually(lambda: _refused_at_least(redis_proxy, 4), what="probes refused")
        redis_proxy.restore()
        await eventually(lambda: _effects_are(h, 10), timeout=15, what="the entries handled")
        await eventually(lambda: _pending_is(h, 0), what="every entry acknowledged")
        assert await h.dead_letters() == []
    finally:
        await consumer.stop()
        await redis.aclose()


async def _gauge_is(name: str, group: str, value: float) -> bool:
    return sample(name, group=group) == value


async def _refused_at_least(proxy: TcpProxy, n: int) -> bool:
    return proxy.refused >= n


async def _effects_are(h: Harness, n: int) -> bool:
    return await h.effect_count() == n


async def test_trimming_after_a_redis_restart_waits_for_groups_not_back_yet(h: Harness) -> None:
    """After Redis lost its data, the first worker back recreates only its own group; the
    trimmer must still keep every entry for the groups the contracts name."""
    key = stream_key(h.prefix, UserRegistered.STREAM)
    await ensure_group(h.redis, key, "orders")  # the worker that came back first
    entry_ids = [await h.redis.xadd(key, {"envelope": "{}"}) for _ in range(5)]
    await h.redis.xreadgroup("orders", "orders-1", {key: ">"})
    await h.redis.xack(key, "orders", *entry_ids)

    trimmed = await StreamTrimmer(h.redis, [key], settings=h.settings).trim(key)

    assert trimmed == 0
    assert await h.redis.xlen(key) == 5
    groups = {info["name"] for info in await h.redis.xinfo_groups(key)}
    assert groups == {"orders", *groups_reading(UserRegistered.STREAM)}

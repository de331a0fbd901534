"""Lists on a real streaming replica: lagging reads, read-your-writes, the replica down.

A private Postgres primary and its replica (``pg_basebackup -R``) come from the
``postgres_pair`` fixture. Replay on the replica is paused by the tests
(``pg_wal_replay_pause``), which makes "the replica lags" a state the test controls, not a
race it hopes to win.
"""

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from common.auth import create_session
from common.redis import create_redis
from common.replica import wrote_key
from common.testing.cluster import LocalPostgresPair
from common.testing.plugin import asgi_client, migrate
from orders.main import create_app
from orders.settings import Settings

SERVICE_DIR = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

STICK_SECONDS = 0.5


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="module")
async def replica_settings(postgres_pair: LocalPostgresPair, redis_url: str) -> Settings:
    name = f"orders_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_pair.url(), timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')  # replicated like everything else
    finally:
        await admin.close()
    await migrate(SERVICE_DIR, asyncpg_url(postgres_pair.url(name)))
    await replica_caught_up(postgres_pair)
    return Settings(
        service_name=f"orders-replica-{uuid.uuid4().hex[:6]}",
        database_url=asyncpg_url(postgres_pair.url(name)),
        database_replica_url=asyncpg_url(postgres_pair.url(name, replica=True)),
        redis={"url": redis_url},
        replica={"stick_seconds": STICK_SECONDS, "retry_seconds": 0.2},
        rate_limit={"enabled": False},
    )


@pytest.fixture
async def client(replica_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(replica_settings)) as http:
        yield http


async def bearer(settings: Settings, user_id: uuid.UUID | None = None) -> dict[str, str]:
    redis = create_redis(settings)
    try:
        session = await create_session(redis, user_id or uuid.uuid4(), 600)
    finally:
        await redis.aclose()
    return {"Authorization": f"Bearer {session.token}"}


async def marked_as_writer(settings: Settings, user_id: uuid.UUID) -> bool:
    redis = create_redis(settings)
    try:
        return bool(await redis.exists(wrote_key(settings.service_name, user_id)))
    finally:
        await redis.aclose()


async def replica_sql(pair: LocalPostgresPair, statement: str) -> Any:
    connection = await asyncpg.connect(pair.url(replica=True), timeout=10)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


async def replica_caught_up(pair: LocalPostgresPair) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    primary = await asyncpg.connect(pair.url(), timeout=10)
    try:
        lsn = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    finally:
        await primary.close()

    async def replayed() -> bool:
        query = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        return bool(await replica_sql(pair, query))

    await until(replayed)


def reads(target: str, reason: str) -> float:
    labels = {"target": target, "reason": reason}
    return REGISTRY.get_sample_value("db_lagging_reads_total", labels) or 0.0


async def listed(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    response = await client.get("/orders", headers=headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def until(check: Any, *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within} s"


ORDER = {"items": [{"sku": "sku-1", "quantity": 1, "unit_price_cents": 100}]}


async def test_a_writer_reads_its_write_at_once_then_lists_come_from_the_lagging_replica(
    client: httpx.AsyncClient, replica_settings: Settings, postgres_pair: LocalPostgresPair
) -> None:
    alice = await bearer(replica_settings)
    await replica_sql(postgres_pair, "SELECT pg_wal_replay_pause()")
    try:
        primary_reads = reads("primary", "recent_write")
        placed = await client.post("/orders", json=ORDER, headers=alice)
        assert placed.status_code == 202
        order_id = placed.json()["id"]

        # Just written: the list comes from the primary, so the order is in it...
        assert await listed(client, alice) == [order_id]
        assert reads("primary", "recent_write") == primary_reads + 1

        # ...and once the stick is over, from the replica, whose replay is paused.
        replica_reads = reads("replica", "ok")

        async def replica_serves_without_it() -> bool:
            return await listed(client, alice) == []

        await until(replica_serves_without_it, within=STICK_SECONDS * 20)
        assert reads("replica", "ok") > replica_reads
    finally:
        await replica_sql(postgres_pair, "SELECT pg_wal_replay_resume()")

    async def replica_caught_up() -> bool:
        return await listed(client, alice) == [order_id]

    await until(replica_caught_up)


async def test_the_replica_down_sends_lists_to_the_primary(
    client: httpx.AsyncClient, replica_settings: Settings, postgres_pair: LocalPostgresPair
) -> None:
    bob_id = uuid.uuid4()
    bob = await bearer(replica_settings, bob_id)
    placed = await client.post("/orders", json=ORDER, headers=bob)
    order_id = placed.json()["id"]
    fallbacks = REGISTRY.get_sample_value("db_replica_fallbacks_total") or 0.0

    postgres_pair.stop_replica()
    try:
        # Past the stick, every read would go to the replica; it is down, so the primary.
        async def stick_over() -> bool:
            return not await marked_as_writer(replica_settings, bob_id)

        await until(stick_over)
        assert await listed(client, bob) == [order_id]
        assert await listed(client, bob) == [order_id]
        assert (REGISTRY.get_sample_value("db_replica_fallbacks_total") or 0.0) == fallbacks + 1
        assert reads("primary", "replica_down") >= 2
    finally:
        postgres_pair.start_replica()

    async def replica_used_again() -> bool:
        before = reads("replica", "ok")
        return await listed(client, bob) == [order_id] and reads("replica", "ok") > before

    await until(replica_used_again)

"""Bus tests run against the run's real Postgres database and Redis DB.

The library has no migrations of its own: a throwaway schema ``bustest`` gets the outbox,
inbox and a small ``effects`` table (what handlers write, so tests can count effects) with
``create_all``. Every test gets empty tables and its own stream prefix, so streams, groups and
dead letters of one test can never leak into another (or into a service's tests).
"""

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import BigInteger, Column, String, Table, text

from common.bus import Outbox, add_inbox_table, add_outbox_table
from common.bus.inbox import legacy_partition_sql, partitioned
from common.db import Database, create_engine, schema_metadata
from common.partitions import create_default_sql
from common.settings import ServiceSettings

from .harness import Harness, fast_bus_settings

SCHEMA = "bustest"
metadata = schema_metadata(SCHEMA)
outbox = add_outbox_table(metadata)
inbox = add_inbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("key", String(200), nullable=False),
)


@pytest.fixture(scope="session")
async def bus_database(database_url: str, redis_url: str) -> AsyncIterator[Database]:
    database = Database(
        create_engine(ServiceSettings(database_url=database_url, redis={"url": redis_url}))
    )
    async with database.engine.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        await connection.run_sync(metadata.create_all)
        # The inbox is partitioned: the previous release's partition and a default one.
        for statement in [
            *legacy_partition_sql(inbox),
            create_default_sql(partitioned(inbox, retention_days=7)),
        ]:
            await connection.execute(text(statement))
    yield database
    await database.dispose()


@pytest.fixture
async def database(bus_database: Database, redis: Redis, bus_settings: ServiceSettings) -> Database:
    """A Database on the session's engine, with empty bus tables and the test's outbox (not
    running: what is published stays in the table until a test runs or flushes it)."""
    async with bus_database.transaction() as uow:
        await uow.session.execute(
            text(f"TRUNCATE {SCHEMA}.outbox, {SCHEMA}.inbox, {SCHEMA}.effects")
        )
    return Database(bus_database.engine, outbox=Outbox(redis, outbox, settings=bus_settings))


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
def outbox_table() -> Table:
    return outbox


@pytest.fixture
def inbox_table() -> Table:
    return inbox


@pytest.fixture
def effects_table() -> Table:
    return effects


@pytest.fixture
def bus_settings(database_url: str, redis_url: str) -> ServiceSettings:
    """Settings with tiny intervals (the suite must stay fast) and a unique stream prefix."""
    return fast_bus_settings(
        database_url,
        redis={"url": redis_url},
        stream_prefix=f"bustest-{uuid.uuid4().hex[:10]}:",
        outbox={"sweep_interval_seconds": 0.05, "delete_delay_seconds": 0.01, "batch_size": 50},
    )


@pytest.fixture
async def h(
    database: Database,
    redis: Redis,
    redis_url: str,
    outbox_table: Table,
    inbox_table: Table,
    effects_table: Table,
    bus_settings: ServiceSettings,
) -> AsyncIterator[Harness]:
    harness = Harness(
        database, redis, redis_url, outbox_table, inbox_table, effects_table, bus_settings
    )
    yield harness
    await harness.close()

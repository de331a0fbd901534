"""Partition maintenance on real Postgres: ahead, retention, the default partition, the lock."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from common.partition_maintenance import PartitionMaintainer, configured
from common.partitions import (
    DDL_ATTEMPTS,
    PartitionedTable,
    _in_ddl_transaction,
    advisory_key,
    create_default_sql,
    maintain_locked,
    status,
)
from common.settings import ServiceSettings
from common.testing.polling import eventually

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def table(engine: AsyncEngine) -> PartitionedTable:
    """A fresh daily-partitioned table in a schema of its own, with only a default partition."""
    plan = PartitionedTable(
        schema=f"parts_{uuid.uuid4().hex[:8]}",
        name="events",
        column="at",
        interval="day",
        retention_days=7,
        ahead_days=3,
    )
    async with engine.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA {plan.schema}"))
        await connection.execute(
            text(
                f"CREATE TABLE {plan.qualified} (id bigint, at timestamptz NOT NULL, "
                "PRIMARY KEY (id, at)) PARTITION BY RANGE (at)"
            )
        )
        await connection.execute(text(create_default_sql(plan)))
    return plan


async def _names(engine: AsyncEngine, table: PartitionedTable) -> list[str]:
    async with engine.connect() as connection:
        return [p.name for p in (await status(connection, table.schema, table.name)).partitions]


async def test_retention_drops_old_partitions_and_keeps_new_ones(engine, table) -> None:
    # Partitions from 10 days back, created as if maintained back then.
    await maintain_locked(engine, table.schema, [table], now=NOW - timedelta(days=10))
    async with engine.begin() as connection:
        for days in range(10, -1, -1):
            await connection.execute(
                text(f"INSERT INTO {table.qualified} VALUES (:id, :at)"),  # noqa: S608
                {"id": days, "at": NOW - timedelta(days=days)},
            )

        # A late write, long past the retention: no partition, so the default one took it.
        await connection.execute(
            text(f"INSERT INTO {table.qualified} VALUES (99, :at)"),  # noqa: S608
            {"at": NOW - timedelta(days=30)},
        )

    result = await maintain_locked(engine, table.schema, [table], now=NOW)

    names = await _names(engine, table)
    # Dropped: every day whose end is 7 days or more before now (days -10 .. -8).
    assert sorted(result.dropped) == ["events_p20261124", "events_p20261125", "events_p20261126"]
    assert "events_p20261127" in names  # ends less than 7 days ago: kept
    assert {"events_p20261204", "events_p20261205", "events_p20261206", "events_p20261207"} <= set(
        names
    )
    async with engine.connect() as connection:
        kept = (
            await connection.execute(text(f"SELECT id FROM {table.qualified} ORDER BY id"))  # noqa: S608
        ).scalars()
        assert list(kept) == list(range(8))
        table_status = await status(connection, table.schema, table.name, now=NOW)
    assert table_status.default_rows == 0
    assert table_status.ahead_seconds > 3 * 86_400 - 13 * 3600


def _retries() -> float:
    return REGISTRY.get_sample_value("db_partition_ddl_lock_retries_total") or 0.0


async def test_maintenance_behind_a_reader_tries_again_and_gets_through(engine, table) -> None:
    await maintain_locked(engine, table.schema, [table], now=NOW - timedelta(days=10))
    retries_before = _retries()
    async with engine.connect() as reader:
        # A transaction that read the table holds its lock past one lock timeout (100 ms).
        await reader.execute(text(f"SELECT count(*) FROM {table.qualified}"))  # noqa: S608
        maintenance = asyncio.create_task(maintain_locked(engine, table.schema, [table], now=NOW))
        await asyncio.sleep(0.35)
        assert not maintenance.done()
        await reader.rollback()
        result = await asyncio.wait_for(maintenance, timeout=10)
    assert result is not None
    assert len(result.dropped) == 3
    assert _retries() > retries_before


async def test_maintenance_gives_up_when_the_lock_never_comes(engine, table) -> None:
    await maintain_locked(engine, table.schema, [table], now=NOW - timedelta(days=10))
    retries_before = _retries()
    async with engine.connect() as reader:
        await reader.execute(text(f"SELECT count(*) FROM {table.qualified}"))  # noqa: S608
        with pytest.raises(DBAPIError, match="lock timeout"):
            await maintain_locked(engine, table.schema, [table], now=NOW)
        await reader.rollback()
    assert _retries() - retries_before == DDL_ATTEMPTS - 1


async def test_a_write_without_its_partition_lands_in_default_then_moves(engine, table) -> None:
    far = NOW + timedelta(days=5)  # beyond the 3 days ahead
    await maintain_locked(engine, table.schema, [table], now=NOW)
    async with engine.begin() as connection:
        await connection.execute(
            text(f"INSERT INTO {table.qualified} VALUES (1, :at)"),  # noqa: S608
            {"at": far},
        )
        assert (await status(connection, table.schema, table.name)).default_rows == 1

    result = await maintain_locked(engine, table.schema, [table], now=NOW + timedelta(days=3))

    assert result.moved_rows == 1
    async with engine.connect() as connection:
        assert (await status(connection, table.schema, table.name)).default_rows == 0
        where = (
            await connection.execute(
                text(f"SELECT tableoid::regclass::text FROM {table.qualified}")  # noqa: S608
            )
        ).scalar_one()
    assert where == f"{table.schema}.events_p{far:%Y%m%d}"


async def test_one_maintainer_at_a_time(engine, table) -> None:
    async with engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(table.schema)})
        await holder.commit()
        skipped = await maintain_locked(engine, table.schema, [table], now=NOW)
        await holder.execute(
            text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(table.schema)}
        )
        await holder.commit()
    assert skipped.skipped
    assert await _names(engine, table) == ["events_default"]
    done = await maintain_locked(engine, table.schema, [table], now=NOW)
    assert not done.skipped
    assert done.created


async def test_the_workers_maintainer_applies_the_settings_and_reports_metrics(
    engine, table, database_url
) -> None:
    settings = ServiceSettings(
        database_url=database_url,
        partition={
            "intervals": {"events": "month"},
            "retention_days": {"events": 60},
            "ahead_days": 40,
        },
    )
    [planned] = configured([table], settings)
    assert (planned.interval, planned.retention_days, planned.ahead_days) == ("month", 60, 40)

    result = await PartitionMaintainer(engine, [planned]).run()

    assert result is not None
    assert result.created
    assert all(len(name.rsplit("_p", 1)[1]) == 6 for name in result.created)  # monthly names
    ahead = REGISTRY.get_sample_value("db_partition_ahead_seconds", {"table": "events"})
    assert ahead is not None
    assert ahead > 39 * 86_400
    assert REGISTRY.get_sample_value("db_partition_default_rows", {"table": "events"}) == 0


async def _waiting_on_locks(engine: AsyncEngine, pid: int) -> bool:
    async with engine.connect() as connection:
        query = text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted")
        return bool((await connection.execute(query, {"pid": pid})).scalar_one())


async def test_a_ddl_transaction_that_loses_a_deadlock_runs_again(engine, table) -> None:
    """Under load a writer and the retention's DDL can take two locks in opposite orders;
    Postgres aborts one of them. When it is the DDL, the DDL runs again once the writer has
    gone on (it is not left to the next maintenance run)."""
    first, second = f"{table.schema}.first", f"{table.schema}.second"
    async with engine.begin() as connection:
        for name in (first, second):
            await connection.execute(text(f"CREATE TABLE {name} (id int)"))
    errors: list[str] = []
    attempts = 0
    async with engine.connect() as writer:
        await writer.execute(text("SET deadlock_timeout = '10s'"))  # the DDL sees the cycle
        writer_pid = (await writer.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await writer.execute(text(f"LOCK TABLE {second} IN ACCESS SHARE MODE"))

        async def ddl_work(connection: AsyncConnection) -> None:
            nonlocal attempts
            attempts += 1
            await connection.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            await connection.execute(text(f"LOCK TABLE {first} IN ACCESS EXCLUSIVE MODE"))
            if attempts == 1:  # the writer now asks for the lock the DDL holds...
                asking = asyncio.create_task(
                    writer.execute(text(f"LOCK TABLE {first} IN ROW EXCLUSIVE MODE"))
                )
                await eventually(lambda: _waiting_on_locks(engine, writer_pid), timeout=5)
                # ... and the writer commits as soon as it has it
                asking.add_done_callback(lambda _: asyncio.ensure_future(writer.commit()))
            try:  # while the DDL asks for the writer's: a cycle
                await connection.execute(text(f"LOCK TABLE {second} IN ACCESS EXCLUSIVE MODE"))
            except DBAPIError as error:
                errors.append(str(error.orig))
                raise

        async with engine.connect() as ddl:
            retries_before = _retries()
            await asyncio.wait_for(_in_ddl_transaction(ddl, lambda: ddl_work(ddl)), 10)
    assert attempts == 2
    assert len(errors) == 1
    assert "deadlock detected" in errors[0]
    assert _retries() - retries_before == 1

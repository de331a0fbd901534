"""Migration 0005 on a database that holds rows: history partitioned, rows kept, the
previous release's statements still valid, and back down again."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from common.testing.plugin import alembic

from ..conftest import SERVICE_DIR

pytestmark = pytest.mark.integration

MONTHS_AGO = datetime.now(UTC) - timedelta(days=70)


async def _fill(connection: asyncpg.Connection) -> uuid.UUID:
    order_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO orders.orders (id, user_id, status, total_cents, items, created_at) "
        "VALUES ($1, $2, 'APPROVED', 100, '[]', $3)",
        order_id,
        uuid.uuid4(),
        MONTHS_AGO,
    )
    await connection.execute(
        "INSERT INTO orders.sagas (order_id, state, version, correlation_id, created_at) "
        "VALUES ($1, 'settled', 3, 'c', $2)",
        order_id,
        MONTHS_AGO,
    )
    for offset, name in enumerate(("reserve_credit", "notify")):
        await connection.execute(
            "INSERT INTO orders.saga_steps (order_id, name, status, at) VALUES ($1, $2, 'ok', $3)",
            order_id,
            name,
            MONTHS_AGO + timedelta(seconds=offset),
        )
    await connection.execute(
        "INSERT INTO orders.operator_audit (id, at, operator, action, target, outcome, detail) "
        "VALUES ($1, $2, 'alice', 'retry', 'saga', 'ok', $3)",
        uuid.uuid4(),
        MONTHS_AGO,
        json.dumps({}),
    )
    await connection.execute(
        "INSERT INTO orders.inbox (message_id, consumer_group) VALUES ($1, 'orders')", order_id
    )
    return order_id


async def _partitions(connection: asyncpg.Connection, table: str) -> list[str]:
    rows = await connection.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass ORDER BY 1",
        f"orders.{table}",
    )
    return [row["relname"] for row in rows]


async def test_0005_partitions_history_keeping_rows_and_the_previous_release_statements(
    empty_database,
):
    plain_url, url = empty_database
    await alembic(SERVICE_DIR, url, "upgrade", "0003")
    connection = await asyncpg.connect(plain_url, timeout=10)
    try:
        order_id = await _fill(connection)
        await alembic(SERVICE_DIR, url, "upgrade", "0005")

        steps = await connection.fetch(
            "SELECT id, name, at FROM orders.saga_steps WHERE order_id = $1 ORDER BY id", order_id
        )
        assert [s["name"] for s in steps] == ["reserve_credit", "notify"]
        step_partitions = await _partitions(connection, "saga_steps")
        assert f"saga_steps_p{MONTHS_AGO:%Y%m}" in step_partitions  # from the oldest row on
        assert "saga_steps_default" in step_partitions
        assert await connection.fetchval("SELECT count(*) FROM orders.operator_audit") == 1
        assert "inbox_legacy" in await _partitions(connection, "inbox")

        # The previous release's statements: a step without its partition key, its ids
        # continuing after the copied ones; its inbox INSERT still deduplicates.
        new_id = await connection.fetchval(
            "INSERT INTO orders.saga_steps (order_id, name, status) VALUES ($1, 'x', 'ok') "
            "RETURNING id",
            order_id,
        )
        assert new_id > max(s["id"] for s in steps)
        old_inbox = (
            "INSERT INTO orders.inbox (message_id, consumer_group) VALUES ($1, 'orders') "
            "ON CONFLICT DO NOTHING RETURNING message_id"
        )
        assert await connection.fetchval(old_inbox, order_id) is None  # migrated: a duplicate
        fresh = uuid.uuid4()
        assert await connection.fetchval(old_inbox, fresh) == fresh
        assert await connection.fetchval(old_inbox, fresh) is None

        await alembic(SERVICE_DIR, url, "downgrade", "0003")
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM orders.saga_steps WHERE order_id = $1", order_id
            )
            == 3
        )
        assert (
            await connection.fetchval(
                "SELECT relkind::text FROM pg_class WHERE oid = 'orders.saga_steps'::regclass"
            )
            == "r"
        )
        assert await connection.fetchval("SELECT count(*) FROM orders.inbox") == 2
    finally:
        await connection.close()

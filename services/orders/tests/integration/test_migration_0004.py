"""Migration 0004 (saga definition versions) under the previous release's rows and inserts,
and back down to 0003."""

import uuid
from pathlib import Path

import asyncpg
import pytest

from common.testing.plugin import alembic

pytestmark = pytest.mark.integration

SERVICE_DIR = Path(__file__).resolve().parents[2]

# The previous release's inserts, which name no definition version.
INSERT_ORDER = """
    INSERT INTO orders.orders (id, user_id, status, total_cents, items)
    VALUES ($1, $2, 'PENDING', 500, '[{"sku": "a", "quantity": 1, "unit_price_cents": 500}]')
"""
INSERT_SAGA = """
    INSERT INTO orders.sagas (order_id, state, version, attempt, deadline_at, correlation_id)
    VALUES ($1, $2, 1, 0, now() + interval '30 seconds', 'c')
"""


async def place(connection: asyncpg.Connection, state: str = "awaiting_credit") -> uuid.UUID:
    order_id = uuid.uuid4()
    await connection.execute(INSERT_ORDER, order_id, uuid.uuid4())
    await connection.execute(INSERT_SAGA, order_id, state)
    return order_id


async def test_0004_makes_old_sagas_version_1_and_downgrades_stock_checks_to_compensation(
    empty_database: tuple[str, str],
):
    plain_url, url = empty_database
    await alembic(SERVICE_DIR, url, "upgrade", "0003")
    connection = await asyncpg.connect(plain_url, timeout=10)
    try:
        before = await place(connection)
        await alembic(SERVICE_DIR, url, "upgrade", "0004")
        after = await place(connection)  # the previous release, still running on 0004
        versions = await connection.fetch(
            "SELECT definition_version FROM orders.sagas WHERE order_id = ANY($1)",
            [before, after],
        )
        assert [row["definition_version"] for row in versions] == [1, 1]

        checking = await place(connection, "awaiting_stock")  # a version 2 saga
        await alembic(SERVICE_DIR, url, "downgrade", "0003")
        row = await connection.fetchrow(
            "SELECT o.status, o.rejection_reason, s.state FROM orders.orders o "
            "JOIN orders.sagas s ON s.order_id = o.id WHERE o.id = $1",
            checking,
        )
        assert row is not None
        # The previous release finishes it: release the credit, then announce the rejection.
        assert dict(row) == {
            "status": "REJECTED",
            "rejection_reason": "timeout",
            "state": "compensating",
        }
        columns = await connection.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'orders' AND table_name = 'sagas'"
        )
        assert "definition_version" not in {c["column_name"] for c in columns}
        with pytest.raises(asyncpg.CheckViolationError):
            await place(connection, "awaiting_stock")
    finally:
        await connection.close()

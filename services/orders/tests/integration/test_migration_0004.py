"""Migration 0004 (saga definition versions) under the previous release's rows and inserts,
and back down to 0003."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config

from common.testing.plugin import throwaway_database

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


@pytest.fixture
async def empty_database() -> AsyncIterator[tuple[str, str]]:
    """A database of its own (asyncpg URL, SQLAlchemy URL): this test migrates up and down."""
    async with throwaway_database() as url:
        yield url.replace("postgresql+asyncpg://", "postgresql://", 1), url


async def alembic(sqlalchemy_url: str, verb: str, revision: str) -> None:
    config = Config(str(SERVICE_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(SERVICE_DIR / "migrations"))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url)
    await asyncio.to_thread(getattr(command, verb), config, revision)


async def place(connection: asyncpg.Connection, state: str = "awaiting_credit") -> uuid.UUID:
    order_id = uuid.uuid4()
    await connection.execute(INSERT_ORDER, order_id, uuid.uuid4())
    await connection.execute(INSERT_SAGA, order_id, state)
    return order_id


async def test_0004_makes_old_sagas_version_1_and_downgrades_stock_checks_to_compensation(
    empty_database: tuple[str, str],
):
    plain_url, url = empty_database
    await alembic(url, "upgrade", "0003")
    connection = await asyncpg.connect(plain_url, timeout=10)
    try:
        before = await place(connection)
        await alembic(url, "upgrade", "0004")
        after = await place(connection)  # the previous release, still running on 0004
        versions = await connection.fetch(
            "SELECT definition_version FROM orders.sagas WHERE order_id = ANY($1)",
            [before, after],
        )
        assert [row["definition_version"] for row in versions] == [1, 1]

        checking = await place(connection, "awaiting_stock")  # a version 2 saga
        await alembic(url, "downgrade", "0003")
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

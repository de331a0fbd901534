"""Orders tests run against a real Postgres database made for this run."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.bus import bind_outbox
from common.db import Database, create_engine
from common.testing.plugin import migrate
from orders.models import outbox
from orders.settings import Settings

SERVICE_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
async def orders_settings(database_url: str, redis_url: str) -> Settings:
    await migrate(SERVICE_DIR, database_url)
    return Settings(database_url=database_url, redis_url=redis_url)


@pytest.fixture(scope="session")
async def orders_db(orders_settings: Settings) -> AsyncIterator[Database]:
    """A Database whose units of work write the orders outbox (no relay: rows stay)."""
    database = Database(create_engine(orders_settings))
    bind_outbox(database, outbox, source="orders", stream_prefix="test:")
    yield database
    await database.dispose()

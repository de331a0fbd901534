"""Orders tests run against a real Postgres database made for this run."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.bus import Outbox
from common.db import Database, create_engine
from common.redis import create_redis
from common.testing.plugin import migrate
from orders.models import outbox
from orders.settings import Settings

SERVICE_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
async def orders_settings(database_url: str, redis_url: str) -> Settings:
    await migrate(SERVICE_DIR, database_url)
    return Settings(database_url=database_url, redis={"url": redis_url})


@pytest.fixture(scope="session")
async def orders_db(orders_settings: Settings) -> AsyncIterator[Database]:
    """A Database whose units of work write the orders outbox (not running: rows stay)."""
    redis = create_redis(orders_settings)
    database = Database(
        create_engine(orders_settings), outbox=Outbox(redis, outbox, settings=orders_settings)
    )
    yield database
    await database.dispose()
    await redis.aclose()

"""Users tests run against a real Postgres database and Redis DB made for this run, and again
on a private Redis Cluster (``redis_target``)."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from common.testing.plugin import RedisTarget, asgi_client, migrate
from users.main import create_app
from users.settings import Settings

SERVICE_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
async def users_settings(redis_target: RedisTarget) -> Settings:
    """Once on a single Redis, once on a Redis Cluster (``redis_target``)."""
    await migrate(SERVICE_DIR, redis_target.database_url)
    # Cheap Argon2 parameters keep the suite fast; production defaults are in Settings.
    return Settings(
        database_url=redis_target.database_url,
        **redis_target.settings(),
        argon2_time_cost=1,
        argon2_memory_kib=64,
    )


@pytest.fixture(scope="session")
async def users_client(users_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(users_settings)) as client:
        yield client

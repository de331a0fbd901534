"""Users tests run against a real Postgres database and Redis DB made for this run, and again
on a private Redis Cluster (``redis_target``)."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from common.bus import Outbox
from common.db import Database, create_engine
from common.redis import create_redis
from common.settings import with_changes
from common.testing.plugin import RedisTarget, asgi_client, migrate
from users.main import create_app
from users.models import User, outbox
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
        argon2={"time_cost": 1, "memory_kib": 64},
    )


@pytest.fixture(scope="session")
async def users_client(users_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(users_settings)) as client:
        yield client


@dataclass(frozen=True)
class WorkerClients:
    """What the users worker's handlers get: a Database with the users outbox (not running
    here: published rows stay in the table), and Redis."""

    database: Database
    redis: Redis


@pytest.fixture
async def worker(users_settings: Settings) -> AsyncIterator[WorkerClients]:
    redis = create_redis(users_settings)
    database = Database(
        # A pool big enough for the concurrency tests.
        create_engine(with_changes(users_settings, db={"pool_size": 20})),
        outbox=Outbox(redis, outbox, settings=users_settings),
    )
    yield WorkerClients(database, redis)
    await database.dispose()
    await redis.aclose()


async def insert_user(database: Database, *, credit_limit_cents: int = 0) -> uuid.UUID:
    """A user row as registration leaves it (no password anyone could use)."""
    user_id = uuid.uuid4()
    async with database.transaction() as uow:
        uow.session.add(
            User(
                id=user_id,
                email=f"{user_id}@example.com",
                name="Test",
                password_hash="-",
                credit_limit_cents=credit_limit_cents,
            )
        )
    return user_id

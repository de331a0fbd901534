"""Fixtures shared by common's own tests (the bus tests have theirs in bus/conftest.py)."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from common.redis import create_redis
from common.settings import ServiceSettings
from common.testing.plugin import RedisTarget


@pytest.fixture
async def redis(redis_target: RedisTarget) -> AsyncIterator[Redis]:
    """A client of this pass's Redis: the single server, then the Redis Cluster."""
    settings = ServiceSettings(
        service_name="common-tests",
        database_url=redis_target.database_url,
        **redis_target.settings(),
    )
    client = create_redis(settings)
    try:
        yield client
    finally:
        await client.aclose()
